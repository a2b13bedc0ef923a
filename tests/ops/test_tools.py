"""The ops tests' own helpers: installing missing tools through a stand-in apt-get (never the
real one), and reading metric and label names out of PromQL."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.ops.tools import (
    ToolInstallError,
    ensure_debian_tools,
    promql_label_names,
    promql_metric_names,
)

pytestmark = [pytest.mark.ops]

INSTALL = "install -y --no-install-recommends prometheus"


def fake_apt(bin_dir: Path, behaviour: str) -> Path:
    """An ``apt-get`` in ``bin_dir`` that logs its arguments to the returned file. ``install``
    works (creating stand-in promtool and prometheus in ``bin_dir``) always ("works"), only once
    ``update`` ran ("after-update"), or never ("broken")."""
    log = bin_dir / "apt.log"
    install_ok = {
        "works": "true",
        "after-update": f"test -f {bin_dir}/updated",
        "broken": "false",
    }[behaviour]
    apt = bin_dir / "apt-get"
    apt.write_text(
        f"""#!/bin/sh
echo "$*" >> {log}
if [ "$1" = update ]; then : > {bin_dir}/updated; exit 0; fi
if [ "$1" = install ] && {install_ok}; then
  for t in promtool prometheus; do echo '#!/bin/sh' > {bin_dir}/$t; /bin/chmod +x {bin_dir}/$t; done
  exit 0
fi
echo 'E: Package prometheus has no installation candidate'
exit 100
"""
    )
    apt.chmod(apt.stat().st_mode | stat.S_IXUSR)
    return log


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty directory as the whole PATH (so the real tools are not found)."""
    path = tmp_path / "bin"
    path.mkdir()
    monkeypatch.setenv("PATH", str(path))
    return path


def test_missing_tools_are_installed_retrying_after_apt_get_update(bin_dir: Path) -> None:
    log = fake_apt(bin_dir, "after-update")
    paths = ensure_debian_tools(["promtool", "prometheus"], "prometheus")
    assert paths == {t: str(bin_dir / t) for t in ("promtool", "prometheus")}
    assert log.read_text().splitlines() == [INSTALL, "update", INSTALL]


def test_a_first_install_that_works_needs_no_update(bin_dir: Path) -> None:
    log = fake_apt(bin_dir, "works")
    ensure_debian_tools(["promtool", "prometheus"], "prometheus")
    assert log.read_text().splitlines() == [INSTALL]


def test_tools_already_on_path_are_not_installed(bin_dir: Path) -> None:
    log = fake_apt(bin_dir, "works")
    for tool in ("promtool", "prometheus"):
        (bin_dir / tool).write_text("#!/bin/sh\n")
        os.chmod(bin_dir / tool, 0o755)
    ensure_debian_tools(["promtool", "prometheus"], "prometheus")
    assert not log.exists()


def test_a_package_that_cannot_be_installed_is_an_error_that_says_why(bin_dir: Path) -> None:
    fake_apt(bin_dir, "broken")
    with pytest.raises(ToolInstallError, match="cannot install Debian package prometheus") as err:
        ensure_debian_tools(["promtool", "prometheus"], "prometheus")
    assert "no installation candidate" in str(err.value)


def test_no_apt_get_is_an_error_that_says_so(bin_dir: Path) -> None:
    with pytest.raises(ToolInstallError, match="apt-get not found"):
        ensure_debian_tools(["promtool"], "prometheus")


def test_promql_names_skip_functions_keywords_labels_numbers_and_variables() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (job, le) (rate(creditnet_storage_commit_seconds_bucket"
        '{agency=~"$agency", status!="5.."}[$__rate_interval]))) > 1e3 and on (job) up offset 5m'
        " / ignoring(kind) group_left(reason) creditnet_consensus_peers"
    )
    assert promql_metric_names(expr) == {
        "creditnet_storage_commit_seconds_bucket",
        "up",
        "creditnet_consensus_peers",
    }
    assert promql_label_names(expr) == {"job", "le", "agency", "status", "kind", "reason"}
    assert promql_metric_names('label_values(creditnet_consensus_height, "agency")') == {
        "creditnet_consensus_height"
    }
