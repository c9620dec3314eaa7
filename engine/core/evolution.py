"""How event versions roll out in a clusterset whose members run different mcsync versions.

A reader keeps a key's last usable state when a message on it has a tag it does not know (see
:class:`~engine.core.errors.DecodeError`, kind ``unknown-version``), so a newer writer cannot
erase state from an older reader. But it would freeze that key in the older reader until the
reader is upgraded. So a writer goes further and never writes a version some member cannot read:
every member announces the tags its mcsync reads in its membership event (``reads``), and a
writer picks, for each kind of event, the newest version that every current member reads.

Members that joined before ``reads`` existed announce nothing; they read the ``v1`` tags. A
version bump therefore rolls out in two steps that need no coordination: upgrade every cluster
(each announces that it reads ``v2`` as it restarts, still writing ``v1``), and writers switch
to ``v2`` on their own once the last member announced it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from engine.core import events as ev

BASELINE: frozenset[str] = frozenset(
    ev.tag_of(t) for t in ev.EVENT_TYPES if ev.tag_of(t).endswith(".v1")
)
"""What a member that announces nothing reads."""

READS: tuple[str, ...] = tuple(ev.tag_of(t) for t in ev.EVENT_TYPES)
"""What this mcsync reads (announced in its membership events)."""


def family(tag: str) -> str:
    """``export.upserted.v2`` -> ``export.upserted``."""
    return tag.rsplit(".v", 1)[0]


def version(tag: str) -> int:
    return int(tag.rsplit(".v", 1)[1])


def readable_by_all(members: Iterable[ev.ClusterJoined]) -> frozenset[str]:
    """The tags every one of ``members`` reads (members announcing nothing read the baseline)."""
    common: frozenset[str] | None = None
    for member in members:
        reads = frozenset(member.reads) if member.reads else BASELINE
        common = reads if common is None else common & reads
    return frozenset(READS) if common is None else common


def to_write(candidates: Sequence[str], members: Iterable[ev.ClusterJoined]) -> str:
    """Of the versions of one event a writer can write, the newest every member reads.

    Falls back to the oldest candidate when no candidate is read by all (a member that reads none
    of them cannot be served anyway, and the oldest is what the most members read).

    Raises:
        ValueError: ``candidates`` is empty or mixes event kinds.
    """
    if not candidates or len({family(c) for c in candidates}) != 1:
        raise ValueError(f"candidates must be versions of one event: {list(candidates)!r}")
    readable = readable_by_all(members)
    ordered = sorted(candidates, key=version, reverse=True)
    for tag in ordered:
        if tag in readable:
            return tag
    return ordered[-1]
