#!/bin/sh
# Installs mcsync into /opt/mcsync and adds its user: the one recipe of the mcsync image, run
# by the Dockerfile (on its pinned python:3.11 slim base) and by the local image build
# (engine/local/scripts/build-control-plane.sh mcsync-image, in a Debian root filesystem with
# chroot). It needs python3 (3.11) with venv, and PyPI; run it as root in a directory holding
# what the phase installs from:
#
#   install.sh deps      pyproject.toml, uv.lock, README.md: every dependency, and the user
#   install.sh project   those and engine, publishers, subscribers, deploy/crds: mcsync itself
#
# Two phases, so that an image layer with the dependencies is reused until the lock changes.
# Every dependency at the version and hash uv.lock pins; the project itself as a regular (not
# editable) install; no development tools, no nats-server (the `local` extra). uv comes from
# PyPI into a throwaway virtualenv and is removed afterwards. The caller removes the sources
# (never run this in a checkout you keep: it installs into /opt and adds a user).
set -eu

UV_VERSION=0.13.8
python=$(command -v python3)
phase=${1:?usage: install.sh deps|project}

sync() {
  "$python" -m venv /tmp/uv-tool
  /tmp/uv-tool/bin/pip install --no-cache-dir --disable-pip-version-check --quiet "uv==$UV_VERSION"
  UV_PROJECT_ENVIRONMENT=/opt/mcsync UV_NO_CACHE=1 UV_PYTHON_DOWNLOADS=never \
    /tmp/uv-tool/bin/uv sync --frozen --no-dev --no-editable --python "$python" "$@"
  rm -rf /tmp/uv-tool
}

compile_site() {
  # Bytecode: `compile_site -x REGEX` for every installed package but the paths REGEX matches,
  # `compile_site PACKAGE...` for those packages.
  site=$(/opt/mcsync/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  if [ "${1:-}" = -x ]; then
    exclude=$2
    shift 2
    /opt/mcsync/bin/python -m compileall -q -x "$exclude" "$site"
    return
  fi
  for package in "$@"; do
    /opt/mcsync/bin/python -m compileall -q "$site/$package"
  done
}

case "$phase" in
  deps)
    sync --no-install-project
    # Bytecode, compiled here: the image's user cannot write it, so without it every start
    # compiles each module again (about 0.1 s of CPU for a publisher or subscriber). Not the
    # generated API and models of kubernetes_asyncio (20 MB of bytecode), which mcsync never
    # imports.
    compile_site -x 'kubernetes_asyncio/client/(api|models)/'
    groupadd --system --gid 10001 mcsync
    useradd --system --uid 10001 --gid mcsync --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin mcsync
    ;;
  project)
    sync
    # Only mcsync's own packages: the dependencies' bytecode is in the layer below.
    compile_site engine publishers subscribers
    /opt/mcsync/bin/mcsync --help >/dev/null
    ;;
  *)
    echo "usage: install.sh deps|project" >&2
    exit 2
    ;;
esac
