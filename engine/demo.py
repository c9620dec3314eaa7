"""``mcsync demo``: a clusterset on this machine, exporting services and converging live.

Starts an embedded nats-server and three local control planes with a publisher and a
subscriber each, applies sample exports (one service exported from two clusters with differing
ports, which raises a ``PortConflict`` while the import gets the union; a headless database; an
ExternalName service that cannot be exported), shows every cluster's imports converging in a live
table, and prints a summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from engine import jetstream, kube, leadership
from engine.core import leases, plan
from engine.localstack import LocalStack
from publishers.membership import ReporterSettings
from subscribers.subscriber import SubscriberSettings

NS = "shop"


def _svc(name: str, ports: list[tuple[str, int]], **spec: Any) -> kube.Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"ports": [{"name": n, "port": p, "protocol": "TCP"} for n, p in ports], **spec},
    }


def _export(name: str, **spec: Any) -> kube.Obj:
    return {
        "apiVersion": kube.SERVICE_EXPORTS.api_version,
        "kind": "ServiceExport",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


def _slice(
    svc: str, name: str, ips: list[str], ports: list[tuple[str, int]], hostnames: bool = False
) -> kube.Obj:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {"kubernetes.io/service-name": svc},
        },
        "addressType": "IPv4",
        "endpoints": [
            {
                "addresses": [ip],
                "conditions": {"ready": True},
                **({"hostname": f"{svc}-{i}"} if hostnames else {}),
            }
            for i, ip in enumerate(ips)
        ],
        "ports": [{"name": n, "port": p, "protocol": "TCP"} for n, p in ports],
    }


@dataclass
class Observed:
    rows: list[tuple[str, ...]]
    conflicts: list[tuple[str, ...]]
    converged: bool


async def observe(stack: LocalStack) -> Observed:
    rows: list[tuple[str, ...]] = []
    conflicts: list[tuple[str, ...]] = []
    ok = True
    expected = {
        "web": (["cluster-1", "cluster-2"], "ClusterSetIP"),
        "db": (["cluster-3"], "Headless"),
    }
    for name in stack.names:
        k = stack.kubes[name]
        imports, _ = await k.list(kube.SERVICE_IMPORTS, NS)
        slices, _ = await k.list(kube.ENDPOINT_SLICES, NS, plan.LABEL_SERVICE_NAME)
        by_name = {i["metadata"]["name"]: i for i in imports}
        for svc, (clusters, typ) in expected.items():
            imp = by_name.get(svc)
            if imp is None:
                rows.append((name, svc, "-", "-", "-", "-", "-", "waiting"))
                ok = False
                continue
            spec = imp.get("spec", {})
            status = imp.get("status") or {}
            got_clusters = [c["cluster"] for c in status.get("clusters", [])]
            n_eps = sum(
                len(s.get("endpoints") or [])
                for s in slices
                if s["metadata"]["labels"].get(plan.LABEL_SERVICE_NAME) == svc
            )
            ports = ",".join(f"{p.get('name', '')}/{p['port']}" for p in spec.get("ports", []))
            ready = spec.get("type") == typ and got_clusters == clusters and n_eps > 0
            ready = ready and (typ == "Headless" or bool(spec.get("ips")))
            ok = ok and ready
            rows.append(
                (
                    name,
                    svc,
                    spec.get("type", ""),
                    ",".join(spec.get("ips") or []) or "-",
                    ports,
                    ",".join(got_clusters),
                    str(n_eps),
                    "converged" if ready else "converging",
                )
            )
        for svc in ("web", "legacy"):
            se = await k.get(kube.SERVICE_EXPORTS, NS, svc)
            if se is None:
                continue
            conds = {c["type"]: c for c in (se.get("status") or {}).get("conditions", [])}
            valid, conflict = conds.get("Valid"), conds.get("Conflict")
            conflicts.append(
                (
                    name,
                    svc,
                    f"{valid['status']}/{valid['reason']}" if valid else "-",
                    f"{conflict['status']}/{conflict['reason']}" if conflict else "-",
                )
            )
            if svc == "web" and (conflict is None or conflict["status"] != "True"):
                ok = False
            if svc == "legacy" and (valid is None or valid["reason"] != "InvalidServiceType"):
                ok = False
    return Observed(rows, conflicts, ok)


def _render(obs: Observed, elapsed: float) -> Group:
    t = Table(title=f"ServiceImports in namespace {NS!r} ({elapsed:.1f}s)")
    for col in ("cluster", "import", "type", "ips", "ports", "from clusters", "endpoints", "state"):
        t.add_column(col)
    for r in obs.rows:
        t.add_row(*r)
    c = Table(title="ServiceExport conditions")
    for col in ("cluster", "export", "Valid", "Conflict"):
        c.add_column(col)
    for r in obs.conflicts:
        c.add_row(*r)
    return Group(t, c)


async def apply_samples(stack: LocalStack) -> None:
    for name in stack.names:
        await stack.kubes[name].create(kube.NAMESPACES, {"metadata": {"name": NS}})
    one, two, three = (stack.kubes[n] for n in stack.names[:3])
    await one.create(kube.SERVICES, _svc("web", [("http", 80)]))
    await one.create(
        kube.ENDPOINT_SLICES, _slice("web", "web-c1", ["10.1.0.10", "10.1.0.11"], [("http", 8080)])
    )
    await one.create(kube.SERVICE_EXPORTS, _export("web"))
    # Exported a second later from cluster-2 with an extra port: the import gets the union and
    # both exports report PortConflict; the older export (cluster-1) wins any clash.
    await asyncio.sleep(1.1)
    await two.create(kube.SERVICES, _svc("web", [("http", 80), ("metrics", 9090)]))
    await two.create(
        kube.ENDPOINT_SLICES,
        _slice("web", "web-c2", ["10.2.0.20"], [("http", 8080), ("metrics", 9090)]),
    )
    await two.create(kube.SERVICE_EXPORTS, _export("web"))
    await three.create(kube.SERVICES, _svc("db", [("pg", 5432)], clusterIP="None"))
    await three.create(
        kube.ENDPOINT_SLICES,
        _slice("db", "db-c3", ["10.3.0.30", "10.3.0.31"], [("pg", 5432)], True),
    )
    await three.create(kube.SERVICE_EXPORTS, _export("db"))
    await two.create(
        kube.SERVICES,
        _svc("legacy", [("http", 80)], type="ExternalName", externalName="example.org"),
    )
    await two.create(kube.SERVICE_EXPORTS, _export("legacy"))


DEMO_LEASE = 6.0


async def _profiles(stack: LocalStack, where: str) -> dict[str, kube.Obj]:
    items, _ = await stack.kubes[where].list(kube.CLUSTER_PROFILES, "mcsync-system")
    return {p["metadata"]["name"]: p for p in items}


def _cond(obj: kube.Obj | None, ctype: str) -> str:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == ctype:
            return f"{c['status']}/{c['reason']}"
    return "-"


async def _db_endpoints(stack: LocalStack, where: str) -> int:
    slices, _ = await stack.kubes[where].list(
        kube.ENDPOINT_SLICES, NS, f"{plan.LABEL_SERVICE_NAME}=db"
    )
    return sum(len(s.get("endpoints") or []) for s in slices)


async def _inventory_table(stack: LocalStack, title: str) -> Table:
    t = Table(title=title)
    for col in ("member", "version", "ControlPlaneHealthy", "Joined", "properties"):
        t.add_column(col)
    for name, p in sorted((await _profiles(stack, "cluster-1")).items()):
        status = p.get("status") or {}
        t.add_row(
            name,
            (status.get("version") or {}).get("kubernetes", "-"),
            _cond(p, "ControlPlaneHealthy"),
            _cond(p, "Joined"),
            ", ".join(f"{x['name']}={x['value']}" for x in status.get("properties", [])),
        )
    t.caption = f"db endpoints seen in cluster-1: {await _db_endpoints(stack, 'cluster-1')}"
    return t


async def _live_until(
    console: Console,
    render: Callable[[], Awaitable[Table]],
    done: Callable[[], Awaitable[bool]],
    timeout: float,
) -> float:
    t0 = time.monotonic()
    with Live(await render(), console=console, refresh_per_second=4) as live:
        while time.monotonic() - t0 < timeout:
            if await done():
                live.update(await render())
                took = time.monotonic() - t0
                break
            await asyncio.sleep(0.25)
            live.update(await render())
        else:
            raise TimeoutError(f"the demo did not converge within {timeout:.0f}s")
    _gap(console)
    return took


def _gap(console: Console) -> None:
    console.print()


async def inventory_phase(stack: LocalStack, console: Console) -> dict[str, float]:
    """Every cluster has a profile for every member; cluster-3 goes silent and comes back."""
    timings: dict[str, float] = {}

    async def all_healthy() -> bool:
        ps = await _profiles(stack, "cluster-1")
        return len(ps) == 3 and all(
            _cond(p, "ControlPlaneHealthy").startswith("True") for p in ps.values()
        )

    console.rule("[bold]Cluster inventory: a ClusterProfile per member, in every cluster")
    await _live_until(
        console, lambda: _inventory_table(stack, "ClusterProfiles in cluster-1"), all_healthy, 30
    )
    console.rule(
        f"[bold]cluster-3 goes silent: after the {DEMO_LEASE:.0f}s heartbeat lease it is "
        "Unknown and its endpoints are withdrawn"
    )
    await stack.stop_member("cluster-3")

    async def silent() -> bool:
        p = (await _profiles(stack, "cluster-1")).get("cluster-3")
        return _cond(p, "ControlPlaneHealthy").startswith("Unknown") and (
            await _db_endpoints(stack, "cluster-1") == 0
        )

    timings["withdrawn after silence"] = await _live_until(
        console, lambda: _inventory_table(stack, "ClusterProfiles in cluster-1"), silent, 30
    )
    console.rule("[bold]cluster-3 comes back: re-admitted on its next heartbeat")
    await stack.start_member("cluster-3")

    async def back() -> bool:
        return await all_healthy() and await _db_endpoints(stack, "cluster-1") == 2

    timings["re-admitted after restart"] = await _live_until(
        console, lambda: _inventory_table(stack, "ClusterProfiles in cluster-1"), back, 40
    )
    return timings


async def leases_phase(stack: LocalStack, console: Console) -> dict[str, float]:
    """Three candidates, one per cluster, for one lease; the holder fails; another takes over."""
    assert stack.nats is not None
    timing = leases.Timing(duration=3.0, renew_deadline=2.0, renew_interval=0.5, retry_interval=0.1)
    tokens: list[tuple[str, int]] = []
    gained = asyncio.Event()

    def on_gained(identity: str, token: int) -> None:
        tokens.append((identity, token))
        gained.set()

    candidates: dict[str, tuple[Any, leadership.Elector, asyncio.Task[None]]] = {}
    for name in stack.names:
        nc = await jetstream.connect(stack.nats.url, name=f"demo-{name}")
        log = jetstream.EventLog(nc, stack.clusterset, timeout=1.0, retry_for=1.0)
        ident = f"controller@{name}"
        e = leadership.Elector(
            log, name, "demo-leader", ident, timing,
            on_gained=functools.partial(on_gained, ident),
        )  # fmt: skip
        candidates[name] = (nc, e, asyncio.create_task(e.run()))

    async def lease_table() -> Table:
        t = Table(title="Lease mcsync-system/demo-leader as every cluster sees it")
        for col in ("cluster", "holderIdentity", "leaseTransitions (fencing token)"):
            t.add_column(col)
        for name in stack.names:
            obj = await stack.kubes[name].get(kube.LEASES, "mcsync-system", "demo-leader")
            spec = (obj or {}).get("spec") or {}
            t.add_row(
                name, str(spec.get("holderIdentity", "-")), str(spec.get("leaseTransitions", "-"))
            )
        return t

    async def visible(holder: str) -> bool:
        for name in stack.names:
            obj = await stack.kubes[name].get(kube.LEASES, "mcsync-system", "demo-leader")
            if ((obj or {}).get("spec") or {}).get("holderIdentity") != holder:
                return False
        return True

    timings: dict[str, float] = {}
    try:
        console.rule("[bold]Cross-cluster leader lease: one holder in the whole clusterset")
        await gained.wait()
        gained.clear()
        first, token = tokens[-1]
        await _live_until(console, lease_table, lambda: visible(first), 20)
        victim = first.split("@")[1]
        console.rule(f"[bold]{first} loses its NATS connection: it steps down, another takes over")
        nc, _, _ = candidates[victim]
        t0 = time.monotonic()
        await nc.close()
        await gained.wait()
        timings["leader failover"] = time.monotonic() - t0
        second, token2 = tokens[-1]
        await _live_until(console, lease_table, lambda: visible(second), 20)
        console.print(
            f"leader {first} (token {token}) -> {second} (token {token2}) in "
            f"{timings['leader failover']:.2f}s (lease {timing.duration:.0f}s)"
        )
    finally:
        for nc, _, task in candidates.values():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            with contextlib.suppress(Exception):
                await nc.close()
    return timings


async def run(directory: Path, once: bool, console: Console, timeout: float = 90.0) -> int:
    started = time.monotonic()
    with console.status("starting nats-server and 3 control planes (etcd + kube-apiserver)..."):
        stack = LocalStack(
            3,
            directory,
            clusterset="demo",
            member_options={
                "reporter_settings": ReporterSettings(heartbeat_interval=1.0, lease=DEMO_LEASE),
                "subscriber_settings": SubscriberSettings(
                    lease_seconds=DEMO_LEASE, tick_seconds=0.25
                ),
            },
        )
        await stack.start()
    try:
        console.print(
            f"[bold]clusterset 'demo' is up[/] in {time.monotonic() - started:.1f}s: "
            f"nats {stack.nats.url if stack.nats else '?'}, kubeconfigs in {directory}/"
        )
        t0 = time.monotonic()
        await apply_samples(stack)
        obs = await observe(stack)
        with Live(_render(obs, 0), console=console, refresh_per_second=4) as live:
            while not obs.converged and time.monotonic() - t0 < timeout:
                await asyncio.sleep(0.25)
                obs = await observe(stack)
                live.update(_render(obs, time.monotonic() - t0))
        converged_in = time.monotonic() - t0
        if not obs.converged:
            console.print(f"[red]not converged after {timeout:.0f}s[/]")
            return 1
        writes = {n: m.k8s.writes for n, m in stack.members.items()}
        appended = sum(m.publisher.appends for m in stack.members.values() if m.publisher)
        console.print(
            f"\n[green]converged[/] in {converged_in:.2f}s after the first export: "
            f"{appended} events appended to the log; API writes per cluster: {writes}"
        )
        timings = {"services converged": converged_in}
        try:
            timings.update(await inventory_phase(stack, console))
            timings.update(await leases_phase(stack, console))
        except TimeoutError as exc:
            console.print(f"[red]{exc}[/]")
            return 1
        summary = Table(title="Summary")
        summary.add_column("step")
        summary.add_column("seconds", justify="right")
        for step, secs in timings.items():
            summary.add_row(step, f"{secs:.2f}")
        console.print(summary)
        if not once:
            url = stack.nats.url if stack.nats else "?"
            console.print(
                f"Audit any of it: mcsync replay --nats-url {url} --clusterset demo "
                "--service shop/web --explain"
            )
            console.print(
                "The clusterset stays up; try: kubectl --kubeconfig "
                f"{directory}/cluster-2.kubeconfig get serviceimports -n {NS}. "
                "Ctrl-C stops everything."
            )
            await asyncio.Event().wait()
        return 0
    finally:
        with console.status("stopping..."):
            await stack.stop()
