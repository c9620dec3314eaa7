"""``mcsync status`` against a running clusterset: what every subscriber would act on."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest

from engine import jetstream, kube
from engine.core import events as ev
from engine.core import subjects
from engine.local import procs
from tests.integration.conftest import (
    Members,
    eventually,
    get_import,
    hello_export,
    hello_service,
    service,
)
from tests.integration.test_hostile import headers_of, raw
from tests.integration.test_inventory import start_all

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_namespaces")]

MCSYNC = [sys.executable, "-m", "engine"]


def status(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MCSYNC, "status", *args], capture_output=True, text=True, timeout=120, check=False
    )


async def test_status_shows_members_services_conflicts_and_this_clusters_imports(
    members: Members, namespace: str
) -> None:
    cs = members.cs
    await start_all(members)
    await cs["cluster-1"].kube.create(kube.SERVICES, hello_service(namespace))
    await cs["cluster-1"].kube.create(kube.SERVICE_EXPORTS, hello_export(namespace))
    # A later export of the same service with other ports: a conflict the older one wins.
    await asyncio.sleep(1.1)
    ports = [{"name": "tcp", "port": 43, "protocol": "TCP"}]
    await cs["cluster-2"].kube.create(kube.SERVICES, service(namespace, ports=ports))
    await cs["cluster-2"].kube.create(kube.SERVICE_EXPORTS, hello_export(namespace))
    for c in ("cluster-1", "cluster-2", "cluster-3"):
        await eventually(lambda c=c: get_import(cs, c, namespace), timeout=30)  # type: ignore[misc]
    await asyncio.sleep(1.5)
    # A broken last message on a key: status reports it and still shows the key's state.
    nc = await jetstream.connect(cs.nats.url)
    try:
        subject = subjects.cluster(members.clusterset_name, "cluster-3")
        joined = ev.ClusterJoined(cluster="cluster-3", clusterset=members.clusterset_name)
        log = jetstream.EventLog(nc, members.clusterset_name)
        await raw(log, subject, b"garbage", headers_of(joined, subject, members.clusterset_name))
    finally:
        await nc.close()

    args = [
        "--nats-url", cs.nats.url, "--clusterset", members.clusterset_name,
        "--kubeconfig", cs["cluster-2"].kubeconfig, "--lease", "3",
    ]  # fmt: skip
    out = await asyncio.to_thread(status, *args, "--output", "json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert [m["cluster"] for m in doc["members"]] == ["cluster-1", "cluster-2", "cluster-3"]
    assert all(m["member"] and m["health"] == "True" for m in doc["members"])
    (svc,) = [s for s in doc["services"] if s["service"] == f"{namespace}/hello"]
    assert svc["exporters"] == ["cluster-1", "cluster-2"]
    assert svc["winner"] == "cluster-1"
    assert svc["conflicts"]
    assert [u["kind"] for u in doc["unusable"]] == ["invalid"]
    assert doc["stream"]["messages"] > 0
    rows = {r["service"]: r for r in doc["cluster"]["imports"]}
    assert rows[f"{namespace}/hello"]["match"] is True

    table = await asyncio.to_thread(status, *args)
    assert table.returncode == 0, table.stderr
    for text in ("members", "services", f"{namespace}/hello", "cluster-1", "unusable"):
        assert text in table.stdout


def test_status_says_clearly_when_nats_is_unreachable() -> None:
    t0 = time.monotonic()
    out = status("--nats-url", f"nats://127.0.0.1:{procs.free_port()}", "--clusterset", "x")
    assert out.returncode != 0
    assert "NATS is unreachable" in out.stderr
    assert time.monotonic() - t0 < 60
