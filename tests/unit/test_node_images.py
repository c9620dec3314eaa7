"""The local nodes' images: one root filesystem tar wrapped, unchanged, as an OCI image layout
that containerd imports under the names upstream manifests use. (containerd importing it and
pods running from it is exercised in tests/integration/test_nodes.py.)"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from engine.local import images


def _rootfs(tmp_path: Path) -> Path:
    path = tmp_path / "rootfs.tar"
    with tarfile.open(path, "w") as tar:
        data = b"#!/bin/sh\necho hi\n"
        info = tarfile.TarInfo("bin/hello")
        info.size = len(data)
        info.mode = 0o755
        tar.addfile(info, io.BytesIO(data))
    return path


def _read(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {
            m.name: f.read()
            for m in tar.getmembers()
            if m.isfile() and (f := tar.extractfile(m)) is not None
        }


def test_every_image_is_the_rootfs_as_its_one_layer_named_for_containerd(tmp_path: Path) -> None:
    rootfs = _rootfs(tmp_path)
    files = _read(images.oci_archive(rootfs, tmp_path / "images.oci.tar"))
    layer = hashlib.sha256(rootfs.read_bytes()).hexdigest()
    assert files[f"blobs/sha256/{layer}"] == rootfs.read_bytes()
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(files["index.json"])
    names = [m["annotations"]["io.containerd.image.name"] for m in index["manifests"]]
    assert names == [images.PAUSE, images.CLIENT, images.SERVER]
    for desc in index["manifests"]:
        assert desc["platform"] == {"architecture": "amd64", "os": "linux"}
        manifest_data = files[f"blobs/sha256/{desc['digest'].removeprefix('sha256:')}"]
        assert hashlib.sha256(manifest_data).hexdigest() == desc["digest"].removeprefix("sha256:")
        assert len(manifest_data) == desc["size"]
        manifest = json.loads(manifest_data)
        assert manifest["layers"] == [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": f"sha256:{layer}",
                "size": rootfs.stat().st_size,
            }
        ]
        config = json.loads(files[f"blobs/sha256/{manifest['config']['digest'][7:]}"])
        assert config["rootfs"] == {"type": "layers", "diff_ids": [f"sha256:{layer}"]}


def test_each_image_keeps_its_upstream_entrypoint_convention(tmp_path: Path) -> None:
    files = _read(images.oci_archive(_rootfs(tmp_path), tmp_path / "images.oci.tar"))
    configs = {}
    for desc in json.loads(files["index.json"])["manifests"]:
        manifest = json.loads(files[f"blobs/sha256/{desc['digest'][7:]}"])
        config = json.loads(files[f"blobs/sha256/{manifest['config']['digest'][7:]}"])
        configs[desc["annotations"]["io.containerd.image.name"]] = config["config"]
    assert configs[images.SERVER]["Entrypoint"] == ["socat"]
    assert configs[images.CLIENT]["Cmd"] == ["sh"]
    assert configs[images.PAUSE]["Entrypoint"] == ["/bin/sleep", "infinity"]


def test_an_archive_already_made_is_reused(tmp_path: Path) -> None:
    out = tmp_path / "images.oci.tar"
    images.oci_archive(_rootfs(tmp_path), out)
    before = out.stat().st_mtime_ns
    images.oci_archive(_rootfs(tmp_path), out)
    assert out.stat().st_mtime_ns == before


def test_the_rootfs_is_named_by_its_suite_and_packages_as_the_build_script_names_it() -> None:
    script = (
        Path(__file__).parents[2] / "engine" / "local" / "scripts" / "build-control-plane.sh"
    ).read_text()
    assert f"rootfs_suite={images.ROOTFS_SUITE}\n" in script
    assert f"rootfs_packages={images.ROOTFS_PACKAGES}\n" in script
    digest = hashlib.sha256(f"{images.ROOTFS_SUITE} {images.ROOTFS_PACKAGES}".encode()).hexdigest()
    assert images.rootfs_name() == f"rootfs-{images.ROOTFS_SUITE}-{digest[:12]}.tar"


def test_mcsyncs_image_has_its_two_layers_in_order_and_the_dockerfiles_config(
    tmp_path: Path,
) -> None:
    base = _rootfs(tmp_path)
    second = tmp_path / "layer.tar"
    with tarfile.open(second, "w") as tar:
        info = tarfile.TarInfo("opt/mcsync/bin/mcsync")
        info.size = 0
        tar.addfile(info, io.BytesIO(b""))
    files = _read(images.oci_archive([base, second], tmp_path / "m.oci.tar", (images.MCSYNC,)))
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (base, second)]
    (desc,) = json.loads(files["index.json"])["manifests"]
    assert desc["annotations"]["io.containerd.image.name"] == "docker.io/library/mcsync:0.1.0"
    manifest = json.loads(files[f"blobs/sha256/{desc['digest'][7:]}"])
    assert [layer["digest"] for layer in manifest["layers"]] == [f"sha256:{d}" for d in digests]
    config = json.loads(files[f"blobs/sha256/{manifest['config']['digest'][7:]}"])
    assert config["rootfs"]["diff_ids"] == [f"sha256:{d}" for d in digests]
    assert config["config"]["User"] == "10001:10001"
    assert config["config"]["Entrypoint"] == ["mcsync"]
    assert config["config"]["WorkingDir"] == "/"
    assert "PATH=/opt/mcsync/bin:" in config["config"]["Env"][-1]


def test_the_mcsync_image_is_named_again_when_a_source_changes(tmp_path: Path) -> None:
    for name in images.MCSYNC_IMAGE_INPUTS:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        if "." in Path(name).name:
            (tmp_path / name).write_text(name)
        else:
            (tmp_path / name).mkdir()
            (tmp_path / name / "a.py").write_text("x = 1\n")
    base, layer = images.mcsync_layer_names(tmp_path)
    (tmp_path / "engine" / "a.py").write_text("x = 2\n")
    (tmp_path / "engine" / "__pycache__").mkdir()
    (tmp_path / "engine" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    base2, layer2 = images.mcsync_layer_names(tmp_path)
    assert base2 == base and layer2 != layer
    (tmp_path / "uv.lock").write_text("changed")
    assert images.mcsync_layer_names(tmp_path)[0] != base
