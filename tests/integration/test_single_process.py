"""``mcsync member``: a cluster's publisher and subscriber in one process, as its pod runs it.

Each member here is the command a pod runs (``python -m engine member``), not an in-process
``runner.Member``: one NATS connection, one API client and one health port for both parts.
cluster-1's member runs as the ServiceAccount of the kustomize ``single-process`` component,
with exactly the grants and the admission fence that component renders on the real apiserver,
and the other cluster's member with an admin kubeconfig; an export must cross in both
directions, the member's writes must pass its fence while the attacks the fence exists for are
refused, and the process must outlive a NATS outage the way the two-process layout does.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from engine import kube
from engine.local import procs
from tests.conftest import ClusterSet
from tests.integration.conftest import (
    Members,
    Restartable,
    endpoint_slice,
    eventually,
    get_import,
    hello_export,
    hello_service,
    mcs_slices,
    service,
    service_export,
)
from tests.integration.test_outages import Cut
from tests.integration.test_rbac import KINDS, _as, grant, token_kubeconfig

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_namespaces")]

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MCSYNC = [sys.executable, "-m", "engine"]


def single_process_grants(tmp: Path) -> list[kube.Obj]:
    """What the single-process component grants (RBAC, the fence), as kustomize renders it."""
    tree = tmp / "kustomize"
    shutil.copytree(DEPLOY / "kustomize", tree)
    overlay = tree / "overlays" / "test"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources:\n  - ../../base\ncomponents:\n  - ../../components/single-process\n"
    )
    out = subprocess.run(
        ["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, check=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d and d["kind"] in KINDS]


def http(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, repr(exc)


class Running:
    """``mcsync member`` processes started by one test, stopped when it ends."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, nats_url: str, kubeconfig: str | Path, clusterset: str) -> int:
        """Start a member; its health port."""
        port = procs.free_port()
        argv = [
            *MCSYNC, "member", "--nats-url", nats_url, "--kubeconfig", str(kubeconfig),
            "--clusterset", clusterset, "--health-port", str(port), "--log-format", "json",
            "--heartbeat-interval", "1",
        ]  # fmt: skip
        self.procs.append(procs.spawn(argv, self.tmp / f"{name}.log"))
        return port

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    async def ready(self, port: int, timeout: float = 60) -> None:
        async def probe() -> bool:
            for p in self.procs:
                assert p.poll() is None, f"a member exited with {p.returncode}"
            status, _ = await asyncio.to_thread(http, port, "/readyz")
            return status == 200

        await eventually(probe, timeout=timeout, interval=0.2)

    def stop(self) -> None:
        for p in self.procs:
            procs.stop(p, grace=15)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    r = Running(tmp_path)
    try:
        yield r
    finally:
        r.stop()


async def test_single_process_members_carry_exports_both_ways_under_the_members_grants(
    members: Members, namespace: str, running: Running, tmp_path: Path
) -> None:
    cs = members.cs
    admin = cs["cluster-1"].kube
    for doc in single_process_grants(tmp_path):
        await admin.apply(KINDS[doc["kind"]], doc)
    try:
        config = await token_kubeconfig(cs, "cluster-1", "mcsync-member", tmp_path)
        port1 = running.start("cluster-1", cs.nats.url, config, members.clusterset_name)
        port2 = running.start(
            "cluster-2", cs.nats.url, cs["cluster-2"].kubeconfig, members.clusterset_name
        )
        await running.ready(port1)
        await running.ready(port2)

        # cluster-1's export reaches cluster-2: the member's publisher reads under its grants.
        await admin.create(kube.SERVICES, hello_service(namespace))
        await admin.create(kube.SERVICE_EXPORTS, hello_export(namespace))
        await eventually(lambda: get_import(cs, "cluster-2", namespace), timeout=30)
        await eventually(lambda: get_import(cs, "cluster-1", namespace), timeout=30)

        # cluster-2's export is materialized in cluster-1 by the same process's subscriber,
        # through the fence: derived Service and EndpointSlices created, then deleted.
        k2 = cs["cluster-2"].kube
        await k2.create(kube.SERVICES, service(namespace, "web"))
        await k2.create(kube.SERVICE_EXPORTS, service_export(namespace, "web"))
        await k2.create(
            kube.ENDPOINT_SLICES, endpoint_slice(namespace, "web", "web-1", ["10.2.0.1"])
        )
        await eventually(lambda: _slices(cs, namespace, "web", 1), timeout=30)
        await k2.delete(kube.SERVICE_EXPORTS, namespace, "web")
        await eventually(lambda: _slices(cs, namespace, "web", 0), timeout=30)

        # One health port covers both parts: both count on the one /metrics.
        status, metrics = await asyncio.to_thread(http, port1, "/metrics")
        assert status == 200
        for counter in ("mcsync_events_appended_total", "mcsync_events_in_total"):
            assert f'{counter}{{cluster="cluster-1"' in metrics, counter
        assert (await asyncio.to_thread(http, port1, "/healthz"))[0] == 200

        log = running.log("cluster-1")
        assert "403" not in log and "forbidden" not in log.lower(), log[-3000:]

        # The fence holds for the member's writes as it did for the subscriber's.
        api = await kube.load_client(config)
        try:
            member = kube.Kube(api)
            refusal = await _as(member, "DELETE", "/api/v1/namespaces/default/services/kubernetes")
            assert refusal is not None and "mcsync subscriber may" in refusal, refusal
        finally:
            await api.close()
    finally:
        await grant(admin)  # the base's grants and fence again, as the other tests expect


async def _slices(cs: ClusterSet, ns: str, name: str, count: int) -> bool:
    return len(await mcs_slices(cs, "cluster-1", ns, name)) == count


async def test_a_member_outlives_a_nats_outage_and_says_why_it_is_not_ready(
    members: Members, restartable: Restartable, running: Running
) -> None:
    cs = members.cs
    server = restartable.server
    port = running.start(
        "cluster-1", server.url, cs["cluster-1"].kubeconfig, members.clusterset_name
    )
    await running.ready(port)

    server.stop()

    async def not_ready_for_nats() -> bool:
        status, body = await asyncio.to_thread(http, port, "/readyz")
        return status == 503 and "NATS" in body

    await eventually(not_ready_for_nats, timeout=30, interval=0.2)
    assert (await asyncio.to_thread(http, port, "/healthz"))[0] == 200
    assert all(p.poll() is None for p in running.procs)

    await server.restart()
    await running.ready(port, timeout=60)


def test_a_member_configured_for_another_clusterset_exits_with_a_configuration_error(
    members: Members,
) -> None:
    cs = members.cs
    argv = [
        *MCSYNC, "member", "--nats-url", cs.nats.url, "--kubeconfig",
        cs["cluster-1"].kubeconfig, "--clusterset", "not-this-one", "--health-port", "0",
    ]  # fmt: skip
    out = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert "not-this-one" in out.stderr


async def test_a_member_started_before_its_api_answers_waits_for_it(
    members: Members, running: Running, tmp_path: Path
) -> None:
    """A pod's process may start before it can reach its API (the node's proxy has not routed
    the ``kubernetes`` Service yet, or the API restarts): it waits and becomes ready, it does not
    exit into a restart."""
    cs = members.cs
    config = yaml.safe_load(Path(cs["cluster-1"].kubeconfig).read_text())
    server = urllib.parse.urlsplit(config["clusters"][0]["cluster"]["server"])
    assert server.port is not None
    gate = Cut(server.port)  # nothing listens on its port until it is let through
    config["clusters"][0]["cluster"]["server"] = f"https://{server.hostname}:{gate.port}"
    late = tmp_path / "late.kubeconfig"
    late.write_text(yaml.safe_dump(config))
    try:
        port = running.start("cluster-1", cs.nats.url, late, members.clusterset_name)
        await eventually(
            lambda: asyncio.sleep(0, "kube.waiting" in running.log("cluster-1")), timeout=30
        )
        await asyncio.sleep(2.0)
        assert all(p.poll() is None for p in running.procs), running.log("cluster-1")[-2000:]
        await gate.heal()
        await running.ready(port, timeout=60)
    finally:
        await gate.stop()
