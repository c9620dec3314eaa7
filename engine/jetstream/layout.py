"""Where a cluster's processes read the log and where their appends land.

Three layouts, one per way of deploying NATS (docs/deploy.md):

``hub``
    every cluster reads and writes the hub's stream directly, all in one account;
``mirror``
    each cluster has an account of its own on the hub: it reads a mirror of the log in that
    account (its consumers count against its own limits only) and its appends pass through to the
    hub's stream (a service import of exactly its own subjects);
``leaf``
    each cluster has a leaf server with its own JetStream domain: it reads the leaf's mirror of
    the log and appends to the leaf's outbox (subjects ``mcsyncout.<set>.<cluster>.>``), which the
    hub sources into the log; lease events alone go straight to the hub's stream, because their
    compare-and-set must see every cluster's.

A mirror keeps the hub's sequences, so whatever reads the mirror sees the log's own positions. The
outbox has sequences of its own: appends that check the subject's last sequence check them against
the outbox, the only place that cluster writes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, get_args

from engine.core import subjects
from engine.natsconfig import access

Layout = Literal["hub", "mirror", "leaf"]
LAYOUTS: Final[tuple[str, ...]] = get_args(Layout)
_LOG: Final = subjects.PREFIX + "."
_OUTBOX: Final = access.OUTBOX_PREFIX + "."


@dataclass(frozen=True, slots=True)
class Route:
    """One cluster's read and write paths for the clusterset's log."""

    clusterset: str
    cluster: str | None = None
    """Needed by the ``mirror`` and ``leaf`` layouts, whose streams are the cluster's own."""
    layout: Layout = "hub"

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout {self.layout!r}: choose one of {', '.join(LAYOUTS)}")
        if self.layout != "hub" and self.cluster is None:
            raise ValueError(f"the {self.layout} layout needs the cluster id")

    @property
    def log_stream(self) -> str:
        """The hub's stream: the log itself."""
        return subjects.stream_name(self.clusterset)

    @property
    def read_stream(self) -> str:
        """The stream this cluster reads the log from (the log, or its local mirror)."""
        if self.layout == "hub" or self.cluster is None:
            return self.log_stream
        return access.mirror_stream(self.clusterset, self.cluster)

    @property
    def outbox(self) -> bool:
        return self.layout == "leaf"

    @property
    def inbox_prefix(self) -> str | None:
        """The reply prefix to connect with (``inbox_prefix`` of nats-py): the leaf link carries
        the log's replies to this cluster's own prefix only."""
        if self.outbox and self.cluster is not None:
            return access.leaf_inbox(self.cluster)
        return None

    def write_stream(self, subject: str) -> str:
        """The stream an append on the log subject ``subject`` lands in."""
        if self.outbox and self.cluster is not None and not _is_lease(subject):
            return access.outbox_stream(self.clusterset, self.cluster)
        return self.log_stream

    def write_subject(self, subject: str) -> str:
        """The subject an append on the log subject ``subject`` is published on."""
        if self.outbox and not _is_lease(subject) and subject.startswith(_LOG):
            return _OUTBOX + subject[len(_LOG) :]
        return subject

    def log_subject(self, written: str) -> str:
        """The log subject of a subject as :meth:`write_subject` wrote it."""
        if written.startswith(_OUTBOX):
            return _LOG + written[len(_OUTBOX) :]
        return written


def _is_lease(subject: str) -> bool:
    # mcsync.<set>.<cluster>.lease.<name>: the kind is the fourth token.
    parts = subject.split(".", 4)
    return len(parts) == 5 and parts[3] == "lease"
