"""Helpers shared by the benchmarks: statistics, tables, realistic events, quiet logs."""

from __future__ import annotations

import gc
import math
import os
import platform
import statistics
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from engine.core import events as ev
from engine.core import subjects
from engine.core.fold import Envelope
from engine.observe import logs


def quiet() -> None:
    """Only warnings and errors from mcsync's own logging (its info lines would flood stderr)."""
    logs.configure(level="warning", json=False)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def pct(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), linear interpolation between closest ranks."""
    if not values:
        return math.nan
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table, right-aligned numbers."""
    cells = [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "  ".join(
        h.ljust(w) if i == 0 else h.rjust(w)
        for i, (h, w) in enumerate(zip(headers, widths, strict=True))
    )
    out = [line, "-" * len(line)]
    for r in cells:
        out.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    return "\n".join(out)


def _fmt(v: object) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    return (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, load average {load:.2f} at start, "
        f"gc thresholds {gc.get_threshold()}"
    )


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


# --- realistic events ----------------------------------------------------------------------

CREATED = datetime(2026, 1, 1, tzinfo=UTC)


def export_event(cluster: str, i: int) -> ev.ExportUpserted:
    """An exported ClusterSetIP service with three ports, labels and an annotation."""
    return ev.ExportUpserted(
        cluster=cluster,
        namespace=f"team-{i % 40}",
        name=f"svc-{i}",
        uid=f"3f0b6c1e-0000-4000-8000-{i:012d}",
        created=CREATED + timedelta(seconds=i),
        ports=(
            ev.Port(80, "TCP", "http"),
            ev.Port(443, "TCP", "https", "kubernetes.io/h2c"),
            ev.Port(9090, "TCP", "metrics"),
        ),
        session_affinity="None",
        internal_traffic_policy="Cluster",
        ip_families=("IPv4",),
        exported_labels={"app": f"svc-{i}", "tier": "backend"},
        exported_annotations={"owner": "team"},
    )


def slice_event(cluster: str, i: int, version: int = 0, endpoints: int = 10) -> ev.SliceUpserted:
    """A source EndpointSlice of ``svc-i`` with ``endpoints`` ready endpoints in two zones."""
    return ev.SliceUpserted(
        cluster=cluster,
        namespace=f"team-{i % 40}",
        service=f"svc-{i}",
        name=f"svc-{i}-x7k2p",
        address_type="IPv4",
        endpoints=tuple(
            ev.Endpoint(
                addresses=(f"10.{(i >> 8) & 255}.{i & 255}.{(j + version) % 250 + 1}",),
                ready=True,
                serving=True,
                terminating=False,
                hostname=None,
                zone=f"zone-{j % 2}",
                node_name=f"node-{(i + j) % 50}",
            )
            for j in range(endpoints)
        ),
        ports=(
            ev.EndpointPort(8080, "TCP", "http"),
            ev.EndpointPort(8443, "TCP", "https"),
            ev.EndpointPort(9090, "TCP", "metrics"),
        ),
    )


def keyed_events(
    clusterset: str, services: int, version: int = 0, clusters: int = 2
) -> list[tuple[str, ev.Event]]:
    """(subject, event) for ``services`` services: one export and one slice each, the
    services spread round robin over ``clusters`` writer clusters."""
    out: list[tuple[str, ev.Event]] = []
    for i in range(services):
        c = f"cluster-{i % clusters + 1}"
        e = export_event(c, i)
        s = slice_event(c, i, version)
        out.append((subjects.export(clusterset, c, e.namespace, e.name), e))
        out.append((subjects.endpoint_slice(clusterset, c, s.namespace, s.service, s.name), s))
    return out


def envelopes(clusterset: str, n: int, rounds: int = 4) -> list[Envelope]:
    """``n`` envelopes in log order: ``rounds`` updates of n/rounds keys."""
    keys = max(2, n // rounds)
    out: list[Envelope] = []
    seq = 0
    t = datetime(2026, 1, 1, tzinfo=UTC)
    for r in range(rounds):
        for subject, event in keyed_events(clusterset, keys // 2, version=r):
            seq += 1
            out.append(Envelope(seq, subject, t + timedelta(microseconds=seq), event))  # type: ignore[arg-type]
    return out[:n]
