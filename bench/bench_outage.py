"""Benchmark an outage of the sync plane: the hub's nats-server stops, then returns.

Three clusters (``LocalStack``: real kube-apiservers, one nats-server, a publisher and a
subscriber per cluster in this process) with ``--services`` exported services in cluster-1.
Each round:

1. baseline: one endpoint change in cluster-1 until both other clusters show it (normal
   propagation, measured in the same run);
2. the nats-server stops for ``--outage`` seconds (several heartbeat leases); halfway through,
   ``--changes`` endpoint changes are made in cluster-1;
3. the nats-server returns; time until every change is visible in both other clusters.

Printed per round and as medians: API writes by the subscribers of cluster-2 and cluster-3
during the outage (goal 0), writes after the return against the real changes (goal: one write
per changed slice per cluster), the time from the return to convergence, and its ratio to the
baseline propagation.

    .venv/bin/python bench/bench_outage.py                 # 3 rounds, 20 s outages
    .venv/bin/python bench/bench_outage.py --quick         # 1 round, 10 s
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable

import _common as c
from bench_propagation import NS, Obj, endpoint_slice, service, service_export

from engine import kube, runtime
from engine.core import plan
from engine.localstack import LocalStack
from publishers.membership import ReporterSettings
from subscribers.subscriber import SubscriberSettings


def source_slice(name: str, address: str) -> Obj:
    return endpoint_slice(f"{name}-1", name, [address])


async def shows(k: kube.Kube, name: str, address: str) -> bool:
    slices, _ = await k.list(
        kube.ENDPOINT_SLICES, NS, label_selector=f"{plan.LABEL_SERVICE_NAME}={name}"
    )
    return any(address in e.get("addresses", []) for s in slices for e in s.get("endpoints", []))


async def until(probe: Callable[[], Awaitable[bool]], timeout: float = 120.0) -> float:
    t0 = time.monotonic()
    while not await probe():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError("no convergence")
        await asyncio.sleep(0.02)
    return time.monotonic() - t0


async def everywhere(stack: LocalStack, changes: dict[str, str]) -> bool:
    for cluster in ("cluster-2", "cluster-3"):
        for name, address in changes.items():
            if not await shows(stack.kubes[cluster], name, address):
                return False
    return True


def sub_writes(stack: LocalStack) -> int:
    return sum(stack.members[c].k8s.writes for c in ("cluster-2", "cluster-3"))


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--services", type=int, default=20)
    ap.add_argument("--changes", type=int, default=5)
    ap.add_argument("--outage", type=float, default=20.0)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.outage = 1, 10.0
    c.quiet()
    runtime.tune_gc()
    lease = 4.0
    options = {
        "reporter_settings": ReporterSettings(heartbeat_interval=1.0, lease=lease),
        "subscriber_settings": SubscriberSettings(lease_seconds=lease),
    }
    print(c.machine())
    print(
        f"{args.services} services, {args.changes} changes per outage, outages of "
        f"{args.outage:.0f} s, heartbeat lease {lease:.0f} s ({args.outage / lease:.0f} leases)"
    )
    async with LocalStack(3, member_options=options) as stack:
        assert stack.nats is not None
        k1 = stack.kubes["cluster-1"]
        for k in stack.kubes.values():
            await k.apply(
                kube.NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}
            )
        names = [f"svc-{i}" for i in range(args.services)]
        for i, name in enumerate(names):
            await k1.apply(kube.SERVICES, service(name))
            await k1.apply(kube.ENDPOINT_SLICES, source_slice(name, f"10.0.{i}.1"))
            await k1.apply(kube.SERVICE_EXPORTS, service_export(name))
        await until(lambda: everywhere(stack, {n: f"10.0.{i}.1" for i, n in enumerate(names)}))
        await asyncio.sleep(2.0)

        rows: list[list[object]] = []
        version = 1
        for r in range(args.rounds):
            version += 1
            base_change = {names[0]: f"10.1.{version}.1"}
            await k1.apply(kube.ENDPOINT_SLICES, source_slice(names[0], base_change[names[0]]))
            baseline = await until(lambda b=base_change: everywhere(stack, b))
            await asyncio.sleep(1.5)

            before = sub_writes(stack)
            stack.nats.stop()
            down = time.monotonic()
            await asyncio.sleep(args.outage / 2)
            version += 1
            changes = {names[1 + j]: f"10.2.{version}.{j + 1}" for j in range(args.changes)}
            for name, address in changes.items():
                await k1.apply(kube.ENDPOINT_SLICES, source_slice(name, address))
            await asyncio.sleep(max(0.0, args.outage - (time.monotonic() - down)))
            during = sub_writes(stack) - before
            await stack.nats.restart()
            recovery = await until(lambda ch=changes: everywhere(stack, ch))
            await asyncio.sleep(3.0)
            after = sub_writes(stack) - before - during
            rows.append(
                [
                    r + 1,
                    during,
                    f"{after} / {2 * args.changes}",
                    f"{recovery:.2f}",
                    f"{baseline * 1000:.0f}",
                    f"{recovery / baseline:.1f}x",
                ]
            )
        print(
            c.table(
                [
                    "round",
                    "writes during outage",
                    "writes after / real changes",
                    "return -> converged (s)",
                    "baseline propagation (ms)",
                    "ratio",
                ],
                rows,
            )
        )
        rec = [float(str(row[3])) for row in rows]
        base = [float(str(row[4])) / 1000 for row in rows]
        print(
            f"median: return -> converged {c.median(rec):.2f} s; baseline "
            f"{c.median(base) * 1000:.0f} ms; writes during outages {[row[1] for row in rows]}"
        )


if __name__ == "__main__":
    asyncio.run(main())
