"""Container images made here, without any registry: one Debian root filesystem, several names.

The build script makes a minimal Debian root filesystem with mmdebstrap (from Debian's own
packages: a shell, nc, nslookup, socat, ip, curl). This module wraps that tar, unchanged, as the
one layer of OCI images, writes them as an OCI image-layout archive, and imports the archive into
a node's containerd, where the CRI sees it in the ``k8s.io`` namespace.

The images carry the names that upstream manifests use, so that those run unchanged on a local
node: the Multi-Cluster Services conformance suite's client (``nicolaka/netshoot``) and server
(``alpine/socat``), and the pod sandbox (``registry.k8s.io/pause``). They are not those images:
they are this Debian, with the same entrypoint conventions (socat's image runs ``socat``).

mcsync's own image is made the same way, in two layers like the Dockerfile's: the build
script's ``mcsync-image`` part runs ``deploy/image/install.sh``, the script the Dockerfile runs,
in a Debian root with python3 3.11, once for the dependencies (the base layer, reused until the
lock changes) and once for mcsync itself (the second layer, made again when its sources
change). :data:`MCSYNC` names the image as the chart's default (``mcsync:0.1.0``, which the CRI
reads as ``docker.io/library/mcsync:0.1.0``), with the Dockerfile's user, environment and
entrypoint.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOTFS_SUITE = "bookworm"
ROOTFS_PACKAGES = "socat,netcat-openbsd,dnsutils,iproute2,procps,curl,ca-certificates"
"""Keep in step with the build script's ``rootfs_packages``: the tar is named by their hash."""


MCSYNC_IMAGE_PACKAGES = "python3,python3-venv,ca-certificates,passwd"
"""Keep in step with the build script's ``image_packages``."""
MCSYNC_BASE_INPUTS = ("pyproject.toml", "uv.lock", "README.md", "deploy/image/install.sh")
"""What the mcsync image's base layer is made from (the build script's ``base_inputs``)."""
MCSYNC_IMAGE_INPUTS = (*MCSYNC_BASE_INPUTS, "engine", "publishers", "subscribers", "deploy/crds")
"""What the whole image is made from (``image_inputs``): its second layer is named by their
hash, so a change to any of them makes a new one."""
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Image:
    name: str
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = (f"PATH={BASE_PATH}",)
    user: str = ""
    working_dir: str = ""


PAUSE = "registry.k8s.io/pause:3.10"
CLIENT = "docker.io/nicolaka/netshoot:v0.15"
SERVER = "docker.io/alpine/socat:1.7.4.4"

IMAGES = (
    # The sandbox only has to stay alive; containerd stops it with SIGKILL.
    Image(PAUSE, entrypoint=("/bin/sleep", "infinity")),
    Image(CLIENT, cmd=("sh",)),
    Image(SERVER, entrypoint=("socat",)),
)


MCSYNC = Image(
    "docker.io/library/mcsync:0.1.0",
    entrypoint=("mcsync",),
    cmd=("--help",),
    # The Dockerfile's ENV, USER and WORKDIR.
    env=(
        "PYTHONDONTWRITEBYTECODE=1",
        "PYTHONUNBUFFERED=1",
        f"PATH=/opt/mcsync/bin:{BASE_PATH}",
    ),
    user="10001:10001",
    working_dir="/",
)


def inputs_hash(repo: Path, inputs: tuple[str, ...]) -> str:
    """The hash naming a layer of the mcsync image, as the build script computes it: of the
    suite, the package list and a ``sha256sum`` line per input file (sorted by path)."""
    files: list[str] = []
    for entry in inputs:
        p = repo / entry
        if p.is_file():
            files.append(entry)
        elif p.is_dir():
            files += [
                f.relative_to(repo).as_posix()
                for f in p.rglob("*")
                if f.is_file() and f.suffix != ".pyc" and "__pycache__" not in f.parts
            ]
    listing = f"{ROOTFS_SUITE} {MCSYNC_IMAGE_PACKAGES}\n"
    for rel in sorted(files, key=lambda r: r.encode()):
        listing += f"{_sha256_file(repo / rel)}  {rel}\n"
    return hashlib.sha256(listing.encode()).hexdigest()[:12]


def mcsync_layer_names(repo: Path) -> tuple[str, str]:
    """The file names of the mcsync image's two layers in the cache: the base (Debian, python3
    and the dependencies) and mcsync itself."""
    return (
        f"mcsync-base-{ROOTFS_SUITE}-{inputs_hash(repo, MCSYNC_BASE_INPUTS)}.tar",
        f"mcsync-layer-{ROOTFS_SUITE}-{inputs_hash(repo, MCSYNC_IMAGE_INPUTS)}.tar",
    )


def rootfs_name() -> str:
    digest = hashlib.sha256(f"{ROOTFS_SUITE} {ROOTFS_PACKAGES}".encode()).hexdigest()[:12]
    return f"rootfs-{ROOTFS_SUITE}-{digest}.tar"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _blob(obj: dict[str, Any]) -> tuple[bytes, str]:
    data = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
    return data, hashlib.sha256(data).hexdigest()


def oci_archive(
    rootfs_tar: Path | list[Path], out: Path, images: tuple[Image, ...] = IMAGES
) -> Path:
    """Write an OCI image-layout tar holding ``images``, each with ``rootfs_tar`` as its
    (uncompressed) layers, in order, named by the ``io.containerd.image.name`` annotation.
    Reused when ``out`` exists: its name should carry what it was made from."""
    if out.exists():
        return out
    layers = rootfs_tar if isinstance(rootfs_tar, list) else [rootfs_tar]
    digests = [_sha256_file(p) for p in layers]
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    manifests = []
    with tarfile.open(tmp, "w") as tar:
        _add(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        for layer, digest in zip(layers, digests, strict=True):
            tar.add(str(layer), f"blobs/sha256/{digest}")
        for image in images:
            config: dict[str, Any] = {
                "architecture": "amd64",
                "os": "linux",
                "config": {
                    "Env": list(image.env),
                    **({"Entrypoint": list(image.entrypoint)} if image.entrypoint else {}),
                    **({"Cmd": list(image.cmd)} if image.cmd else {}),
                    **({"User": image.user} if image.user else {}),
                    **({"WorkingDir": image.working_dir} if image.working_dir else {}),
                },
                "rootfs": {"type": "layers", "diff_ids": [f"sha256:{d}" for d in digests]},
            }
            config_data, config_digest = _blob(config)
            manifest = {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": f"sha256:{config_digest}",
                    "size": len(config_data),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": f"sha256:{d}",
                        "size": p.stat().st_size,
                    }
                    for p, d in zip(layers, digests, strict=True)
                ],
            }
            manifest_data, manifest_digest = _blob(manifest)
            _add(tar, f"blobs/sha256/{config_digest}", config_data)
            _add(tar, f"blobs/sha256/{manifest_digest}", manifest_data)
            manifests.append(
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": f"sha256:{manifest_digest}",
                    "size": len(manifest_data),
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {"io.containerd.image.name": image.name},
                }
            )
        index = {"schemaVersion": 2, "manifests": manifests}
        _add(tar, "index.json", json.dumps(index, separators=(",", ":")).encode())
    tmp.rename(out)
    return out
