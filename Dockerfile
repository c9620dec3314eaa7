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
    PATH=/opt/mcsync/bin:$PATH

WORKDIR /src
# The install script, which the local image build (engine/local/scripts/build-control-plane.sh
# mcsync-image) runs too, so that both images are made by the same steps: first the
# dependencies from the lock (a layer reused until the lock changes), then mcsync itself from
# only what the wheel is built from (the CRDs are packaged into it).
COPY pyproject.toml uv.lock README.md ./
COPY deploy/image/install.sh ./deploy/image/install.sh
RUN sh deploy/image/install.sh deps
COPY engine ./engine
COPY publishers ./publishers
COPY subscribers ./subscribers
COPY deploy/crds ./deploy/crds
RUN sh deploy/image/install.sh project && cd / && rm -rf /src

# Numeric, so that runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /
EXPOSE 8080
ENTRYPOINT ["mcsync"]
CMD ["--help"]
