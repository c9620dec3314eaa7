"""The commands a user runs, as processes: the demo, ``mcsync local up``, ``--help``."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import kube
from engine.local import controlplane, netns, nodes

pytestmark = pytest.mark.integration

MCSYNC = [sys.executable, "-m", "engine"]


def test_help_lists_every_command() -> None:
    out = subprocess.run([*MCSYNC, "--help"], capture_output=True, text=True, check=True).stdout
    commands = ("publisher", "subscriber", "member", "demo", "local", "replay", "schema", "lease")
    for command in commands:
        assert command in out


def test_the_subscriber_refuses_coalescing_settings_out_of_order() -> None:
    proc = subprocess.run(
        [*MCSYNC, "subscriber", "--quiet-seconds", "2", "--max-delay-seconds", "1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "--quiet-seconds" in proc.stderr


def test_the_demo_converges_and_exits_zero_with_once(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*MCSYNC, "demo", "--once", "--dir", str(tmp_path / "demo")],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "160"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "converged" in out
    assert "True/PortConflict" in out
    assert "False/InvalidServiceType" in out
    assert "Unknown/HeartbeatLeaseExpired" in out
    assert "leader controller@" in out
    assert "Summary" in out


def _children_of(pid: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False
    ).stdout
    return [int(p) for p in out.split()]


async def test_local_up_serves_a_clusterset_until_interrupted(tmp_path: Path) -> None:
    d = tmp_path / "local"
    proc = subprocess.Popen(
        [*MCSYNC, "local", "up", "--clusters", "2", "--dir", str(d)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not (d / "ready").exists():
            assert proc.poll() is None, "local up exited early"
            assert time.monotonic() < deadline, "local up did not get ready"
            await asyncio.sleep(0.2)
        assert (d / "nats.url").read_text().startswith("nats://127.0.0.1:")
        children = _children_of(proc.pid)
        assert len(children) >= 4  # nats-server, etcd, 2 kube-apiservers
        for name in ("cluster-1", "cluster-2"):
            api = await kube.load_client(d / f"{name}.kubeconfig")
            try:
                k = kube.Kube(api)
                prop = await k.get(kube.CLUSTER_PROPERTIES, None, "cluster.clusterset.k8s.io")
                assert prop is not None and prop["spec"]["value"] == name
                assert await k.get(kube.CRDS, None, "serviceimports.multicluster.x-k8s.io")
            finally:
                await api.close()
            # The same cluster as a context of the one kubeconfig holding them all.
            api = await kube.load_client(d / "kubeconfig", context=name)
            try:
                prop = await kube.Kube(api).get(
                    kube.CLUSTER_PROPERTIES, None, "cluster.clusterset.k8s.io"
                )
                assert prop is not None and prop["spec"]["value"] == name
            finally:
                await api.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        assert not (d / "ready").exists()
        await asyncio.sleep(0.5)
        for pid in children:
            assert not Path(f"/proc/{pid}").exists() or _zombie(pid), f"orphan {pid}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


async def test_local_up_with_nodes_gives_each_cluster_a_ready_node_and_leaves_nothing_behind(
    tmp_path: Path,
) -> None:
    def cgroups() -> set[Path]:
        return {p for h in nodes.cgroup_hierarchies(unified=True) for p in h.glob("mcsync-*")}

    namespaces_before, cgroups_before = netns.namespaces(), cgroups()
    d = tmp_path / "local"
    stderr = tmp_path / "stderr"

    def said() -> str:
        return stderr.read_text(errors="replace")[-4000:]

    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            [*MCSYNC, "local", "up", "--clusters", "2", "--nodes", "--no-mcsync", "--dir", str(d)],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 240
        while not (d / "ready").exists():
            assert proc.poll() is None, f"local up --nodes exited early:\n{said()}"
            assert time.monotonic() < deadline, f"local up --nodes did not get ready:\n{said()}"
            await asyncio.sleep(0.5)
        for name in ("cluster-1", "cluster-2"):
            api = await kube.load_client(d / f"{name}.kubeconfig")
            try:
                node = await kube.Kube(api).get(
                    kube.Resource("", "v1", "nodes", "Node", namespaced=False), None, f"{name}-node"
                )
                assert node is not None
                ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
                assert ready == "True"
            finally:
                await api.close()
        assert len(netns.namespaces() - namespaces_before) == 3  # two nodes and their router
        children = _children_of(proc.pid)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(90) == 0, said()
        await asyncio.sleep(0.5)
        for pid in children:
            assert not Path(f"/proc/{pid}").exists() or _zombie(pid), f"orphan {pid}"
        assert netns.namespaces() - namespaces_before == set()
        assert cgroups() - cgroups_before == set()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_local_up_with_nodes_that_fails_part_way_leaves_no_namespace_behind(
    tmp_path: Path,
) -> None:
    """The network namespaces exist before the control planes start: a kube-apiserver that
    cannot start makes the command fail, and what it made goes with it."""
    nodes.ensure_parts()
    real = controlplane.bin_dir()
    broken = tmp_path / "bin"
    broken.mkdir()
    for b in real.iterdir():
        (broken / b.name).symlink_to(b)
    (broken / "kube-apiserver").unlink()
    (broken / "kube-apiserver").write_text("#!/bin/sh\necho cannot start >&2\nexit 1\n")
    (broken / "kube-apiserver").chmod(0o755)
    before = netns.namespaces()
    d = tmp_path / "local"
    proc = subprocess.run(
        [*MCSYNC, "local", "up", "--clusters", "2", "--nodes", "--no-mcsync", "--dir", str(d)],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "MCSYNC_K8S_BIN": str(broken)},
        check=False,
    )
    assert proc.returncode != 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert netns.namespaces() - before == set(), proc.stderr[-2000:]
