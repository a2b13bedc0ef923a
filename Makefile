# creditnet — every target sets up what it needs. Only Python 3.11 is required on the machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.creditnet-installed

.PHONY: all setup test test-ops lint typecheck devnet sim bench bench-micro clean

all: test

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	@touch $(STAMP)

setup: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The operations kit: promtool checks, a real Prometheus scraping a 4-node cluster, deployment
# files. Installs Debian's prometheus package (apt-get, as root) if promtool is missing.
test-ops: $(STAMP)
	$(BIN)/python -m pytest -q -m ops tests/ops $(PYTEST_ARGS)

devnet: $(STAMP)
	$(BIN)/creditnet devnet --nodes $(or $(NODES),4) --dir $(or $(DIR),devnet)

sim: $(STAMP)
	$(BIN)/python -m bench.simulate_many --seeds $(or $(SEEDS),10000) --nodes 4,7

bench: $(STAMP)
	$(BIN)/python -m bench.run --nodes $(or $(NODES),4) --workload $(or $(WORKLOAD),mixed) --duration $(or $(DURATION),60)

bench-micro: $(STAMP)
	$(BIN)/python -m bench.codec
	$(BIN)/python -m bench.storage
	$(BIN)/python -m bench.replica
	$(BIN)/python -m bench.lookup
	$(BIN)/python -m bench.instructions

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
