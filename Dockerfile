# The mcsync image: `mcsync publisher`, `mcsync subscriber`, `mcsync status` and the other
# commands, installed exactly as pinned by uv.lock (no nats-server: run NATS from its own image).
#
#   docker build -t mcsync:0.1.0 .
#   docker build --build-arg BASE=python:3.11-slim-bookworm@sha256:<digest> -t mcsync:0.1.0 .
#
# BASE is pinned by digest, so that a rebuild starts from the same base: the official image
# python:3.11.17-slim-bookworm (Python 3.11.17, Debian 12), its multi-platform index as published
# in October 2026 (docs/deploy.md, "The image"). A digest never receives fixes: bump it
# deliberately (`docker buildx imagetools inspect python:3.11-slim-bookworm` gives the current
# one) or pass the base you tested, from your registry. Push the image to a registry your
# clusters can pull from and set it in the manifests.
ARG BASE=python:3.11.17-slim-bookworm@sha256:0a310eeecf4e1f5a0743f9a6520c90c88d089c903ca5fd283f501e3a805f5f89
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_PROJECT_ENVIRONMENT=/opt/mcsync \
    UV_NO_CACHE=1 \
    PATH=/opt/mcsync/bin:$PATH

WORKDIR /src
# Only what the wheel is built from (the CRDs are packaged into it), and the lock.
COPY pyproject.toml uv.lock README.md ./
COPY engine ./engine
COPY publishers ./publishers
COPY subscribers ./subscribers
COPY deploy/crds ./deploy/crds
# Every dependency at the version and hash uv.lock pins; the project itself as a regular (not
# editable) install; no development tools, no nats-server (the `local` extra).
RUN pip install "uv==0.13.8" \
    && uv sync --frozen --no-dev --no-editable \
    && pip uninstall -y uv \
    && cd / \
    && rm -rf /src \
    && groupadd --system --gid 10001 mcsync \
    && useradd --system --uid 10001 --gid mcsync --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin mcsync

# Numeric, so that runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /
EXPOSE 8080
ENTRYPOINT ["mcsync"]
CMD ["--help"]
