"""Benchmark propagation through the whole stack: real kube-apiservers, NATS, publishers and
subscribers (``LocalStack``; the members run in this process, as with ``mcsync local up``).

(i)   EndpointSlice change: an endpoint address of a source EndpointSlice in cluster-1 changes;
      latency until cluster-2's MCS EndpointSlice shows it on a Kube API watch. Changes rotate
      over several services, one change at a time; each waits out the subscriber's quiet window.
(ii)  ServiceExport created in cluster-1 (its Service exists) until the ServiceImport is on a
      watch in cluster-2, and until it carries ``spec.ips``.
Both beside the raw apiserver figures of the same run, interleaved sample by sample: the round
trip of a plain server-side apply (patch) or create in cluster-2, and the time until a watch on
cluster-2 shows it.
(iii) API writes per distinct final state under churn: bursts of rapid updates to the source
      slice of each of several services (one service's burst after the other, each update
      sent as soon as the previous one returned), then convergence; the subscribers'
      EndpointSlice writes (per cluster) against the number of distinct final states (one per
      service).
(iv)  The same updates for every service at once: they queue at the apiserver, so one
      service's updates come tens of ms apart, with longer pauses; reported like (iii), without
      a target (the first update of a service can stand long enough to be written).

    .venv/bin/python bench/bench_propagation.py           # 200 changes, 50 exports, 20x20 churn
    .venv/bin/python bench/bench_propagation.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import _common as c

from engine import jetstream, kube, runtime
from engine.core import plan, subjects
from engine.localstack import LocalStack
from subscribers.subscriber import SubscriberSettings

NS = "bench"
Obj = dict[str, Any]


# --- objects -------------------------------------------------------------------------------


def service(name: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "selector": {"app": name},
            "ports": [
                {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
                {"name": "metrics", "port": 9090, "protocol": "TCP"},
            ],
        },
    }


def service_export(name: str) -> Obj:
    return {
        "apiVersion": kube.SERVICE_EXPORTS.api_version,
        "kind": "ServiceExport",
        "metadata": {"name": name, "namespace": NS},
    }


def addresses(svc_index: int, version: int, n: int = 10) -> list[str]:
    """Ten addresses; ``version`` changes the first one (unique per version)."""
    first = f"10.{100 + (version >> 16) % 100}.{(version >> 8) & 255}.{version & 255}"
    return [first] + [f"10.1.{svc_index % 250}.{j + 2}" for j in range(n - 1)]


def endpoint_slice(name: str, svc: str | None, addrs: list[str], labels: Obj | None = None) -> Obj:
    lab = dict(labels or {})
    if svc is not None:
        lab["kubernetes.io/service-name"] = svc
        lab["endpointslice.kubernetes.io/managed-by"] = "endpointslice-controller.k8s.io"
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": NS, "labels": lab},
        "addressType": "IPv4",
        "endpoints": [
            {
                "addresses": [a],
                "conditions": {"ready": True, "serving": True, "terminating": False},
                "zone": f"zone-{j % 2}",
            }
            for j, a in enumerate(addrs)
        ],
        "ports": [
            {"name": "http", "port": 8080, "protocol": "TCP"},
            {"name": "metrics", "port": 9090, "protocol": "TCP"},
        ],
    }


# --- a watch that records when each change arrived -----------------------------------------

Pred = Callable[[str, Obj], bool]


class Watch:
    """Keep a cache of one resource (filtered) from a Kube API watch, with receipt times, and
    let callers wait for an object state by predicate."""

    def __init__(self, k: kube.Kube, res: kube.Resource, label_selector: str | None) -> None:
        self.k = k
        self.res = res
        self.selector = label_selector
        self.cache: dict[str, tuple[str, Obj, float]] = {}
        self._waiters: list[tuple[Pred, asyncio.Future[float]]] = []
        self.ready = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def _run(self) -> None:
        rv = ""
        while True:
            try:
                if not rv:
                    items, rv = await self.k.list(self.res, NS, self.selector)
                    now = time.perf_counter()
                    for o in items:
                        self._seen("ADDED", o, now)
                    self.ready.set()
                async for etype, obj in self.k.watch(self.res, rv, NS, self.selector, 600):
                    now = time.perf_counter()
                    rv = obj.get("metadata", {}).get("resourceVersion", rv)
                    if etype != "BOOKMARK":
                        self._seen(etype, obj, now)
            except kube.Gone:
                rv = ""
            except (kube.KubeError, kube.KubeTransientError):
                await asyncio.sleep(0.1)

    def _seen(self, etype: str, obj: Obj, now: float) -> None:
        self.cache[obj["metadata"]["name"]] = (etype, obj, now)
        keep = []
        for pred, fut in self._waiters:
            if fut.done():
                continue
            if pred(etype, obj):
                fut.set_result(now)
            else:
                keep.append((pred, fut))
        self._waiters = keep

    async def wait(self, pred: Pred, timeout: float = 30.0) -> float:
        """The receipt time of the first object state satisfying ``pred`` (cached included)."""
        for etype, obj, t in self.cache.values():
            if pred(etype, obj):
                return t
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiters.append((pred, fut))
        return await asyncio.wait_for(fut, timeout)


def mcs_slice_has(svc: str, address: str) -> Pred:
    def pred(etype: str, obj: Obj) -> bool:
        labels = obj["metadata"].get("labels") or {}
        return (
            etype != "DELETED"
            and labels.get(plan.LABEL_SERVICE_NAME) == svc
            and any(address in (e.get("addresses") or []) for e in obj.get("endpoints") or [])
        )

    return pred


def named(name: str, check: Callable[[Obj], bool] = lambda o: True) -> Pred:
    return lambda etype, obj: etype != "DELETED" and obj["metadata"]["name"] == name and check(obj)


# --- the benchmark -------------------------------------------------------------------------


class Bench:
    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.src = stack.kubes["cluster-1"]
        self.dst = stack.kubes["cluster-2"]
        self.mcs_watch = {
            name: Watch(stack.kubes[name], kube.ENDPOINT_SLICES, plan.LABEL_SERVICE_NAME)
            for name in stack.names
        }
        self.base_watch = Watch(self.dst, kube.ENDPOINT_SLICES, "bench=baseline")
        self.import_watch = Watch(self.dst, kube.SERVICE_IMPORTS, None)
        self.version = 0
        self.base_rt: list[float] = []
        self.base_vis: list[float] = []
        self.base_create_rt: list[float] = []
        self.base_create_vis: list[float] = []
        self.to_log: list[float] = []
        self.log_to_c2: list[float] = []
        self.nc: Any = None
        self.per_change = (0.0, 0.0)

    @property
    def watches(self) -> list[Watch]:
        return [*self.mcs_watch.values(), self.base_watch, self.import_watch]

    async def start(self) -> None:
        assert self.stack.nats is not None
        self.nc = await jetstream.connect(self.stack.nats.url, name="bench-propagation")
        for name in self.stack.names:
            await self.stack.kubes[name].create(kube.NAMESPACES, {"metadata": {"name": NS}})
        for w in self.watches:
            w.start()
        await asyncio.gather(*(w.ready.wait() for w in self.watches))

    def next_version(self) -> int:
        self.version += 1
        return self.version

    async def export(self, svc: str, index: int) -> str:
        """Export ``svc`` from cluster-1 with a source slice; return its first address."""
        v = self.next_version()
        await self.src.apply(kube.SERVICES, service(svc))
        await self.src.apply(
            kube.ENDPOINT_SLICES, endpoint_slice(f"{svc}-src", svc, addresses(index, v))
        )
        await self.src.apply(kube.SERVICE_EXPORTS, service_export(svc))
        return addresses(index, v)[0]

    async def update_slice(self, svc: str, index: int) -> tuple[str, float, float]:
        """Change the first address; (address, start time, round trip seconds)."""
        addrs = addresses(index, self.next_version())
        self.wall0 = time.time()
        t0 = time.perf_counter()
        await self.src.apply(kube.ENDPOINT_SLICES, endpoint_slice(f"{svc}-src", svc, addrs))
        return addrs[0], t0, time.perf_counter() - t0

    async def split(self, svc: str, addr: str, total: float) -> None:
        """Split one propagation at the time the log stored the event (the server's clock,
        the same machine's): source write + publisher, then log + subscriber + watch."""
        subject = subjects.endpoint_slice(self.stack.clusterset, "cluster-1", NS, svc, f"{svc}-src")
        msg = await self.nc.jetstream().get_last_msg(
            subjects.stream_name(self.stack.clusterset), subject, direct=True
        )
        if addr.encode() not in (msg.data or b"") or msg.time is None:
            return
        first = msg.time.timestamp() - self.wall0
        self.to_log.append(first)
        self.log_to_c2.append(total - first)

    async def baseline_patch(self) -> None:
        addrs = addresses(0, self.next_version())
        obj = endpoint_slice("baseline", None, addrs, {"bench": "baseline"})
        t0 = time.perf_counter()
        await self.dst.apply(kube.ENDPOINT_SLICES, obj)
        self.base_rt.append(time.perf_counter() - t0)
        seen = await self.base_watch.wait(
            lambda et, o: (
                o["metadata"]["name"] == "baseline"
                and o["endpoints"][0]["addresses"][0] == addrs[0]
            )
        )
        self.base_vis.append(seen - t0)

    async def baseline_create(self, i: int) -> None:
        name = f"baseline-new-{i}"
        obj = endpoint_slice(name, None, addresses(0, 1), {"bench": "baseline"})
        t0 = time.perf_counter()
        await self.dst.create(kube.ENDPOINT_SLICES, obj)
        self.base_create_rt.append(time.perf_counter() - t0)
        seen = await self.base_watch.wait(named(name))
        self.base_create_vis.append(seen - t0)

    # (i)
    async def slice_changes(self, changes: int, services: int) -> tuple[list[float], list[float]]:
        names = [f"prop-{i}" for i in range(services)]
        first = [await self.export(s, i) for i, s in enumerate(names)]
        for s, a in zip(names, first, strict=True):
            await self.mcs_watch["cluster-2"].wait(mcs_slice_has(s, a), 60)
        lat: list[float] = []
        rts: list[float] = []
        warmup = min(10, changes // 10)
        sub = self.stack.members["cluster-2"].subscriber
        assert sub is not None
        r0, w0 = sub.reconciles, self.slice_writes()["cluster-2"]
        for k in range(changes + warmup):
            i = k % services
            addr, t0, rt = await self.update_slice(names[i], i)
            seen = await self.mcs_watch["cluster-2"].wait(mcs_slice_has(names[i], addr), 30)
            if k >= warmup:
                lat.append(seen - t0)
                rts.append(rt)
                await self.split(names[i], addr, seen - t0)
                await self.baseline_patch()
        await asyncio.sleep(1.0)
        n = changes + warmup
        self.per_change = (
            (sub.reconciles - r0) / n,
            (self.slice_writes()["cluster-2"] - w0) / n,
        )
        return lat, rts

    # (ii)
    async def export_to_import(self, count: int) -> tuple[list[float], list[float]]:
        names = [f"imp-{i}" for i in range(count)]
        for s in names:
            await self.src.apply(kube.SERVICES, service(s))
        visible: list[float] = []
        with_ips: list[float] = []
        for i, s in enumerate(names):
            t0 = time.perf_counter()
            await self.src.create(kube.SERVICE_EXPORTS, service_export(s))
            seen = await self.import_watch.wait(named(s), 30)
            ips = await self.import_watch.wait(
                named(s, lambda o: bool((o.get("spec") or {}).get("ips"))), 30
            )
            visible.append(seen - t0)
            with_ips.append(ips - t0)
            await self.baseline_create(i)
        return visible, with_ips

    # (iii)
    def slice_writes(self) -> dict[str, float]:
        out = {}
        for name, m in self.stack.members.items():
            total = 0.0
            for metric in m.metrics.writes.collect():
                for sample in metric.samples:
                    if sample.name.endswith("_total") and sample.labels.get("kind") == (
                        "EndpointSlice"
                    ):
                        total += sample.value
            out[name] = total
        return out

    def kube_writes(self) -> dict[str, int]:
        return {name: m.k8s.writes for name, m in self.stack.members.items()}

    async def churn(
        self, services: int, updates: int, names: list[str], concurrent: bool, hold: float
    ) -> Obj:
        """Update each service's source slice ``updates`` times back to back.

        ``concurrent`` False: one service's burst after the other, so each burst is as rapid as
        the apiserver's round trip allows. True: every service's updates at once; they then
        queue at the apiserver and one service's updates come about 150 ms apart, so each one
        is a state of its own for that long. ``hold``: the subscribers' longest hold-back.
        """
        if not names:
            names.extend(f"churn-{i}" for i in range(services))
            first = [await self.export(s, 1000 + i) for i, s in enumerate(names)]
            for w in self.mcs_watch.values():
                for s, a in zip(names, first, strict=True):
                    await w.wait(mcs_slice_has(s, a), 60)
        await asyncio.sleep(1.0)  # let trailing writes of the setup finish
        w0, k0 = self.slice_writes(), self.kube_writes()
        pub = self.stack.members["cluster-1"].publisher
        a0 = pub.appends if pub else 0
        finals: dict[str, str] = {}
        gaps: list[float] = []

        async def burst(i: int, s: str) -> None:
            last = None
            for _ in range(updates):
                addr, t, rt = await self.update_slice(s, 1000 + i)
                if last is not None:
                    gaps.append(t + rt - last)
                last = t + rt
                finals[s] = addr

        t0 = time.perf_counter()
        if concurrent:
            await asyncio.gather(*(burst(i, s) for i, s in enumerate(names)))
        else:
            for i, s in enumerate(names):
                await burst(i, s)
        t_burst = time.perf_counter() - t0
        done = []
        for w in self.mcs_watch.values():
            for s in names:
                done.append(await w.wait(mcs_slice_has(s, finals[s]), 60))
        converged = max(done) - t0
        # Trailing writes after convergence would count too: wait out the longest hold-back.
        await asyncio.sleep(max(1.0, 2 * hold))
        w1, k1 = self.slice_writes(), self.kube_writes()
        return {
            "burst_s": t_burst,
            "gap_ms": c.pct(gaps, 50) * 1000,
            "converged_s": converged,
            "appends": (pub.appends if pub else 0) - a0,
            "slice_writes": {n: w1[n] - w0[n] for n in w1},
            "kube_writes": {n: k1[n] - k0[n] for n in k1},
        }

    async def stop(self) -> None:
        for w in self.watches:
            await w.stop()
        if self.nc is not None:
            await self.nc.close()


def lat_row(name: str, values: list[float], target: str = "") -> list[object]:
    ms = [v * 1000 for v in values]
    return [name, len(ms), c.pct(ms, 50), c.pct(ms, 90), c.pct(ms, 99), max(ms), target]


def block_p50(values: list[float], blocks: int) -> str:
    """p50 of each consecutive block (as repetitions), in ms."""
    size = max(1, len(values) // blocks)
    meds = [c.pct(values[i : i + size], 50) * 1000 for i in range(0, size * blocks, size)]
    return " / ".join(f"{m:.0f}" for m in meds)


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="40 changes, 10 exports, 5x10 churn")
    p.add_argument("--clusters", type=int, default=2, help="clusters in the clusterset (2 or 3)")
    p.add_argument("--changes", type=int, default=None, help="(i) slice changes (default 200)")
    p.add_argument("--services", type=int, default=20, help="(i) services rotated over")
    p.add_argument("--exports", type=int, default=None, help="(ii) exports (default 50)")
    p.add_argument("--churn-services", type=int, default=None, help="(iii) default 20")
    p.add_argument("--churn-updates", type=int, default=None, help="(iii) default 20")
    p.add_argument("--reps", type=int, default=3, help="(iii) repetitions")
    p.add_argument(
        "--quiet",
        type=float,
        default=None,
        help="subscriber quiet_seconds (default: the subscriber's own default)",
    )
    p.add_argument(
        "--burst-quiet",
        type=float,
        default=None,
        help="subscriber burst_quiet_seconds (default: the subscriber's own default)",
    )
    p.add_argument(
        "--max-delay",
        type=float,
        default=None,
        help="subscriber max_delay_seconds (default: the subscriber's own default)",
    )
    args = p.parse_args()
    changes = args.changes or (40 if args.quick else 200)
    exports = args.exports or (10 if args.quick else 50)
    churn_s = args.churn_services or (5 if args.quick else 20)
    churn_u = args.churn_updates or (10 if args.quick else 20)
    settings = SubscriberSettings()
    if args.quiet is not None:
        settings.quiet_seconds = args.quiet
    if args.burst_quiet is not None:
        settings.burst_quiet_seconds = args.burst_quiet
    if args.max_delay is not None:
        settings.max_delay_seconds = args.max_delay
    c.quiet()
    print(
        f"bench_propagation: {args.clusters} clusters, {changes} slice changes over "
        f"{args.services} services, {exports} exports, churn {churn_s} services x {churn_u} "
        f"updates x {args.reps} reps, quiet_seconds={settings.quiet_seconds}, "
        f"burst_quiet_seconds={settings.burst_quiet_seconds}, "
        f"max_delay_seconds={settings.max_delay_seconds}; {c.machine()}"
    )
    t_start = time.perf_counter()
    async with LocalStack(args.clusters, with_mcsync=False) as stack:
        for name in stack.names:
            await stack.start_member(name, subscriber_settings=settings)
        await asyncio.gather(*(m.wait_ready() for m in stack.members.values()))
        print(f"  stack up in {time.perf_counter() - t_start:.1f} s", flush=True)
        b = Bench(stack)
        await b.start()
        try:
            lat, rts = await b.slice_changes(changes, args.services)
            print(f"  (i) done: p50 {c.pct(lat, 50) * 1000:.0f} ms", flush=True)
            vis, ips = await b.export_to_import(exports)
            print(f"  (ii) done: p50 {c.pct(vis, 50) * 1000:.0f} ms", flush=True)
            names: list[str] = []
            churns: dict[str, list[Obj]] = {"burst": [], "concurrent": []}
            for r in range(args.reps):
                for mode in ("burst", "concurrent"):
                    res = await b.churn(
                        churn_s, churn_u, names, mode == "concurrent", settings.max_delay_seconds
                    )
                    churns[mode].append(res)
                    print(
                        f"  (iii) {mode} rep {r + 1}: writes {res['slice_writes']}, appends "
                        f"{res['appends']}, burst {res['burst_s']:.2f} s (updates of one "
                        f"service {res['gap_ms']:.0f} ms apart), converged "
                        f"{res['converged_s']:.2f} s",
                        flush=True,
                    )
        finally:
            await b.stop()

    print()
    print("latency, ms")
    print(
        c.table(
            ["measurement", "n", "p50", "p90", "p99", "max", "target"],
            [
                lat_row("(i) slice change c1 -> MCS slice on c2 watch", lat, "p50<=100 p99<=300"),
                lat_row("    source slice apply round trip (c1)", rts),
                lat_row("    c1 apply -> event stored in the log", b.to_log),
                lat_row("    event stored -> MCS slice on c2 watch", b.log_to_c2),
                lat_row("    baseline: apply round trip (c2)", b.base_rt),
                lat_row("    baseline: apply -> c2 watch", b.base_vis),
                lat_row("(ii) ServiceExport create -> import on c2", vis, "p50<=100 p99<=300"),
                lat_row("     ... -> import with spec.ips on c2", ips),
                lat_row("     baseline: create round trip (c2)", b.base_create_rt),
                lat_row("     baseline: create -> c2 watch", b.base_create_vis),
            ],
        )
    )
    p50i, p99i = c.pct(lat, 50) * 1000, c.pct(lat, 99) * 1000
    p50e, p99e = c.pct(vis, 50) * 1000, c.pct(vis, 99) * 1000
    base = c.pct(b.base_vis, 50) * 1000
    print(
        f"(i)  p50 {p50i:.0f} ms ({p50i / base:.1f}x the baseline's apply->watch p50 "
        f"{base:.0f} ms), p99 {p99i:.0f} ms: p50 target {c.verdict(p50i <= 100)}, "
        f"p99 target {c.verdict(p99i <= 300)}; p50 per block of {len(lat) // 4}: "
        f"{block_p50(lat, 4)} ms"
    )
    print(
        f"     cluster-2 subscriber per change: {b.per_change[0]:.2f} service reconciles, "
        f"{b.per_change[1]:.2f} EndpointSlice writes"
    )
    print(
        f"(ii) p50 {p50e:.0f} ms, p99 {p99e:.0f} ms: p50 target {c.verdict(p50e <= 100)}, "
        f"p99 target {c.verdict(p99e <= 300)}"
    )
    print()
    for mode, label, target in (
        ("burst", "iii", 1.1),
        ("concurrent", "iv", None),
    ):
        runs = churns[mode]
        print(
            f"({label}) {mode}: EndpointSlice writes per distinct final state (one per service); "
            f"{churn_s} services x {churn_u} updates, updates of one service "
            f"{c.median([r['gap_ms'] for r in runs]):.0f} ms apart (median)"
            + (f"; target <= {target}" if target else "")
        )
        rows = []
        for name in stack.names:
            ratios = [r["slice_writes"][name] / churn_s for r in runs]
            rows.append(
                [
                    f"subscriber in {name}",
                    c.median([r["slice_writes"][name] for r in runs]),
                    c.median(ratios),
                    " / ".join(f"{x:.2f}" for x in ratios),
                    c.median(ratios) / churn_u,
                    c.median([r["kube_writes"][name] / churn_s for r in runs]),
                    c.verdict(c.median(ratios) <= target) if target else "-",
                ]
            )
        print(
            c.table(
                [
                    "cluster",
                    "slice writes",
                    "per final state",
                    "per rep",
                    "per source update",
                    "all writes per final state",
                    "target",
                ],
                rows,
            )
        )
        ap = [r["appends"] / (churn_s * churn_u) for r in runs]
        print(
            f"publisher appends per source update: {c.median(ap):.2f} (median); updates took "
            f"{c.median([r['burst_s'] for r in runs]):.2f} s; first update -> converged "
            f"everywhere {c.median([r['converged_s'] for r in runs]):.2f} s"
        )
        print()


if __name__ == "__main__":
    runtime.tune_gc()  # as every mcsync process does (engine.cli)
    asyncio.run(main())
