"""``mcsync status``: the clusterset at a glance, from the log itself.

It reads the last event of every subject (as a restarted subscriber does), folds them, and
reports what every subscriber would act on: the members with their health, last heartbeat and
how far behind the log's clock it is; the services with their exporters, winners and conflicts;
the dead letters; the stream. With ``--kubeconfig`` it also compares this cluster's
ServiceImports with the log. Tables for people, ``--output json`` for scripts.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table

from engine import identity, jetstream, kube, options
from engine.core import fold, inventory, mcs, subjects
from engine.core.errors import ConfigError, DecodeError


@dataclass
class Report:
    """Everything ``mcsync status`` shows, as plain data."""

    clusterset: str
    stream: dict[str, Any] = field(default_factory=dict)
    log_time: str | None = None
    members: list[dict[str, Any]] = field(default_factory=list)
    services: list[dict[str, Any]] = field(default_factory=list)
    unusable: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: int = 0
    cluster: dict[str, Any] | None = None


async def collect(log: jetstream.EventLog, lease: timedelta) -> tuple[Report, fold.ClusterSetState]:
    """Read the log's current state (the last usable event of every subject) into a report."""
    report = Report(log.clusterset)
    try:
        info = await log.js.stream_info(log.stream)
    except Exception as exc:
        raise ConfigError(f"stream {log.stream} not found or not readable: {exc!r}") from exc
    cfg, st = info.config, info.state
    report.stream = {
        "name": log.stream,
        "messages": int(st.messages),
        "bytes": int(st.bytes),
        "first_seq": int(st.first_seq),
        "last_seq": int(st.last_seq),
        "consumers": int(st.consumer_count),
        "replicas": int(cfg.num_replicas or 1),
        "sources": [s.name for s in cfg.sources or []],
        "mirror": cfg.mirror.name if cfg.mirror else None,
    }
    dlq = jetstream.dead_letter_stream(log.clusterset)
    try:
        report.dead_letters = int((await log.js.stream_info(dlq)).state.messages)
    except Exception:  # no dead-letter stream yet, or not readable: nothing to report
        report.dead_letters = 0

    state = fold.ClusterSetState()
    latest: datetime | None = None

    def on_event(env: fold.Envelope) -> None:
        nonlocal latest
        fold.apply(state, env)
        latest = env.time if latest is None or env.time > latest else latest

    def on_bad(subject: str, seq: int, error: DecodeError) -> None:
        report.unusable.append(
            {"subject": subject, "seq": seq, "kind": error.kind, "error": str(error)[:200]}
        )

    follower = jetstream.Follower(log, "status", on_event, on_bad=on_bad)
    await follower.start()
    try:
        async with asyncio.timeout(60):
            await follower.caught_up.wait()
    finally:
        await follower.stop()

    now = latest or datetime.now().astimezone()
    report.log_time = latest.isoformat() if latest else None
    admitted = inventory.admitted(state, now, lease, "withdraw")
    for name, rec in sorted(state.clusters.items()):
        h = inventory.health(rec, now, lease)
        hb = rec.last_heartbeat_at
        report.members.append(
            {
                "cluster": name,
                "member": inventory.is_member(rec),
                "health": h.status,
                "reason": h.reason,
                "last_heartbeat": hb.isoformat() if hb else None,
                "behind_log_seconds": round((now - hb).total_seconds(), 1) if hb else None,
                "kubernetes": rec.info.kubernetes_version if rec.info else "",
                "instances": inventory.live_instances(rec, now, lease),
                "admitted": name in admitted,
            }
        )
    members = frozenset(inventory.members(state))
    for (ns, name), exports in sorted(state.exports.items()):
        view = mcs.view(ns, name, exports, admitted, members)
        endpoints = sum(
            len(ep.addresses)
            for cluster, by_slice in state.slices.get((ns, name), {}).items()
            if cluster in view.clusters
            for s in by_slice.values()
            for ep in s.endpoints
        )
        report.services.append(
            {
                "service": f"{ns}/{name}",
                "type": view.spec.type if view.spec else None,
                "exporters": sorted(exports),
                "contributing": list(view.clusters),
                "winner": view.winner,
                "conflicts": list(view.conflict_reasons),
                "endpoints": endpoints,
            }
        )
    return report, state


async def compare_cluster(report: Report, k: kube.Kube, cluster: str | None) -> None:
    """This cluster's ServiceImports against the services the log says exist."""
    imports, _ = await k.list(kube.SERVICE_IMPORTS)
    have = {
        f"{o['metadata']['namespace']}/{o['metadata']['name']}": o.get("spec", {}).get("type")
        for o in imports
    }
    namespaces, _ = await k.list(kube.NAMESPACES)
    live = {n["metadata"]["name"] for n in namespaces if not n["metadata"].get("deletionTimestamp")}
    rows = []
    for svc in report.services:
        ns = svc["service"].split("/", 1)[0]
        want = svc["type"] if ns in live else None
        got = have.pop(svc["service"], None)
        rows.append(
            {
                "service": svc["service"],
                "log": want or "-",
                "cluster": got or "-",
                "match": want == got,
            }
        )
    for extra, kind in sorted(have.items()):
        rows.append({"service": extra, "log": "-", "cluster": kind, "match": False})
    report.cluster = {"cluster": cluster, "imports": rows}


def render(console: Console, report: Report) -> None:
    s = report.stream
    console.print(
        f"[bold]clusterset {report.clusterset}[/]: stream {s['name']}, {s['messages']} messages "
        f"({s['bytes']:,} bytes), replicas {s['replicas']}, "
        f"{s['consumers']} consumers"
        + (f", sources {', '.join(s['sources'])}" if s["sources"] else "")
        + (f", mirror of {s['mirror']}" if s["mirror"] else "")
    )
    console.print(f"log clock (newest event): {report.log_time or '-'}")
    t = Table(title="members")
    for col in (
        "cluster",
        "member",
        "health",
        "reason",
        "behind log (s)",
        "kubernetes",
        "admitted",
    ):
        t.add_column(col)
    for m in report.members:
        t.add_row(
            m["cluster"],
            "yes" if m["member"] else "left",
            m["health"],
            m["reason"],
            "-" if m["behind_log_seconds"] is None else str(m["behind_log_seconds"]),
            m["kubernetes"] or "-",
            "yes" if m["admitted"] else "no",
        )
    console.print(t)
    t = Table(title="services")
    for col in ("service", "type", "exporters", "winner", "endpoints", "conflicts"):
        t.add_column(col)
    for svc in report.services:
        t.add_row(
            svc["service"],
            svc["type"] or "(no import)",
            ", ".join(svc["exporters"]),
            svc["winner"] or "-",
            str(svc["endpoints"]),
            "; ".join(svc["conflicts"]) or "-",
        )
    console.print(t)
    console.print(
        f"unusable last messages: {len(report.unusable)}; dead letters: {report.dead_letters}"
    )
    for u in report.unusable[:20]:
        console.print(f"  {u['subject']} #{u['seq']} ({u['kind']}): {u['error']}")
    if report.cluster is not None:
        t = Table(title=f"ServiceImports in this cluster ({report.cluster['cluster'] or '?'})")
        for col in ("service", "from the log", "in the cluster", "match"):
            t.add_column(col)
        for row in report.cluster["imports"]:
            t.add_row(row["service"], row["log"], row["cluster"], "yes" if row["match"] else "NO")
        console.print(t)


async def run(
    *,
    nats: options.Nats,
    clusterset: str,
    lease_seconds: float,
    kubeconfig: str | None,
    output: str,
    console: Console,
    connect_timeout: float = 10.0,
    log_layout: str = "hub",
    cluster: str | None = None,
) -> int:
    """Print the status; exit code 0, or 1 when this cluster's imports differ from the log."""
    try:
        async with asyncio.timeout(connect_timeout):
            nc = await nats.connect("mcsync-status")
    except TimeoutError:
        raise ConfigError(
            f"NATS is unreachable at {nats.nats_url} (no connection within {connect_timeout:.0f} "
            "s): check --nats-url, the credentials and the network"
        ) from None
    try:
        route = jetstream.Route(
            subjects.check_label("clusterset", clusterset),
            cluster,
            log_layout,  # type: ignore[arg-type]  # checked by the command
        )
        log = jetstream.EventLog(nc, clusterset, route=route)
        report, _ = await collect(log, timedelta(seconds=lease_seconds))
    finally:
        await jetstream.close(nc)
    if kubeconfig is not None:
        api = await kube.load_client(kubeconfig)
        try:
            k = kube.Kube(api)
            me = None
            with contextlib.suppress(ConfigError):  # no identity: compare anyway
                me = (await identity.read(k, clusterset)).cluster
            await compare_cluster(report, k, me)
        finally:
            await api.close()
    if output == "json":
        print(msgspec.json.encode(report).decode())
    else:
        render(console, report)
    mismatched = report.cluster is not None and not all(
        r["match"] for r in report.cluster["imports"]
    )
    return 1 if mismatched else 0
