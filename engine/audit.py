"""``mcsync replay``: read the log back for audit.

Prints what each cluster said and when, filtered by time, sequence, cluster or service; with
``--explain``, folds the events read and explains the service's import as of the last one: who
won and why, which fields conflict, and for every endpoint address the event that brought it
in ("why did this endpoint appear?").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import msgspec
from rich.console import Console
from rich.table import Table

from engine import jetstream, options
from engine.core import events as ev
from engine.core import fold, mcs, subjects
from engine.core.errors import DecodeError


@dataclass
class Provenance:
    """When each endpoint address of each cluster last appeared, by service."""

    since: dict[tuple[str, str], dict[tuple[str, str], fold.Envelope]] = field(default_factory=dict)

    def observe(self, state: fold.ClusterSetState, env: fold.Envelope) -> None:
        e = env.event
        if not isinstance(
            e, ev.SliceUpserted | ev.SliceRemoved | ev.ExportWithdrawn | ev.ClusterLeft
        ):
            return
        for key in list(state.slices) + list(self.since):
            now = {
                (cluster, addr)
                for cluster, by_slice in state.slices.get(key, {}).items()
                for s in by_slice.values()
                for ep in s.endpoints
                for addr in ep.addresses
            }
            seen = self.since.setdefault(key, {})
            for gone in [a for a in seen if a not in now]:
                del seen[gone]
            for added in now - set(seen):
                seen[added] = env


def summary(event: ev.Event) -> str:
    match event:
        case ev.ExportUpserted():
            if event.validity != "Valid":
                return f"{event.namespace}/{event.name} exported but {event.validity}"
            ports = ",".join(f"{p.name or '-'}/{p.protocol}/{p.port}" for p in event.ports)
            return f"{event.namespace}/{event.name} {event.service_type} ports={ports}"
        case ev.ExportWithdrawn():
            return f"{event.namespace}/{event.name} withdrawn"
        case ev.SliceUpserted():
            addrs = [a for e in event.endpoints for a in e.addresses]
            listed = ", ".join(addrs) or "empty"
            return f"{event.namespace}/{event.service} slice {event.name}: {listed}"
        case ev.SliceRemoved():
            return f"{event.namespace}/{event.service} slice {event.name} removed"
        case ev.ClusterJoined():
            return f"version={event.kubernetes_version} properties={len(event.properties)}"
        case ev.Heartbeat():
            return f"{event.health} {event.reason}".strip()
        case ev.SnapshotComplete():
            return f"epoch {event.epoch}"
        case ev.LeaseAcquired() | ev.LeaseReleased():
            return f"{event.name} holder={event.holder} token={event.token}"
        case _:
            return ""


def _matches(env: fold.Envelope, cluster: str | None, service: tuple[str, str] | None) -> bool:
    if cluster is not None and env.event.cluster != cluster:
        return False
    if service is None:
        return True
    e = env.event
    if isinstance(e, ev.ExportUpserted | ev.ExportWithdrawn):
        return (e.namespace, e.name) == service
    if isinstance(e, ev.SliceUpserted | ev.SliceRemoved):
        return (e.namespace, e.service) == service
    return False


async def run(
    *,
    nats: options.Nats,
    clusterset: str,
    since: datetime | None,
    until: datetime | None,
    from_seq: int | None,
    to_seq: int | None,
    cluster: str | None,
    service: str | None,
    explain: bool,
    output: str,
    console: Console,
) -> int:
    key: tuple[str, str] | None = None
    if service is not None:
        ns, _, name = service.partition("/")
        key = (ns, name)
    nc = await nats.connect("mcsync-replay")
    try:
        log = jetstream.EventLog(nc, clusterset)
        state = fold.ClusterSetState()
        prov = Provenance()
        table = Table(title=f"log of clusterset {clusterset!r}")
        for col in ("seq", "time", "cluster", "type", "summary"):
            table.add_column(col)
        shown = 0
        # Explaining needs the state before the window too: fold from the start.
        start = None if explain else from_seq
        async for item in log.replay(
            start_seq=start, start_time=None if explain else since, end_seq=to_seq, end_time=until
        ):
            if isinstance(item.result, DecodeError):
                if output == "json":
                    print(
                        msgspec.json.encode({"seq": item.seq, "error": str(item.result)}).decode()
                    )
                else:
                    table.add_row(str(item.seq), "", "", "undecodable", str(item.result)[:80])
                continue
            env = item.result
            fold.apply(state, env)
            prov.observe(state, env)
            in_window = (from_seq is None or env.seq >= from_seq) and (
                since is None or env.time >= since
            )
            if not in_window or not _matches(env, cluster, key):
                continue
            shown += 1
            if output == "json":
                doc = {
                    "seq": env.seq,
                    "subject": env.subject,
                    "time": env.time.isoformat(),
                    "event": msgspec.to_builtins(env.event),
                }
                print(msgspec.json.encode(doc).decode())
            else:
                table.add_row(
                    str(env.seq),
                    env.time.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
                    env.event.cluster,
                    ev.tag_of(type(env.event)),
                    summary(env.event),
                )
        if output != "json":
            console.print(table)
            console.print(f"{shown} events")
        if explain and key is not None:
            _explain(console, state, prov, key)
        return 0
    finally:
        await nc.close()


def _explain(
    console: Console, state: fold.ClusterSetState, prov: Provenance, key: tuple[str, str]
) -> None:
    exports: Mapping[str, ev.ExportUpserted] = state.exports.get(key, {})
    view = mcs.view(key[0], key[1], exports)
    console.print(f"\n[bold]{key[0]}/{key[1]}[/] as of position {state.position}:")
    if view.spec is None:
        console.print("  no import: no cluster exports it validly")
        for c, conds in view.export_conditions.items():
            console.print(f"  {c}: " + "; ".join(f"{x.type}={x.status}/{x.reason}" for x in conds))
        return
    console.print(f"  type {view.spec.type}, from clusters {', '.join(view.clusters)}")
    winner = exports[view.winner or ""]
    console.print(
        f"  precedence: {view.winner} (ServiceExport created {winner.created.isoformat()}; "
        "oldest wins, ties to the lowest cluster id)"
    )
    if view.conflict_reasons:
        console.print(f"  conflicts: {', '.join(view.conflict_reasons)}")
    for (cluster, addr), env in sorted(prov.since.get(key, {}).items()):
        console.print(
            f"  endpoint {addr} from {cluster}: since event {env.seq} at "
            f"{env.time.isoformat()} on {subjects.parse(env.subject).parts[-1]}"
        )
