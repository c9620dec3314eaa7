"""Process-wide settings of a long-running mcsync process (publisher, subscriber, demo)."""

from __future__ import annotations

import gc
from typing import Final

GC_THRESHOLDS: Final = (50_000, 20, 20)
"""Young-generation threshold and the two older ones (CPython's default is 700, 10, 10)."""


def tune_gc() -> None:
    """Run the cyclic garbage collector less often.

    An mcsync process keeps a large state that lives as long as the process (the folded log,
    informer caches) and allocates a few short-lived container objects for every message read
    (nats-py's message object, the envelope). With CPython's default thresholds a steady stream
    of messages triggers a full collection every few thousand of them, and every full collection
    walks the whole state again; following a log of 100,000 events spent about 3 µs of CPU per
    event in the collector (``bench/bench_log.py``). Events themselves are never tracked
    (``gc=False``), so nothing mcsync keeps needs the collector promptly; cycles from library
    code are still freed, only in larger batches.
    """
    gc.set_threshold(*GC_THRESHOLDS)
