"""Benchmark the JetStream log port: append, follow + fold, and fold alone.

(a) ``EventLog.append_many`` (Nats-Msg-Id, CloudEvents headers, expected-last-subject-sequence)
    against raw nats-py ``js.publish_async`` + ``publish_async_completed()`` of the same payload
    bytes, on fresh streams of the same configuration, alternating in the same run.
(b) ``Follower`` + ``fold.apply`` over N pre-appended events against a raw nats-py ordered
    consumer whose callback only counts, on the same stream; beside them, for the breakdown,
    the Follower's inline delivery with a handler that only counts.
(c) ``fold.apply`` over an in-memory list of envelopes.

Events are realistic (ExportUpserted with three ports, SliceUpserted with ten endpoints), one
export and one slice subject per service, N/4 subjects updated four times.

    .venv/bin/python bench/bench_log.py            # N = 100k, 5 repetitions
    .venv/bin/python bench/bench_log.py --quick    # N = 10k, 3 repetitions
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import _common as c
from nats.js import api

from engine import jetstream, runtime
from engine.core import events as ev
from engine.core import fold as folding
from engine.core import subjects
from engine.jetstream import delivery, wire
from engine.local.natsserver import NatsServer

ROUNDS = 4


class Clock:
    """Wall time and this process's CPU time (the client's share; nats-server is another
    process). CPU time per event is the figure least disturbed by other work on the machine."""

    def __init__(self) -> None:
        self.wall0 = time.perf_counter()
        self.cpu0 = time.process_time()
        self.wall = 0.0
        self.cpu = 0.0

    def stop(self) -> Clock:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0
        return self


def _plan(clusterset: str, n: int) -> list[list[tuple[str, ev.Event]]]:
    """``ROUNDS`` rounds of (subject, event), each round one update of every key."""
    services = max(1, n // ROUNDS // 2)
    return [c.keyed_events(clusterset, services, version=r) for r in range(ROUNDS)]


async def _fresh(log: jetstream.EventLog) -> None:
    with contextlib.suppress(Exception):
        await log.js.delete_stream(log.stream)
    await log.ensure()


async def append_mcsync(nc, clusterset: str, n: int) -> tuple[Clock, int]:
    """Time to append everything with append_many (one call per round), and the count."""
    log = jetstream.EventLog(nc, clusterset)
    await _fresh(log)
    rounds = _plan(clusterset, n)
    last: dict[str, int] = {}
    count = 0
    clock = Clock()
    for items in rounds:
        appends = [jetstream.Append(s, e, last.get(s, 0)) for s, e in items]
        seqs = await log.append_many(appends)
        for a, seq in zip(appends, seqs, strict=True):
            last[a.subject] = seq
        count += len(appends)
    clock.stop()
    info = await log.js.stream_info(log.stream)
    assert info.state.messages == count, (info.state.messages, count)
    await log.js.delete_stream(log.stream)
    return clock, count


async def append_raw(
    nc, clusterset: str, n: int, with_headers: bool, wait_stall: float | None = None
) -> tuple[Clock, int]:
    """Time for raw publish_async of the same payload bytes (optionally the same headers,
    computed before the clock starts), awaiting publish_async_completed() after each round."""
    log = jetstream.EventLog(nc, clusterset)
    await _fresh(log)
    js = nc.jetstream(publish_async_max_pending=4000)
    rounds = _plan(clusterset, n)
    payloads: list[list[tuple[str, bytes, dict[str, str] | None]]] = []
    for r, items in enumerate(rounds):
        row = []
        for s, e in items:
            headers = None
            if with_headers:
                # The same headers append_many sends; the id folds in the round so that an
                # unchanged export is a new message each round, as with append_many.
                _, headers = log._prepare(jetstream.Append(s, e, r))
                headers["Nats-Expected-Last-Subject-Sequence"] = "-"  # filled in below
            row.append((s, ev.encode(e), headers))
        payloads.append(row)
    last: dict[str, int] = {}
    count = 0
    clock = Clock()
    for row in payloads:
        futures = []
        for s, body, headers in row:
            if headers is not None:
                headers["Nats-Expected-Last-Subject-Sequence"] = str(last.get(s, 0))
            futures.append(
                await js.publish_async(
                    s,
                    body,
                    headers=headers,
                    wait_stall=wait_stall,
                )
            )
        await asyncio.wait_for(js.publish_async_completed(), 60)
        for (s, _, _), f in zip(row, futures, strict=True):
            last[s] = f.result().seq
        count += len(row)
    clock.stop()
    info = await js.stream_info(log.stream)
    assert info.state.messages == count, (info.state.messages, count)
    await js.delete_stream(log.stream)
    return clock, count


async def prefill(nc, clusterset: str, n: int) -> tuple[jetstream.EventLog, int]:
    log = jetstream.EventLog(nc, clusterset)
    await _fresh(log)
    last: dict[str, int] = {}
    for items in _plan(clusterset, n):
        appends = [jetstream.Append(s, e, last.get(s, 0)) for s, e in items]
        for a, seq in zip(appends, await log.append_many(appends), strict=True):
            last[a.subject] = seq
    info = await log.js.stream_info(log.stream)
    return log, int(info.state.messages)


async def follow_mcsync(log: jetstream.EventLog, n: int) -> Clock:
    state = folding.ClusterSetState()
    done = asyncio.Event()
    seen = 0

    def on_event(env: folding.Envelope) -> None:
        nonlocal seen
        folding.apply(state, env)
        seen += 1
        if seen >= n:
            done.set()

    f = jetstream.Follower(log, "cluster-1", on_event, start_seq=1)
    clock = Clock()
    await f.start()
    await asyncio.wait_for(done.wait(), 600)
    clock.stop()
    await f.stop()
    assert state.counters.applied == n, state.counters
    return clock


async def follow_counting(log: jetstream.EventLog, n: int, inline: bool = False) -> Clock:
    """An ordered consumer that only counts: nats-py's callback (the raw baseline), or with
    ``inline`` the delivery the Follower uses (``engine.delivery``), which shows what reading
    costs before any decoding or folding."""
    done = asyncio.Event()
    seen = 0

    def count(*_: object) -> None:
        nonlocal seen
        seen += 1
        if seen >= n:
            done.set()

    async def cb(msg) -> None:
        count()

    cfg = api.ConsumerConfig(
        filter_subjects=[subjects.all_subjects(log.clusterset)],
        deliver_policy=api.DeliverPolicy.ALL,
    )
    clock = Clock()
    sub = await log.js.subscribe(
        "", stream=log.stream, config=cfg, cb=cb, ordered_consumer=True, idle_heartbeat=1.0
    )
    if inline:
        delivery.inline(sub, count, count)
    await asyncio.wait_for(done.wait(), 600)
    clock.stop()
    delivery.remove(sub)
    await sub.unsubscribe()
    return clock


def fold_alone(envs: list[folding.Envelope]) -> tuple[float, float]:
    """Events per second of wall time and per second of CPU time."""
    gc.collect()  # start clean: a full collection of the large heap would land in the timing
    state = folding.ClusterSetState()
    apply = folding.apply
    clock = Clock()
    for env in envs:
        apply(state, env)
    clock.stop()
    assert state.counters.applied == len(envs)
    return len(envs) / clock.wall, len(envs) / clock.cpu


def per_event_costs(envs: list[folding.Envelope]) -> list[tuple[str, float]]:
    """CPU microseconds per event of the pure-Python steps on the append and follow paths."""
    log = jetstream.EventLog.__new__(jetstream.EventLog)
    log.clusterset = "bench"
    log.clock = lambda: datetime.now(UTC)
    sample = envs[: min(len(envs), 20_000)]
    appends = [jetstream.Append(e.subject, e.event, 0) for e in sample]
    out: list[tuple[str, float]] = []

    @contextlib.contextmanager
    def step(name: str) -> Iterator[None]:
        gc.collect()
        t0 = time.process_time()
        yield
        out.append((name, time.process_time() - t0))

    with step("EventLog._prepare (encode, id, headers)"):
        prepared = [log._prepare(a) for a in appends]
    with step("  of which msgspec encode"):
        for a in appends:
            ev.encode(a.event)
    with step("  of which ce_encode (2 per event)"):
        for a in appends:
            wire.ce_encode(a.subject)
            wire.ce_encode(f"/mcsync/bench/{a.event.cluster}")
    blocks = [
        b"NATS/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()).encode() + b"\r\n"
        for _, h in prepared
    ]
    with step("jetstream.parse_headers (the follower's header block)"):
        for block in blocks:
            jetstream.parse_headers(block)
    with step("jetstream.decode_message"):
        for e, (body, headers) in zip(sample, prepared, strict=True):
            jetstream.decode_message(e.subject, e.seq, e.time, headers, body)
    with step("subjects.parse (inside fold.apply)"):
        for e in sample:
            subjects.parse(e.subject)
    state = folding.ClusterSetState()
    with step("fold.apply"):
        for e in sample:
            folding.apply(state, e)
    return [(name, dt / len(sample) * 1e6) for name, dt in out]


class Series:
    """Repeated measurements of one variant: events/s (wall) and CPU microseconds per event."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.rate: list[float] = []
        self.cpu_us: list[float] = []

    def add(self, clock: Clock, count: int) -> None:
        self.rate.append(count / clock.wall)
        self.cpu_us.append(clock.cpu / count * 1e6)

    def ratio_to(self, base: Series) -> list[float]:
        return [m / r for m, r in zip(self.rate, base.rate, strict=True)]

    def cpu_ratio_to(self, base: Series) -> float:
        """Throughput ratio implied by client CPU per event (base / self)."""
        return c.median(base.cpu_us) / c.median(self.cpu_us)


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="N=10k, 3 repetitions")
    p.add_argument("-n", type=int, default=None, help="events (default 100k, 10k with --quick)")
    p.add_argument("--reps", type=int, default=None, help="repetitions (default 5, 3 quick)")
    args = p.parse_args()
    n = args.n or (10_000 if args.quick else 100_000)
    reps = args.reps or (3 if args.quick else 5)
    c.quiet()
    print(f"bench_log: N={n:,} events, {reps} repetitions; {c.machine()}")
    envs = c.envelopes("bench", n, ROUNDS)
    sizes = [len(ev.encode(e.event)) for e in envs[:2]]
    print(
        f"event bodies: ExportUpserted {sizes[0]} B, SliceUpserted {sizes[1]} B; "
        f"{n // ROUNDS:,} subjects x {ROUNDS} updates"
    )
    raw = Series("(a) raw publish_async + completed")
    rawh = Series("(a) raw publish_async, same headers")
    raws = Series("(a) ... same headers, wait_stall=10")
    mine = Series("(a) EventLog.append_many")
    fr = Series("(b) raw ordered consumer, counting")
    fm = Series("(b) Follower + fold.apply")
    fi = Series("(b) inline delivery, counting")
    async with NatsServer() as server:
        nc = await jetstream.connect(server.url, name="bench-log")
        try:
            for r in range(reps):
                raw.add(*await append_raw(nc, f"rawa{r}", n, with_headers=False))
                mine.add(*await append_mcsync(nc, f"mine{r}", n))
                rawh.add(*await append_raw(nc, f"rawh{r}", n, with_headers=True))
                raws.add(*await append_raw(nc, f"raws{r}", n, with_headers=True, wait_stall=10))
                print(
                    f"  (a) rep {r + 1}: raw {raw.rate[-1]:,.0f}/s, append_many "
                    f"{mine.rate[-1]:,.0f}/s, raw+headers {rawh.rate[-1]:,.0f}/s, "
                    f"raw+headers+wait_stall {raws.rate[-1]:,.0f}/s",
                    flush=True,
                )
            log, stored = await prefill(nc, "follow", n)
            for r in range(reps):
                fr.add(await follow_counting(log, stored), stored)
                fm.add(await follow_mcsync(log, stored), stored)
                fi.add(await follow_counting(log, stored, inline=True), stored)
                print(
                    f"  (b) rep {r + 1}: raw ordered consumer {fr.rate[-1]:,.0f}/s, "
                    f"Follower+fold {fm.rate[-1]:,.0f}/s, inline delivery alone "
                    f"{fi.rate[-1]:,.0f}/s",
                    flush=True,
                )
        finally:
            await nc.close()

    fa = [fold_alone(envs) for _ in range(max(reps, 5))]
    costs = per_event_costs(envs)
    ra, rb = c.median(mine.ratio_to(raw)), c.median(fm.ratio_to(fr))
    fold_rate = c.median([f[1] for f in fa])
    fold_wall = c.median([f[0] for f in fa])

    def row(s: Series, base: Series | None, target: str = "", ok: bool | None = None) -> list:
        ratio = c.median(s.ratio_to(base)) if base else ""
        cpu_ratio = s.cpu_ratio_to(base) if base else ""
        verdict = "" if ok is None else c.verdict(ok)
        return [s.name, c.median(s.rate), c.median(s.cpu_us), ratio, cpu_ratio, target, verdict]

    print()
    print(
        c.table(
            [
                "figure (median of reps)",
                "events/s",
                "CPU us/ev",
                "ratio",
                "CPU ratio",
                "target",
                "verdict",
            ],
            [
                row(raw, None),
                row(rawh, raw),
                row(raws, raw),
                row(mine, raw, ">= 0.7x", ra >= 0.7),
                row(fr, None),
                row(fm, fr, ">= 0.6x", rb >= 0.6),
                row(fi, fr),
                [
                    "(c) fold.apply in memory (per CPU second)",
                    fold_rate,
                    1e6 / fold_rate,
                    "",
                    "",
                    ">= 200k/s",
                    c.verdict(fold_rate >= 200_000),
                ],
            ],
        )
    )
    print(
        "ratio: median of per-repetition throughput ratios to the raw figure above it; CPU "
        "ratio: raw client CPU per event / this one's (client process only). Spread (min..max): "
        f"(a) {min(mine.ratio_to(raw)):.2f}..{max(mine.ratio_to(raw)):.2f}, "
        f"(b) {min(fm.ratio_to(fr)):.2f}..{max(fm.ratio_to(fr)):.2f}, "
        f"(c) {min(f[1] for f in fa):,.0f}..{max(f[1] for f in fa):,.0f}/s; (c) per wall "
        f"second: {fold_wall:,.0f}/s"
    )
    print()
    print(c.table(["pure-Python step", "CPU us/event"], costs))


if __name__ == "__main__":
    runtime.tune_gc()  # as every mcsync process does (engine.cli)
    asyncio.run(main())
