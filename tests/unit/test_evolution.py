"""Event versions roll out only as far as every member reads them."""

from __future__ import annotations

import pytest

from engine.core import events as ev
from engine.core import evolution


def member(*reads: str) -> ev.ClusterJoined:
    return ev.ClusterJoined(cluster="c", clusterset="s", reads=reads)


def test_this_mcsync_announces_every_tag_it_reads() -> None:
    assert set(evolution.READS) == {ev.tag_of(t) for t in ev.EVENT_TYPES}
    assert set(evolution.READS) >= evolution.BASELINE


def test_a_newer_version_is_written_only_once_every_member_reads_it() -> None:
    both = ("export.upserted.v1", "export.upserted.v2")
    upgraded = member(*evolution.READS, "export.upserted.v2")
    old = member(*evolution.READS)
    assert evolution.to_write(both, [upgraded, old]) == "export.upserted.v1"
    assert evolution.to_write(both, [upgraded, upgraded]) == "export.upserted.v2"


def test_a_member_that_announces_nothing_reads_the_first_versions() -> None:
    both = ("export.upserted.v2", "export.upserted.v1")
    upgraded = member(*evolution.READS, "export.upserted.v2")
    assert evolution.to_write(both, [upgraded, member()]) == "export.upserted.v1"


def test_without_members_the_writer_writes_its_newest() -> None:
    assert evolution.to_write(("export.upserted.v1",), []) == "export.upserted.v1"


def test_candidates_must_be_versions_of_one_event() -> None:
    with pytest.raises(ValueError):
        evolution.to_write(("export.upserted.v1", "slice.upserted.v1"), [])
    with pytest.raises(ValueError):
        evolution.to_write((), [])


def test_an_old_reader_decodes_a_membership_event_with_the_new_field() -> None:
    data = ev.encode(member("export.upserted.v1", "export.upserted.v9"))
    got = ev.decode(data)
    assert isinstance(got, ev.ClusterJoined)
    assert got.reads == ("export.upserted.v1", "export.upserted.v9")
    legacy = ev.decode(b'{"type":"cluster.joined.v1","cluster":"c","clusterset":"s"}')
    assert isinstance(legacy, ev.ClusterJoined) and legacy.reads == ()
