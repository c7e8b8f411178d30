# imagegate's own image: a wheel built in a builder stage, installed into a virtualenv made by
# the runtime image's own Python, copied into a clean runtime stage that runs as 65532:65532.
#
# Base images are build arguments. The documented defaults are the official Docker Hub images
#   BUILDER_IMAGE=python:3.12-slim   builds the wheel (pip + PEP 517 build backend from PyPI)
#   RUNTIME_IMAGE=python:3.12-slim   runs it
# because python:*-slim is Debian bookworm with a current CPython, security updates and
# multi-arch (amd64 + arm64) builds, ~45 MB compressed, and it is on the default policy's
# approved list (docker.io/library/python:*-slim*), so imagegate passes its own checks.
# Where nothing can be pulled, hack/make-base-images.sh makes imagegate-local/python:3.11-slim
# (debootstrap bookworm + python3, python3-venv) and the tests build on that:
#
#   docker build -t imagegate:0.1.0 .
#   docker build --build-arg BUILDER_IMAGE=imagegate-local/python:3.11-slim \
#                --build-arg RUNTIME_IMAGE=imagegate-local/python:3.11-slim \
#                --build-arg VERSION=0.1.0 -t imagegate:0.1.0 .
#
# Requirements on the bases: BUILDER_IMAGE has `python3 -m venv` (with ensurepip); RUNTIME_IMAGE
# has `python3 -m venv` and the Python the package supports (>= 3.11). The venv is created by the
# runtime image itself, so the interpreter path inside it always exists at run time.
# Works with the classic builder and BuildKit (no RUN --mount needed).
#
# Behind a TLS-intercepting proxy or with a private index, pass (build stages only; neither
# reaches the final image, whose history has only the runtime stage):
#   --build-arg BUILD_CA_CERTS="$(cat /usr/local/share/ca-certificates/*.crt)"   extra PEM CAs
#   --build-arg PIP_INDEX_URL=https://pypi.example/simple                         another index

ARG BUILDER_IMAGE=python:3.12-slim
ARG RUNTIME_IMAGE=python:3.12-slim

# --- 1. builder: the wheel ------------------------------------------------------------------
FROM ${BUILDER_IMAGE} AS builder
ARG BUILD_CA_CERTS=""
ARG PIP_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY webhook ./webhook
RUN set -e; if [ -n "$BUILD_CA_CERTS" ]; then \
        cat /etc/ssl/certs/ca-certificates.crt > /tmp/ca.pem 2>/dev/null || true; \
        printf '%s\n' "$BUILD_CA_CERTS" >> /tmp/ca.pem; export PIP_CERT=/tmp/ca.pem; fi; \
    [ -n "$PIP_INDEX_URL" ] || unset PIP_INDEX_URL; \
    python3 -m venv /opt/build \
    && /opt/build/bin/pip wheel --no-deps --wheel-dir /wheels . \
    && rm -rf /opt/build /tmp/ca.pem

# --- 2. venv: the wheel and its dependencies, installed by the runtime image's Python -------
FROM ${RUNTIME_IMAGE} AS venv
ARG BUILD_CA_CERTS=""
ARG PIP_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
COPY --from=builder /wheels /wheels
RUN set -e; if [ -n "$BUILD_CA_CERTS" ]; then \
        cat /etc/ssl/certs/ca-certificates.crt > /tmp/ca.pem 2>/dev/null || true; \
        printf '%s\n' "$BUILD_CA_CERTS" >> /tmp/ca.pem; export PIP_CERT=/tmp/ca.pem; fi; \
    [ -n "$PIP_INDEX_URL" ] || unset PIP_INDEX_URL; \
    python3 -m venv /opt/imagegate \
    && /opt/imagegate/bin/pip install --no-compile /wheels/*.whl \
    && /opt/imagegate/bin/python -m pip uninstall -q -y pip setuptools wheel \
    && rm -rf /tmp/ca.pem /wheels
# Byte-compile once here: the root file system is read-only at run time.
RUN /opt/imagegate/bin/python -m compileall -q -j 0 /opt/imagegate >/dev/null \
    && rm -rf /opt/imagegate/bin/pip* /opt/imagegate/bin/activate* /opt/imagegate/bin/Activate.ps1

# --- 3. runtime ----------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE}
ARG RUNTIME_IMAGE
ARG RUNTIME_DIGEST=""
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=""
LABEL org.opencontainers.image.title="imagegate" \
      org.opencontainers.image.description="Kubernetes admission webhook and operator that gate container images" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="${RUNTIME_IMAGE}" \
      org.opencontainers.image.base.digest="${RUNTIME_DIGEST}"
COPY --from=venv /opt/imagegate /opt/imagegate
# A passwd/group entry for 65532 (`nonroot`, as distroless names it): without one,
# getpwuid(65532) fails and so does everything that asks who the process is, e.g. kopf's
# peering (getpass.getuser() -> KeyError: 'getpwuid(): uid not found: 65532'). USER stays
# numeric below, which is what the kubelet's runAsNonRoot needs. Added only when missing.
RUN grep -q '^[^:]*:[^:]*:65532:' /etc/group \
        || echo 'nonroot:x:65532:' >> /etc/group; \
    grep -q '^[^:]*:[^:]*:65532:' /etc/passwd \
        || echo 'nonroot:x:65532:65532:nonroot:/tmp:/usr/sbin/nologin' >> /etc/passwd
ENV PATH=/opt/imagegate/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 65532:65532
EXPOSE 8443 8080
ENTRYPOINT ["/opt/imagegate/bin/imagegate"]
CMD ["--help"]
