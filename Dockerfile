# syntax=docker/dockerfile:1
# creditnet node image: `creditnet` installed from pyproject.toml with every dependency pinned by
# config/constraints.txt, run as the unprivileged user creditnet (uid 10001) with its home, data
# and keys under /var/lib/creditnet (mount a volume there).
#
#   docker build -t creditnet .
#   docker run --rm creditnet --version
#   docker run -v /srv/creditnet:/var/lib/creditnet creditnet            # creditnet run --home ...
#
# config/compose.yaml builds this image and runs a 4-agency network with it. The build context is
# the repository root; .dockerignore keeps virtualenvs, test networks and caches out of it.

FROM python:3.11-slim AS build
# fastecdsa (a libp2p dependency) has no wheel: it is compiled here, against GMP.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev libgmp-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY config/constraints.txt config/constraints.txt
COPY protocol protocol
COPY node node
COPY bench bench
RUN python -m venv /opt/creditnet \
 && /opt/creditnet/bin/pip install --no-cache-dir --disable-pip-version-check \
      -c config/constraints.txt . \
 && /opt/creditnet/bin/creditnet --version

FROM python:3.11-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgmp10 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 creditnet \
 && useradd --system --uid 10001 --gid creditnet --home-dir /var/lib/creditnet \
      --no-create-home --shell /usr/sbin/nologin creditnet \
 && install -d -o creditnet -g creditnet -m 0700 /var/lib/creditnet
COPY --from=build /opt/creditnet /opt/creditnet
ENV PATH=/opt/creditnet/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER creditnet:creditnet
WORKDIR /var/lib/creditnet
# p2p (open to the other agencies), HTTP API and metrics (internal only): the testnet layout.
EXPOSE 26600 26601 26602
# The node stops cleanly within 5 s of SIGTERM (docker stop waits 10 s before SIGKILL).
STOPSIGNAL SIGTERM
ENTRYPOINT ["creditnet"]
CMD ["run", "--home", "/var/lib/creditnet"]
