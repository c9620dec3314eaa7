"""Prometheus metrics of publishers and subscribers (served on ``/metrics``).

One registry per process component, so several publishers and subscribers can run in one
process (the demo, the tests) without clashing; each metric carries a ``cluster`` label.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.events_in = Counter(
            "mcsync_events_in", "Events read from the log", ["cluster", "type"], registry=r
        )
        self.events_out = Counter(
            "mcsync_events_appended", "Events appended to the log", ["cluster", "type"], registry=r
        )
        self.dead_letters = Counter(
            "mcsync_dead_letters", "Messages set aside as undecodable", ["cluster"], registry=r
        )
        self.unusable = Counter(
            "mcsync_events_unusable",
            "Messages that are not usable events, by kind: invalid, unknown-version (a newer "
            "writer: version skew), refused (speaks for another cluster or key)",
            ["cluster", "kind"],
            registry=r,
        )
        self.readbacks = Counter(
            "mcsync_readbacks",
            "Subjects whose last usable event was read back behind an unusable last message",
            ["cluster"],
            registry=r,
        )
        self.refused = Counter(
            "mcsync_events_refused",
            "Events refused by the fold (foreign cluster, wrong subject)",
            ["cluster"],
            registry=r,
        )
        self.applies = Counter(
            "mcsync_reconciles", "Objects reconciled", ["cluster", "kind"], registry=r
        )
        self.writes = Counter(
            "mcsync_api_writes", "Kubernetes API writes", ["cluster", "kind", "verb"], registry=r
        )
        self.errors = Counter(
            "mcsync_errors", "Errors by kind", ["cluster", "where", "transient"], registry=r
        )
        self.conflicts = Counter(
            "mcsync_append_conflicts", "Compare-and-set appends refused", ["cluster"], registry=r
        )
        self.lag = Histogram(
            "mcsync_apply_lag_seconds",
            "Time from an event's storage in the log to its object applied",
            ["cluster"],
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.ready = Gauge(
            "mcsync_ready", "1 once bootstrapped and reconciled", ["cluster"], registry=r
        )
        self.snapshots = Counter(
            "mcsync_state_snapshots",
            "State snapshots: saved, resumed from at start, or rejected (full bootstrap) by "
            "reason: missing, damaged, format, foreign, stream-recreated, truncated, ahead",
            ["cluster", "outcome", "reason"],
            registry=r,
        )
        self.duplicate_ids = Gauge(
            "mcsync_duplicate_cluster_id",
            "1 while two publishers claim this cluster id",
            ["cluster"],
            registry=r,
        )
