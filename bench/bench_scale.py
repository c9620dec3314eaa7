"""Benchmark a clusterset at scale: C clusters each exporting the same S services with E endpoints
each (one source EndpointSlice per service and cluster), read by one subscriber.

Each phase beside a raw baseline measured in the same run:

(1) append      EventLog.append_many of every export and slice   | nats-py publish_async of the
                                                                   same bodies (another stream)
(2) cold        Follower + fold from LAST_PER_SUBJECT to caught up | a raw nats-py ordered
    catch-up                                                       consumer reading the same
                                                                   messages (no decode)
(3) warm        load + verify the saved state, then follow the     | reading the state file plus
    restart     events after its position (1% of the slices        | a raw ordered consumer
                changed meanwhile)                                 | reading the same tail
(4) memory      RSS growth of a fresh process folding the log, and  | the bytes of the live
                of one loading the state file, per endpoint record | messages per endpoint record
(5) plan        the desired objects of every service, one service  | JSON-encoding the same
                at a time (peak traced memory vs all at once)       | objects
(6) materialize a Subscriber into a real kube-apiserver from empty  | a minimal server-side apply
                to ready (its first drain)                          | loop, same objects and
                                                                    | concurrency, another apiserver

Figures are medians of ``--reps`` where a phase repeats; CPU is this process's (nats-server and
kube-apiserver run apart). Benchmarks print figures; they are not tests.

    .venv/bin/python bench/bench_scale.py                     # 10 x 200 x 10
    .venv/bin/python bench/bench_scale.py --clusters 100 --services 2000 --endpoints 10
    .venv/bin/python bench/bench_scale.py --quick             # 4 x 100 x 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Coroutine, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _common as c
import msgspec
from nats.js import api

from engine import jetstream, kube, runtime
from engine.core import events as ev
from engine.core import fold, inventory, mcs, plan, subjects
from engine.core.fold import Envelope
from engine.local import controlplane
from engine.local.natsserver import NatsServer
from engine.observe.metrics import Metrics
from subscribers import warmstart
from subscribers.subscriber import Subscriber, SubscriberSettings

CLUSTERSET = "scale"
RAW_STREAM = "SCALERAW"
LOCAL = "scale-local"  # the cluster the subscriber materializes into (not an exporter)
BATCH = 20_000
HOLD_ALL_UP_TO = 50_000
CHANGED = 0.01


def rss_kib() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in KiB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, value = line.split(":", 1)
            out[key] = int(value.split()[0])
    return out["VmRSS"], out["VmHWM"]


class Timer:
    """Wall and CPU seconds of a block."""

    def __enter__(self) -> Timer:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0


# --- the clusterset ------------------------------------------------------------------------


def cluster_names(n: int) -> list[str]:
    return [f"cluster-{i + 1}" for i in range(n)]


def clusterset_events(
    clusters: int, services: int, endpoints: int
) -> Iterator[tuple[str, ev.Event]]:
    """(subject, event): membership, then each cluster's exports and slices (generated as
    they are appended: at 100 x 2,000 x 10 the decoded events alone would take gigabytes)."""
    for name in cluster_names(clusters):
        joined = ev.ClusterJoined(cluster=name, clusterset=CLUSTERSET)
        yield (subjects.cluster(CLUSTERSET, name), joined)
        for i in range(services):
            e = c.export_event(name, i)
            s = c.slice_event(name, i, endpoints=endpoints)
            yield (subjects.export(CLUSTERSET, name, e.namespace, e.name), e)
            yield (subjects.endpoint_slice(CLUSTERSET, name, s.namespace, s.service, s.name), s)


def batches(items: Iterable[tuple[str, ev.Event]]) -> Iterator[list[tuple[str, ev.Event]]]:
    chunk: list[tuple[str, ev.Event]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == BATCH:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def changes(clusters: int, services: int, endpoints: int) -> list[tuple[str, ev.Event]]:
    """A new version of 1% of the source slices (at least one)."""
    pairs = [(name, i) for name in cluster_names(clusters) for i in range(services)]
    step = max(1, round(1 / CHANGED))
    out: list[tuple[str, ev.Event]] = []
    for name, i in pairs[::step]:
        s = c.slice_event(name, i, version=1, endpoints=endpoints)
        out.append((subjects.endpoint_slice(CLUSTERSET, name, s.namespace, s.service, s.name), s))
    return out


async def append_all(elog: jetstream.EventLog, items: Iterable[tuple[str, ev.Event]]) -> int:
    """Append every event, ``BATCH`` at a time; how many."""
    n = 0
    for chunk in batches(items):
        await elog.append_many([jetstream.Append(s, e) for s, e in chunk], ack_timeout=60)
        n += len(chunk)
    return n


async def raw_append(js: Any, items: Iterable[tuple[str, ev.Event]]) -> tuple[float, int]:
    """nats-py's own async publish of the same bodies (encoded before the clock runs), every
    future awaited, ``BATCH`` at a time; (seconds, bytes of the bodies)."""
    elapsed = 0.0
    size = 0
    n = 0
    for chunk in batches(items):
        bodies = [(f"scaleraw.{n + i}", ev.encode(e)) for i, (_, e) in enumerate(chunk)]
        n += len(chunk)
        size += sum(len(b) for _, b in bodies)
        t0 = time.perf_counter()
        futures = [
            await js.publish_async(subject, body, stream=RAW_STREAM) for subject, body in bodies
        ]
        await asyncio.wait_for(asyncio.gather(*futures), 120)
        elapsed += time.perf_counter() - t0
    return elapsed, size


def same_state(a: fold.ClusterSetState, b: fold.ClusterSetState) -> bool:
    """Equal folded states, compared packed (no decoding of millions of endpoints)."""
    return (
        a.position == b.position
        and a.last_seq == b.last_seq
        and {k: v.packed() for k, v in a.exports.items()}
        == {k: v.packed() for k, v in b.exports.items()}
        and {k: {c: m.packed() for c, m in v.items()} for k, v in a.slices.items()}
        == {k: {c: m.packed() for c, m in v.items()} for k, v in b.slices.items()}
        and a.leases == b.leases
        and {c: (r.info, r.left, r.last_heartbeat) for c, r in a.clusters.items()}
        == {c: (r.info, r.left, r.last_heartbeat) for c, r in b.clusters.items()}
    )


# --- reading -------------------------------------------------------------------------------


async def follow(
    elog: jetstream.EventLog, state: fold.ClusterSetState, start_seq: int | None = None
) -> int:
    """Fold the log into ``state`` until caught up; how many envelopes were read."""
    read = 0

    def on_event(env: Envelope) -> None:
        nonlocal read
        read += 1
        fold.apply(state, env)

    follower = jetstream.Follower(elog, "bench", on_event, start_seq=start_seq)
    await follower.start()
    try:
        await follower.caught_up.wait()
    finally:
        await follower.stop()
    return read


async def raw_read(js: Any, expected: int, start_seq: int | None = None) -> int:
    """A plain nats-py ordered consumer (LAST_PER_SUBJECT, or from ``start_seq``) until it has
    delivered ``expected`` messages; it touches each message's bytes and nothing more."""
    done = asyncio.Event()
    got = 0
    size = 0

    async def cb(msg: Any) -> None:
        nonlocal got, size
        got += 1
        size += len(msg.data)
        if got >= expected:
            done.set()

    cfg = api.ConsumerConfig(filter_subjects=[subjects.all_subjects(CLUSTERSET)])
    if start_seq is None:
        cfg.deliver_policy = api.DeliverPolicy.LAST_PER_SUBJECT
    else:
        cfg.deliver_policy = api.DeliverPolicy.BY_START_SEQUENCE
        cfg.opt_start_seq = start_seq
    sub = await js.subscribe(
        "", stream=subjects.stream_name(CLUSTERSET), config=cfg, cb=cb, ordered_consumer=True
    )
    try:
        if expected:
            await asyncio.wait_for(done.wait(), 600)
    finally:
        await sub.unsubscribe()
    return got


# --- the memory of a fresh process (--child) -----------------------------------------------


async def child(mode: str, url: str, path: str) -> None:
    """Run in a fresh process: fold the log (``fold``) or load the state file (``load``) and
    print the RSS before and after, so earlier phases' garbage does not blur the figure."""
    runtime.tune_gc()
    nc = await jetstream.connect(url)
    elog = jetstream.EventLog(nc, CLUSTERSET)
    gc.collect()
    rss0, _ = rss_kib()
    with Timer() as t:
        if mode == "fold":
            state = fold.ClusterSetState()
            await follow(elog, state)
        else:
            restored = await warmstart.load(elog, Path(path), "bench")
            assert restored is not None, "the state file did not verify"
            state = restored.state
    gc.collect()
    rss1, hwm = rss_kib()
    await nc.close()
    print(
        json.dumps(
            {"rss0": rss0, "rss1": rss1, "hwm": hwm, "wall": t.wall, "keys": len(state.last_seq)}
        )
    )


def in_child(mode: str, url: str, path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, url, str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# --- planning ------------------------------------------------------------------------------

ALLOCATED = plan.Allocated(("10.96.0.10",), ("IPv4",))


def plan_one(
    state: fold.ClusterSetState, key: tuple[str, str], admitted: frozenset[str]
) -> dict[plan.ObjKey, plan.Obj]:
    exports = state.exports.get(key, {})
    view = mcs.view(key[0], key[1], exports, admitted, admitted)
    return plan.desired_for_service(
        LOCAL, view, state.slices.get(key, {}), exports, namespace_exists=True, allocated=ALLOCATED
    )


def plan_phase(state: fold.ClusterSetState) -> dict[str, float]:
    admitted = frozenset(inventory.members(state))
    keys = list(state.exports)
    encode = msgspec.json.encode
    with Timer() as t:
        objects = 0
        for key in keys:
            objects += len(plan_one(state, key, admitted))
    # The same, traced: the peak of one service at a time, then of holding them all.
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for key in keys:
        plan_one(state, key, admitted)
    streaming_peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.reset_peak()
    all_at_once = math.nan
    if objects <= HOLD_ALL_UP_TO:  # beyond, holding them all is what costs gigabytes
        held = [plan_one(state, key, admitted) for key in keys]
        all_at_once = tracemalloc.get_traced_memory()[0] - base
        del held
    tracemalloc.stop()
    raw_wall = raw_cpu = 0.0
    for key in keys:
        desired = plan_one(state, key, admitted)
        w0, c0 = time.perf_counter(), time.process_time()
        for obj in desired.values():
            encode(obj)
        raw_wall += time.perf_counter() - w0
        raw_cpu += time.process_time() - c0
    return {
        "services": len(keys),
        "objects": objects,
        "wall": t.wall,
        "cpu": t.cpu,
        "streaming_peak": streaming_peak,
        "all_at_once": all_at_once,
        "raw_wall": raw_wall,
        "raw_cpu": raw_cpu,
    }


# --- materializing -------------------------------------------------------------------------

MATERIALIZED_KINDS = ("Service", "ServiceImport", "ServiceImportStatus", "EndpointSlice")


async def prepare_cluster(k: kube.Kube, namespaces: list[str]) -> None:
    await kube.install_crds(k)
    for ns in [*namespaces, "mcsync-system"]:
        await k.create(kube.NAMESPACES, {"metadata": {"name": ns}})


async def raw_apply_loop(
    k: kube.Kube, state: fold.ClusterSetState, concurrency: int
) -> dict[str, float]:
    """The minimal writer of the same objects: per service, apply the derived Service, take its
    ClusterIP from the answer, then apply the import, its status and the slices; ``concurrency``
    services at once, as the subscriber."""
    admitted = frozenset(inventory.members(state))
    sem = asyncio.Semaphore(concurrency)
    writes = 0

    async def one(key: tuple[str, str]) -> None:
        nonlocal writes
        async with sem:
            exports = state.exports.get(key, {})
            view = mcs.view(key[0], key[1], exports, admitted, admitted)
            slices = state.slices.get(key, {})
            first = plan.desired_for_service(LOCAL, view, slices, exports, True, None)
            allocated = None
            for okey, obj in first.items():
                if okey[0] == "Service":
                    got = await k.apply(kube.SERVICES, obj)
                    writes += 1
                    spec = got["spec"]
                    allocated = plan.Allocated(
                        tuple(spec["clusterIPs"]), tuple(spec.get("ipFamilies") or ())
                    )
            desired = plan.desired_for_service(LOCAL, view, slices, exports, True, allocated)
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            for okey, obj in desired.items():
                kind = okey[0]
                if kind == "ServiceImport":
                    await k.apply(kube.SERVICE_IMPORTS, obj)
                elif kind == "ServiceImportStatus":
                    status = dict(obj["status"])
                    status["conditions"] = plan.with_transition_times(
                        status["conditions"], None, now
                    )
                    await k.apply(kube.SERVICE_IMPORTS, {**obj, "status": status}, "status")
                elif kind == "EndpointSlice":
                    await k.apply(kube.ENDPOINT_SLICES, obj)
                else:
                    continue
                writes += 1

    # The import before its status and slices: order them as the subscriber does.
    with Timer() as t:
        await asyncio.gather(*(one(key) for key in state.exports))
    return {"writes": writes, "wall": t.wall, "cpu": t.cpu}


def _writes(metrics: Metrics) -> float:
    writes = 0.0
    for metric in metrics.writes.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels["kind"] in MATERIALIZED_KINDS:
                writes += sample.value
    return writes


async def materialize_child(url: str, kubeconfig: str, concurrency: int, limit: float) -> None:
    """In a fresh process: a Subscriber into the apiserver of ``kubeconfig`` from empty to
    ready (its bootstrap, then its first drain), at most ``limit`` seconds; prints its
    progress to stderr every 30 s and the figures as JSON, with the RSS of the process before
    the subscriber started, once caught up (the folded state, empty caches) and once ready
    (everything it needs to reconcile)."""
    runtime.tune_gc()
    nc = await jetstream.connect(url)
    elog = jetstream.EventLog(nc, CLUSTERSET, timeout=30)
    api_client = await kube.load_client(kubeconfig)
    metrics = Metrics()
    settings = SubscriberSettings(concurrency=concurrency, staleness_policy="keep")
    sub = Subscriber(kube.Kube(api_client), elog, LOCAL, metrics=metrics, settings=settings)
    gc.collect()
    rss0, _ = rss_kib()
    t0, cpu0 = time.perf_counter(), time.process_time()
    task = asyncio.create_task(sub.run())
    out: dict[str, Any] = {"rss0": rss0, "ready": False}
    try:
        await asyncio.wait_for(sub.follower.caught_up.wait(), limit)
        t1, cpu1 = time.perf_counter(), time.process_time()
        out.update(catchup_wall=t1 - t0, catchup_cpu=cpu1 - cpu0, rss_caught_up=rss_kib()[0])
        while not sub.ready.is_set():
            left = limit - (time.perf_counter() - t0)
            if left <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sub.ready.wait(), min(30.0, left))
            elapsed = time.perf_counter() - t1
            print(
                f"    materializing: {elapsed:.0f} s, {_writes(metrics):,.0f} writes, "
                f"{_writes(metrics) / elapsed:.1f}/s, RSS {rss_kib()[0] / 1024:.0f} MiB",
                file=sys.stderr,
                flush=True,
            )
        t2, cpu2 = time.perf_counter(), time.process_time()
        out.update(ready=sub.ready.is_set(), drain_wall=t2 - t1, drain_cpu=cpu2 - cpu1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    gc.collect()
    rss1, hwm = rss_kib()
    cached = sum(len(i.cache) for i in (sub.imports, sub.services, sub.slices))
    out.update(writes=_writes(metrics), rss1=rss1, hwm=hwm, cached=cached)
    await api_client.close()
    await nc.close()
    print(json.dumps(out))


async def materialize(url: str, kubeconfig: Path, concurrency: int, limit: float) -> dict[str, Any]:
    """:func:`materialize_child` in a fresh process, so that this one's state and garbage do
    not blur its memory."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--child",
        "materialize",
        url,
        str(kubeconfig),
        str(concurrency),
        str(limit),
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the materialize child failed ({proc.returncode})")
    result: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
    return result


# --- the run -------------------------------------------------------------------------------


async def timed(reps: int, run: Callable[[], Coroutine[Any, Any, Any]]) -> list[Timer]:
    out = []
    for _ in range(reps):
        gc.collect()
        with Timer() as t:
            await run()
        out.append(t)
    return out


def med(ts: list[Timer], what: str = "wall") -> float:
    return c.median([getattr(t, what) for t in ts])


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--clusters", type=int, default=None, help="exporting clusters (10)")
    p.add_argument("--services", type=int, default=None, help="services per cluster (200)")
    p.add_argument("--endpoints", type=int, default=None, help="endpoints per slice (10)")
    p.add_argument("--reps", type=int, default=3, help="repetitions of the reading phases")
    p.add_argument("--quick", action="store_true", help="4 x 100 x 10")
    p.add_argument(
        "--no-materialize", action="store_true", help="skip (6), which needs kube-apiserver"
    )
    p.add_argument(
        "--no-raw-apply",
        action="store_true",
        help="(6) without its baseline (at 100 clusters each side takes many minutes)",
    )
    p.add_argument(
        "--only-materialize",
        action="store_true",
        help="(1) and (6) only: the log is appended and folded once, (2) to (5) are skipped",
    )
    p.add_argument(
        "--materialize-limit",
        type=float,
        default=3600.0,
        help="stop (6) after this many seconds and report what it got (partial)",
    )
    p.add_argument("--concurrency", type=int, default=SubscriberSettings.concurrency)
    # ./dev bench hands every benchmark the same arguments: ignore the others' options.
    args, _ = p.parse_known_args()
    clusters = args.clusters or (4 if args.quick else 10)
    services = args.services or (100 if args.quick else 200)
    endpoints = args.endpoints or 10
    records = clusters * services * endpoints
    c.quiet()
    print(
        f"bench_scale: {clusters} clusters x {services} services x {endpoints} endpoints = "
        f"{records:,} endpoint records, {args.reps} reps; {c.machine()}",
        flush=True,
    )
    rows: list[list[object]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="mcsync-scale-") as tmp:
        state_path = Path(tmp) / "state"
        async with NatsServer(store_dir=Path(tmp) / "nats") as server:
            nc = await jetstream.connect(server.url)
            elog = jetstream.EventLog(nc, CLUSTERSET, timeout=30)
            await elog.ensure()
            js = nc.jetstream(publish_async_max_pending=4000)
            await js.add_stream(api.StreamConfig(name=RAW_STREAM, subjects=["scaleraw.>"]))

            # (1) append
            with Timer() as t_app:
                live = await append_all(elog, clusterset_events(clusters, services, endpoints))
            raw_wall, live_bytes = await raw_append(
                js, clusterset_events(clusters, services, endpoints)
            )
            await js.delete_stream(RAW_STREAM)
            rows.append(
                [
                    "(1) append, events/s",
                    live / t_app.wall,
                    live / raw_wall,
                    raw_wall / t_app.wall,
                    f"{t_app.wall:.1f} s wall, {t_app.cpu:.1f} s CPU (generating the events "
                    "included; raw: bodies encoded before the clock)",
                ]
            )
            print(f"  (1) appended {live:,} events in {t_app.wall:.1f} s", flush=True)

            if args.only_materialize:
                cold_state = fold.ClusterSetState()
                with Timer() as t_fold:
                    await follow(elog, cold_state)
                print(f"  folded the log once in {t_fold.wall:.1f} s", flush=True)
            else:
                # (2) cold catch-up
                cold_state = fold.ClusterSetState()

                async def cold() -> None:
                    nonlocal cold_state
                    cold_state = fold.ClusterSetState()
                    await follow(elog, cold_state)

                t_cold = await timed(args.reps, cold)
                t_raw = await timed(args.reps, lambda: raw_read(js, live))
                rows.append(
                    [
                        "(2) cold catch-up, s",
                        med(t_cold),
                        med(t_raw),
                        med(t_cold) / med(t_raw),
                        f"CPU {med(t_cold, 'cpu'):.2f} s (raw {med(t_raw, 'cpu'):.2f} s); "
                        f"{live / med(t_cold):,.0f} keys/s",
                    ]
                )
                print(f"  (2) cold catch-up {med(t_cold):.2f} s", flush=True)

                # (3) warm restart: save, change 1%, resume
                saver = warmstart.Saver(elog, state_path, "bench")
                await saver.identify()
                with Timer() as t_save:
                    saver.save(cold_state, None)
                size = state_path.stat().st_size
                position = cold_state.position
                changed = changes(clusters, services, endpoints)
                await append_all(elog, changed)
                print(f"  (3) state saved, {len(changed):,} slices changed", flush=True)
                warm_state = fold.ClusterSetState()
                tail = 0

                async def warm() -> None:
                    nonlocal warm_state, tail
                    restored = await warmstart.load(elog, state_path, "bench")
                    assert restored is not None
                    warm_state = restored.state
                    tail = await follow(elog, warm_state, start_seq=restored.position + 1)

                async def raw_warm() -> None:
                    await asyncio.to_thread(state_path.read_bytes)
                    await raw_read(js, len(changed), start_seq=position + 1)

                t_warm = await timed(args.reps, warm)
                t_raw_warm = await timed(args.reps, raw_warm)
                t_cold2 = await timed(1, cold)
                same = same_state(warm_state, cold_state)
                rows.append(
                    [
                        "(3) warm restart (1% changed), s",
                        med(t_warm),
                        med(t_raw_warm),
                        med(t_warm) / med(t_raw_warm),
                        f"CPU {med(t_warm, 'cpu'):.2f} s; read {tail:,} events; cold on the same "
                        f"log {med(t_cold2):.2f} s; same state as cold: {same}",
                    ]
                )
                notes.append(
                    f"state file {size / 2**20:.1f} MiB ({size / records:.0f} B per endpoint "
                    f"record), saved in {t_save.wall:.2f} s ({t_save.cpu:.2f} s CPU)"
                )
                print(f"  (3) warm restart {med(t_warm):.2f} s", flush=True)

                # (4) memory per endpoint record, in fresh processes
                m_fold = in_child("fold", server.url, state_path)
                saver.saved_position = -1
                saver.save(cold_state, None)
                m_load = in_child("load", server.url, state_path)
                per_fold = (m_fold["rss1"] - m_fold["rss0"]) * 1024 / records
                per_load = (m_load["rss1"] - m_load["rss0"]) * 1024 / records
                rows.append(
                    [
                        "(4) RSS per endpoint record, B",
                        per_fold,
                        live_bytes / records,
                        per_fold / (live_bytes / records),
                        f"after loading the state file {per_load:.0f} B (peak "
                        f"{(m_load['hwm'] - m_load['rss0']) * 1024 / records:.0f} B); "
                        f"fold peak {(m_fold['hwm'] - m_fold['rss0']) * 1024 / records:.0f} B",
                    ]
                )
                print(f"  (4) {per_fold:.0f} B per endpoint record", flush=True)

                # (5) plan
                pl = plan_phase(cold_state)
                rows.append(
                    [
                        "(5) plan every service, s",
                        pl["wall"],
                        pl["raw_wall"],
                        pl["wall"] / pl["raw_wall"],
                        f"CPU {pl['cpu']:.2f} s, {pl['objects']:,.0f} objects, "
                        f"{pl['wall'] / pl['services'] * 1e6:.0f} us per service; traced peak one "
                        f"at a time {pl['streaming_peak'] / 2**20:.1f} MiB, all at once "
                        f"{pl['all_at_once'] / 2**20:.1f} MiB",
                    ]
                )
                print(f"  (5) plan {pl['wall']:.2f} s", flush=True)
                del warm_state

            # (6) materialize
            if not args.no_materialize:
                namespaces = sorted({k[0] for k in cold_state.exports})
                # The raw loop runs before and after the subscriber, each into an empty
                # apiserver of its own: the machine's load drifts, and the two brackets show it.
                names = ["scale-mcsync"]
                if not args.no_raw_apply:
                    names = ["scale-raw-1", *names, "scale-raw-2"]
                async with controlplane.LocalClusters(names) as lc:
                    clients = []
                    for cl in lc.clusters:
                        clients.append(await kube.load_client(cl.kubeconfig_path))
                    try:
                        ks = {
                            n: kube.Kube(a, field_manager="bench-raw" if "raw" in n else "mcsync")
                            for n, a in zip(names, clients, strict=True)
                        }
                        for k in ks.values():
                            await prepare_cluster(k, namespaces)
                        raws: list[dict[str, float]] = []
                        if not args.no_raw_apply:
                            raws.append(
                                await raw_apply_loop(
                                    ks["scale-raw-1"], cold_state, args.concurrency
                                )
                            )
                            print(f"  (6) raw apply loop {raws[0]['wall']:.1f} s", flush=True)
                        (mine,) = [cl for cl in lc.clusters if cl.name == "scale-mcsync"]
                        mat = await materialize(
                            server.url,
                            mine.kubeconfig_path,
                            args.concurrency,
                            args.materialize_limit,
                        )
                        print(f"  (6) subscriber {mat.get('drain_wall', 0):.1f} s", flush=True)
                        if not args.no_raw_apply:
                            raws.append(
                                await raw_apply_loop(
                                    ks["scale-raw-2"], cold_state, args.concurrency
                                )
                            )
                            print(f"  (6) raw apply loop {raws[1]['wall']:.1f} s", flush=True)
                    finally:
                        for a in clients:
                            await a.close()
                raw = {
                    k: sum(r[k] for r in raws) / len(raws) if raws else math.nan
                    for k in ("writes", "wall", "cpu")
                }
                if raws:
                    notes.append(
                        "(6) raw apply loop before / after the subscriber: "
                        + " / ".join(f"{r['writes'] / r['wall']:.1f} writes/s" for r in raws)
                    )
                drain = mat.get("drain_wall", math.nan)
                rate = mat["writes"] / drain
                raw_rate = raw["writes"] / raw["wall"]
                rows.append(
                    [
                        "(6) materialize, writes/s"
                        + ("" if mat["ready"] else " (PARTIAL: stopped before ready)"),
                        rate,
                        raw_rate,
                        rate / raw_rate,
                        f"{mat['writes']:,.0f} writes (raw {raw['writes']:,.0f}) in "
                        f"{drain:.1f} s (raw {raw['wall']:.1f} s); CPU per write "
                        f"{mat.get('drain_cpu', math.nan) / max(mat['writes'], 1) * 1000:.2f} ms "
                        f"(raw {raw['cpu'] / max(raw['writes'], 1) * 1000:.2f} ms); bootstrap "
                        f"{mat.get('catchup_wall', math.nan):.1f} s "
                        f"({mat.get('catchup_cpu', math.nan):.1f} s CPU); start to ready "
                        f"{mat.get('catchup_wall', math.nan) + drain:.1f} s",
                    ]
                )
                kib = 1024 / records
                rows.append(
                    [
                        "(6) subscriber RSS per endpoint record, B",
                        (mat["rss1"] - mat["rss0"]) * kib,
                        live_bytes / records,
                        (mat["rss1"] - mat["rss0"]) * kib / (live_bytes / records),
                        f"in a fresh process: {(mat['rss1'] - mat['rss0']) / 1024:.0f} MiB "
                        f"after the first drain, {mat['cached']:,} objects cached; once caught "
                        f"up (state only) {(mat.get('rss_caught_up', 0) - mat['rss0']) * kib:.0f}"
                        f" B; peak {(mat['hwm'] - mat['rss0']) * kib:.0f} B",
                    ]
                )
            await nc.close()

    print()
    print(
        c.table(
            ["phase", "mcsync", "raw baseline", "mcsync / raw", "notes"],
            rows,
        )
    )
    for n in notes:
        print(f"  {n}")
    print(
        "  raw baselines: (1) nats-py publish_async of the same bodies, (2)/(3) a nats-py "
        "ordered consumer counting the same messages (3: plus reading the state file), (4) the "
        "live messages' bodies, (5) JSON-encoding the planned objects, (6) a server-side apply "
        "loop of the same objects into a second apiserver, same concurrency"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child" and sys.argv[2] == "materialize":
        asyncio.run(
            materialize_child(sys.argv[3], sys.argv[4], int(sys.argv[5]), float(sys.argv[6]))
        )
    elif len(sys.argv) > 1 and sys.argv[1] == "--child":
        asyncio.run(child(sys.argv[2], sys.argv[3], sys.argv[4]))
    else:
        runtime.tune_gc()  # as every mcsync process does (engine.cli)
        asyncio.run(main())
