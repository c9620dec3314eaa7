"""Benchmark what each mcsync process costs just by existing: start-up, idle memory, idle CPU.

One local cluster and one nats-server (``LocalStack`` without mcsync). Each process is started
as a pod would run it (``python -m engine publisher`` / ``subscriber`` / ``member`` with a
kubeconfig and the NATS URL) and measured from the outside through /proc:

- start to ready: from the spawn to the first ``/readyz`` 200 (connections to NATS and the
  apiserver and the bootstrap of an empty clusterset included);
- CPU seconds to start: user + system time of the process when it became ready;
- idle RSS: resident memory after ``--idle`` seconds of idling;
- idle CPU: CPU time over those seconds, as a share of one core, summed over the process's
  threads from ``/proc/<pid>/task/*/schedstat`` (nanoseconds: at 0.1% of a core, 30 s of idling
  are 30 ms, three ticks of ``/proc/<pid>/stat``).

The two ways to run a cluster are compared: a publisher and a subscriber in two processes (two
pods; the row ``publisher + subscriber`` sums them) and both in one process (``mcsync member``,
the chart's ``singleProcess`` mode).

The baseline, measured in the same run, is a Python process that only connects to NATS (nats-py)
and to the apiserver (aiohttp with the kubeconfig's token and CA) and then idles: what any
Python agent with these two connections costs, so the overhead of mcsync itself shows.

    .venv/bin/python bench/bench_footprint.py            # 3 repetitions, 30 s idle
    .venv/bin/python bench/bench_footprint.py --quick    # 1 repetition, 5 s idle
    .venv/bin/python bench/bench_footprint.py --against ../other-checkout   # and its processes

``--against`` also runs the publisher and subscriber of another checkout of mcsync (e.g. the
commit before a change), interleaved with these in every repetition, so both see the same
machine: on a busy machine that comparison holds where absolute times do not.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import _common as c

from engine.local import procs
from engine.localstack import LocalStack

CLK_TCK = os.sysconf("SC_CLK_TCK")
MODES = ("baseline", "publisher", "subscriber", "member")
PAGE = os.sysconf("SC_PAGE_SIZE")

BASELINE = r"""
import asyncio, base64, os, ssl, sys, tempfile
import aiohttp, nats, yaml
from aiohttp import web

async def main() -> None:
    cfg = yaml.safe_load(open(sys.argv[2]))
    cluster = cfg["clusters"][0]["cluster"]
    token = cfg["users"][0]["user"]["token"]
    ca = base64.b64decode(cluster["certificate-authority-data"])
    ctx = ssl.create_default_context(cadata=ca.decode())
    nc = await nats.connect(sys.argv[1])
    session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"})
    async with session.get(cluster["server"] + "/readyz", ssl=ctx) as resp:
        assert resp.status == 200
    app = web.Application()
    app.router.add_get("/readyz", lambda r: web.Response(text="ready"))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(sys.argv[3])).start()
    await asyncio.Event().wait()

asyncio.run(main())
"""


def cpu_seconds(pid: int) -> float:
    """User + system time of the whole process (clock ticks: fine for seconds)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def run_ns(pid: int) -> int:
    """Nanoseconds on a CPU, summed over the process's live threads (for idle figures)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            continue  # a thread that ended meanwhile
    return total


def rss_mib(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=0.5) as r:
            return bool(r.status == 200)
    except OSError:
        return False


async def measure(
    argv: list[str], port: int, idle: float, cwd: str | None = None
) -> tuple[float, float, float, float]:
    """(start to ready s, CPU s to start, idle RSS MiB, idle CPU % of a core)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd)
    try:
        while not ready(port):
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[3:5]} exited with {proc.returncode}")
            if time.monotonic() - t0 > 120:
                raise TimeoutError(f"{argv[3:5]} not ready in 120 s")
            await asyncio.sleep(0.01)
        startup = time.monotonic() - t0
        cpu_start = cpu_seconds(proc.pid)
        await asyncio.sleep(2.0)  # settle
        before, t1 = run_ns(proc.pid), time.monotonic()
        await asyncio.sleep(idle)
        idle_cpu = (run_ns(proc.pid) - before) / 1e9 / (time.monotonic() - t1) * 100
        return startup, cpu_start, rss_mib(proc.pid), idle_cpu
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--idle", type=float, default=30.0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--against", help="another checkout whose processes to measure too")
    args = ap.parse_args()
    if args.quick:
        args.repeat, args.idle = 1, 5.0
    c.quiet()
    print(c.machine())
    async with LocalStack(1, with_mcsync=False, clusterset="bench") as stack:
        assert stack.nats is not None
        kubeconfig = str(stack.kubeconfig("cluster-1"))
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
            f.write(BASELINE)
            baseline_script = f.name
        results: dict[str, list[tuple[float, float, float, float]]] = {}
        # (row, command, checkout): `python -m engine` runs the engine of its working directory.
        spawns: list[tuple[str, str, str | None]] = [(m, m, None) for m in MODES]
        if args.against:
            other = os.path.abspath(args.against)
            spawns += [(f"{m} (--against)", m, other) for m in ("publisher", "subscriber")]
        for _ in range(args.repeat):
            for row, name, cwd in spawns:
                port = procs.free_port()
                if name == "baseline":
                    argv = [sys.executable, baseline_script, stack.nats.url, kubeconfig, str(port)]
                else:
                    argv = [
                        sys.executable, "-m", "engine", name,
                        "--nats-url", stack.nats.url, "--kubeconfig", kubeconfig,
                        "--clusterset", "bench", "--health-port", str(port),
                        "--log-level", "warning",
                    ]  # fmt: skip
                results.setdefault(row, []).append(await measure(argv, port, args.idle, cwd))
        os.unlink(baseline_script)
    # The two-process way, per repetition: both start at once (the slower one is ready last), and
    # their CPU and memory add up.
    results["publisher + subscriber"] = [
        (max(p[0], s[0]), p[1] + s[1], p[2] + s[2], p[3] + s[3])
        for p, s in zip(results["publisher"], results["subscriber"], strict=True)
    ]
    order = ["baseline", "publisher", "subscriber", "publisher + subscriber", "member"]
    order += [row for row in results if row.endswith("(--against)")]
    base = [c.median([r[i] for r in results["baseline"]]) for i in range(4)]
    rows = []
    for name in order:
        runs = results[name]
        med = [c.median([r[i] for r in runs]) for i in range(4)]
        rows.append(
            [
                name,
                f"{med[0]:.2f} ({med[0] / base[0]:.1f}x)",
                f"{med[1]:.2f} ({med[1] / base[1]:.1f}x)",
                f"{med[2]:.0f} ({med[2] / base[2]:.1f}x)",
                f"{med[3]:.3f}",
            ]
        )
    print(f"medians of {args.repeat}, idle {args.idle:.0f} s; (ratio to the baseline process)")
    print(
        c.table(
            [
                "process",
                "start to ready (s)",
                "CPU s to start",
                "idle RSS (MiB)",
                "idle CPU (% of a core)",
            ],
            rows,
        )
    )
    print("member / (publisher + subscriber), medians:", end="")
    pair, member = results["publisher + subscriber"], results["member"]
    for i, what in enumerate(("start", "CPU s to start", "idle RSS", "idle CPU")):
        ratio = c.median([r[i] for r in member]) / c.median([r[i] for r in pair])
        print(f" {what} {ratio:.2f}", end=";" if i < 3 else "\n")
    print("targets (#17): start to ready <= 1.5 s, idle RSS <= 50 MiB, idle CPU <= 0.1%")


if __name__ == "__main__":
    asyncio.run(main())
