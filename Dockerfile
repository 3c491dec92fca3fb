# The collector as a container: a sidecar beside an agent by default, a central service with
# a tokens file. `make image` builds it here; `docker build .` anywhere else.
#
# BASE_IMAGE: any image with python3 (3.11 or newer) and its venv module, for both stages:
# the official slim Python image by default, Debian bookworm's own python3 and python3-venv
# too (the tests build on such a base, made with debootstrap).
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
# wheels/ in the build context (what `make image` puts there: this package and every
# dependency, built on the host) is installed without an index; without it, from PyPI, or
# the mirror these name (--build-arg PIP_INDEX_URL=https://mirror/simple).
ARG PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_NO_INDEX PIP_TRUSTED_HOST
COPY . /src
RUN python3 -m venv /opt/collector \
 && if ls /src/wheels/*.whl >/dev/null 2>&1; then \
      /opt/collector/bin/pip install --no-cache-dir --no-index --find-links /src/wheels \
        otlp-delta-collector; \
    else \
      /opt/collector/bin/pip install --no-cache-dir /src; \
    fi \
 && /opt/collector/bin/pip uninstall --yes pip \
 && find /opt/collector -name __pycache__ -prune -exec rm -rf {} +

FROM ${BASE_IMAGE}
COPY --from=build /opt/collector /opt/collector
# A fixed uid/gid, so that a volume's ownership can be set before the first start
# (Kubernetes: fsGroup 10001).
RUN (getent group 10001 >/dev/null || groupadd --gid 10001 collector) \
 && (getent passwd 10001 >/dev/null || useradd --uid 10001 --gid 10001 --no-create-home \
      --home-dir /data --shell /usr/sbin/nologin collector) \
 && mkdir -p /data/wal /data/warehouse && chown -R 10001:10001 /data
# Every setting is a COLLECTOR_* variable. The listeners stay on loopback: agents in the same
# pod reach a sidecar on localhost, and nothing else can write without a token. To serve
# other hosts, give a tokens file and COLLECTOR_HTTP=0.0.0.0:4318 COLLECTOR_GRPC=0.0.0.0:4317.
ENV PATH=/opt/collector/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    COLLECTOR_HTTP=127.0.0.1:4318 \
    COLLECTOR_GRPC=127.0.0.1:4317 \
    COLLECTOR_WAREHOUSE=/data/warehouse \
    COLLECTOR_WAL_DIR=/data/wal \
    COLLECTOR_LOG_FORMAT=json
VOLUME /data
WORKDIR /data
EXPOSE 4317 4318
USER 10001:10001
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["otlp-delta-collector", "health"]
ENTRYPOINT ["otlp-delta-collector"]
CMD ["serve"]
