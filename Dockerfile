# The mcsync image: `mcsync publisher`, `mcsync subscriber`, `mcsync status` and the other
# commands, installed exactly as pinned by uv.lock (no nats-server: run NATS from its own image).
#
#   docker build -t mcsync:0.1.0 .
#   docker build --build-arg BASE=python:3.11-slim@sha256:<digest> -t mcsync:0.1.0 .
#
# Pin BASE by digest for reproducible images: the digest of the base you tested, from your
# registry. Push the image to a registry your clusters can pull from and set it in the manifests.
ARG BASE=python:3.11-slim
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
