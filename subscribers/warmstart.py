"""Warm restart: the subscriber's folded state saved to a local file, resumed at start.

A subscriber that bootstraps from the log re-reads and re-folds every live key, so its restart
costs as much as the clusterset is large. With ``state_dir`` set it saves its folded state and
the stream position it reflects (:mod:`engine.core.snapshot`) now and then and when it stops,
and at start resumes from the file with only the events after that position.

The file is trusted only after it is verified against the stream as it is now (checksum,
format, clusterset and stream identity, the stream still holding every event after the
position). A missing, damaged, foreign or incompatible file is never fatal: it is logged with
its reason, counted (``mcsync_state_snapshots{outcome="rejected"}``) and the subscriber
bootstraps in full, as without a file. A volume that survives the pod is not needed: an
``emptyDir`` survives container restarts, the common case.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import nats.errors
import nats.js.errors
from structlog.typing import FilteringBoundLogger

from engine import jetstream
from engine.core import fold, snapshot
from engine.observe import logs
from engine.observe.metrics import Metrics

log = logs.get("mcsync.warmstart")


class Restored(NamedTuple):
    state: fold.ClusterSetState
    log_time: datetime | None
    position: int


def path_for(state_dir: str | Path, elog: jetstream.EventLog, cluster: str) -> Path:
    """Where the subscriber of ``cluster`` keeps its state of this clusterset's log."""
    return Path(state_dir) / f"{elog.stream}.{cluster}.state"


async def stream_now(elog: jetstream.EventLog) -> tuple[snapshot.Identity, int, int]:
    """The stream's identity and its first and last sequences, as the server says now."""
    info = await elog.js.stream_info(elog.stream)
    created = info.created.isoformat() if info.created is not None else ""
    identity = snapshot.Identity(elog.clusterset, elog.stream, created)
    return identity, int(info.state.first_seq or 0), int(info.state.last_seq or 0)


async def load(
    elog: jetstream.EventLog, path: Path, cluster: str, metrics: Metrics | None = None
) -> Restored | None:
    """The verified state saved at ``path``, or None (logged and counted) to bootstrap."""
    bound = log.bind(cluster=cluster, path=str(path))
    try:
        blob = await asyncio.to_thread(path.read_bytes)
    except FileNotFoundError:
        _count(metrics, cluster, "rejected", "missing")
        bound.info("snapshot.missing")
        return None
    except OSError as exc:
        _rejected(bound, metrics, cluster, snapshot.Rejected("damaged", repr(exc)))
        return None
    try:
        header, body = snapshot.read_header(blob)
        identity, first, last = await stream_now(elog)
        snapshot.verify(header, body, identity, first, last)
        state = snapshot.decode(body)
    except snapshot.Rejected as exc:
        _rejected(bound, metrics, cluster, exc)
        return None
    _count(metrics, cluster, "resumed", "")
    bound.info(
        "snapshot.resumed",
        position=header.position,
        keys=header.keys,
        stream_last_seq=last,
        to_read=max(last - header.position, 0),
    )
    return Restored(state, header.log_time, header.position)


def write(path: Path, blob: bytes) -> None:
    """Replace ``path`` with ``blob`` atomically: a crash leaves the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class Saver:
    """Saves a subscriber's state when it moved on since the last save."""

    def __init__(
        self, elog: jetstream.EventLog, path: Path, cluster: str, metrics: Metrics | None = None
    ) -> None:
        self.elog = elog
        self.path = path
        self.cluster = cluster
        self.metrics = metrics
        self.saved_position = -1
        self._identity: snapshot.Identity | None = None

    def loaded(self, position: int) -> None:
        """The file already holds the state at ``position``."""
        self.saved_position = position

    async def identify(self) -> None:
        """Learn the stream's identity (a save needs it); call once the stream is read."""
        try:
            self._identity, _, _ = await stream_now(self.elog)
        except (nats.js.errors.Error, nats.errors.Error, TimeoutError) as exc:
            log.warning("snapshot.identity_unknown", cluster=self.cluster, error=repr(exc)[:200])

    def save(self, state: fold.ClusterSetState, log_time: datetime | None) -> bool:
        """Write the state if it moved on; synchronous (for the last save on the way out)."""
        blob = self._blob(state, log_time)
        if blob is None:
            return False
        write(self.path, blob)
        self._saved(state.position, len(blob))
        return True

    async def save_async(self, state: fold.ClusterSetState, log_time: datetime | None) -> bool:
        """Like :meth:`save`; the encoding runs here (a consistent state), the file write in a
        thread."""
        blob = self._blob(state, log_time)
        if blob is None:
            return False
        position = state.position
        await asyncio.to_thread(write, self.path, blob)
        self._saved(position, len(blob))
        return True

    def _blob(self, state: fold.ClusterSetState, log_time: datetime | None) -> bytes | None:
        if self._identity is None or state.position in (self.saved_position, 0):
            return None
        return snapshot.encode(state, self._identity, log_time)

    def _saved(self, position: int, size: int) -> None:
        self.saved_position = position
        _count(self.metrics, self.cluster, "saved", "")
        log.debug("snapshot.saved", cluster=self.cluster, position=position, bytes=size)


def _rejected(
    bound: FilteringBoundLogger, metrics: Metrics | None, cluster: str, exc: snapshot.Rejected
) -> None:
    _count(metrics, cluster, "rejected", exc.reason)
    bound.warning("snapshot.rejected", reason=exc.reason, detail=str(exc)[:300])


def _count(metrics: Metrics | None, cluster: str, outcome: str, reason: str) -> None:
    if metrics is not None:
        metrics.snapshots.labels(cluster, outcome, reason).inc()
