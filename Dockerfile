# syntax=docker/dockerfile:1
# Lifelong's one image: the operator (`lifelong operator`) and every stage (`lifelong trainer ...`).
#
#   docker build -t lifelong:0.1.0 .                            # CPU: torch from its CPU index
#   docker build --build-arg VARIANT=gpu -t lifelong:0.1.0-gpu . # GPU: PyPI's CUDA torch wheels
#
# Both stages use one base, pinned to an exact Python patch release on an exact Debian release
# (release builds add its digest, `python:3.11.14-slim-bookworm@sha256:...`, in both places).
# tests/deploy/test_image.py runs the same wheel build and install steps without a Docker engine.
#
# checkov:skip=CKV_DOCKER_2: no HEALTHCHECK: the image runs the operator, long-lived serving and
# batch stages, each probed by Kubernetes on its own endpoint (the chart's and the operator's
# probes); Docker's HEALTHCHECK is ignored by Kubernetes.

# --- builder: build Lifelong's wheel and install it with its dependencies into a venv --------
FROM python:3.11.14-slim-bookworm AS builder
ARG VARIANT=cpu
ARG TORCH_VERSION=2.15.0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/lifelong

# torch first, from the index that matches the variant; the project's install then keeps it.
RUN case "$VARIANT" in \
      cpu) /opt/lifelong/bin/pip install --no-cache-dir \
             --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}" ;; \
      gpu) /opt/lifelong/bin/pip install --no-cache-dir "torch==${TORCH_VERSION}" ;; \
      *) echo "VARIANT must be cpu or gpu, got '$VARIANT'" >&2; exit 2 ;; \
    esac

# lifelong/operator and lifelong/trainers are links to operator/ and trainers/: copy all three.
# The s3 and gcs extras bring fsspec's object-store protocols, for s3:// and gs:// data and
# artifact stores.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY lifelong/ lifelong/
COPY operator/ operator/
COPY trainers/ trainers/
RUN /opt/lifelong/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && wheel=$(ls /wheels/lifelong-*.whl) \
 && /opt/lifelong/bin/pip install --no-cache-dir "${wheel}[s3,gcs]" \
 && /opt/lifelong/bin/lifelong --version \
 && /opt/lifelong/bin/python -m pip uninstall --yes pip

# --- runtime: the venv on a clean base, no compilers, no wheel builds, a non-root user -------
FROM python:3.11.14-slim-bookworm
ARG VARIANT=cpu
LABEL org.opencontainers.image.title="lifelong" \
      org.opencontainers.image.description="Lifelong: autonomous continual learning on Kubernetes (${VARIANT})" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/lifelong-dev/lifelong" \
      org.opencontainers.image.version="0.1.0"

# uid and gid 65532, as the chart's and the operator's pod security contexts expect.
RUN groupadd --system --gid 65532 lifelong \
 && useradd --system --uid 65532 --gid 65532 --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin lifelong
COPY --from=builder /opt/lifelong /opt/lifelong

# The root filesystem is read-only in pods: Python writes no bytecode, HOME is the /tmp volume.
ENV PATH=/opt/lifelong/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
WORKDIR /tmp
USER 65532:65532
ENTRYPOINT ["lifelong"]
CMD ["--help"]
