"""The informer's bookkeeping of our own writes, event by event (no API server needed: the
watch loop feeds ``_set`` and ``_report``, which these tests call in the orders a real watch
can deliver). The same behaviour against a real apiserver: tests/integration/test_informer.py.
"""

from __future__ import annotations

from typing import Any, cast

from engine import kube
from engine.core import plan

CM = kube.Resource("", "v1", "configmaps", "ConfigMap")


def obj(rv: int, value: str, uid: str = "u1") -> kube.Obj:
    return {
        "metadata": {"namespace": "ns", "name": "c", "resourceVersion": str(rv), "uid": uid},
        "data": {"v": value},
    }


def informer() -> tuple[kube.Informer, list[tuple[Any, Any]]]:
    seen: list[tuple[Any, Any]] = []

    def on_change(old: kube.Obj | None, new: kube.Obj | None) -> None:
        seen.append((old and old["data"]["v"], new and new["data"]["v"]))

    return kube.Informer(cast(kube.Kube, None), CM, on_change), seen


def deleted(inf: kube.Informer) -> None:
    """What the watch loop does with a DELETED event."""
    old = inf.cache.pop(("ns", "c"), None)
    if old is not None:
        inf._report(("ns", "c"), old, None)


def test_the_echo_of_our_write_is_not_reported_whether_it_comes_before_or_after() -> None:
    inf, seen = informer()
    inf._set(obj(1, "theirs"))
    with inf.writing("ns", "c"):
        inf._set(obj(2, "ours"))  # the watch event first
        inf.observe(obj(2, "ours"))  # then the API's answer
    with inf.writing("ns", "c"):
        inf.observe(obj(3, "ours again"))
    inf._set(obj(3, "ours again"))  # the watch event after
    assert seen == [(None, "theirs")]
    assert inf.get("ns", "c")["data"]["v"] == "ours again"  # type: ignore[index]


def test_a_newer_change_by_someone_else_during_our_write_is_reported() -> None:
    inf, seen = informer()
    inf._set(obj(1, "theirs"))
    with inf.writing("ns", "c"):
        inf._set(obj(2, "ours"))
        inf._set(obj(3, "someone else"))
        inf.observe(obj(2, "ours"))
    assert seen == [(None, "theirs"), ("ours", "someone else")]


def test_a_failed_write_reports_what_was_held() -> None:
    inf, seen = informer()
    try:
        with inf.writing("ns", "c"):
            inf._set(obj(1, "theirs"))
            raise kube.KubeError(409, "conflict")
    except kube.KubeError:
        pass
    assert seen == [(None, "theirs")]


def test_our_delete_is_not_reported_but_a_recreation_meanwhile_is_kept_and_reported() -> None:
    inf, seen = informer()
    inf._set(obj(1, "ours"))
    with inf.writing("ns", "c"):
        deleted(inf)  # the DELETED event of our delete
        inf._set(obj(5, "recreated", uid="u2"))  # someone creates it again at once
        inf.forget("ns", "c")  # our delete returns
    assert seen == [(None, "ours"), (None, "recreated")]
    assert inf.get("ns", "c")["data"]["v"] == "recreated"  # type: ignore[index]
    deleted(inf)  # and when they delete it, that is reported too
    assert seen[-1] == ("recreated", None)


def test_a_nested_write_of_the_same_object_loses_nothing() -> None:
    inf, seen = informer()
    with inf.writing("ns", "c"):
        with inf.writing("ns", "c"):
            inf._set(obj(4, "someone else"))
        inf.observe(obj(3, "ours"))
    assert seen == [(None, "someone else")]


def test_an_informer_that_keeps_digests_tells_echoes_from_changes_the_same_way() -> None:
    """With ``keep``, the cache holds what ``keep`` makes of each object (here a
    ``plan.Written``); echoes, others' changes and deletes are told apart as with objects."""
    seen: list[tuple[Any, Any]] = []

    def keep(o: kube.Obj) -> plan.Written:
        return plan.written("Service", o, ("ns", "svc"))

    inf = kube.Informer(
        cast(kube.Kube, None), CM, lambda old, new: seen.append((old, new)), keep=keep
    )
    inf._set(obj(1, "theirs"))
    assert isinstance(inf.get("ns", "c"), plan.Written)
    with inf.writing("ns", "c"):
        inf._set(obj(2, "ours"))  # the watch event comes first
        inf.observe(obj(2, "ours"))
    inf._set(obj(2, "ours"))  # or after
    assert len(seen) == 1  # only the first, someone else's
    inf._set(obj(3, "theirs again"))
    assert len(seen) == 2 and seen[-1][1].version == 3
    with inf.writing("ns", "c"):
        inf.forget("ns", "c")
        deleted(inf)  # the echo of our delete
    assert len(seen) == 2 and inf.get("ns", "c") is None


class PagedLister:
    """Stands in for the client's paged list: hands out the pages one at a time."""

    def __init__(self, pages: list[list[kube.Obj]]) -> None:
        self.pages = pages

    async def list_pages(self, res: object, take: Any, *args: object) -> str:
        for page in self.pages:
            take(page)
        return "99"


async def test_a_relist_keeps_only_the_digests_and_reports_what_changed() -> None:
    def named(name: str, rv: int) -> kube.Obj:
        return {"metadata": {"namespace": "ns", "name": name, "resourceVersion": str(rv)}}

    seen: list[tuple[Any, Any]] = []
    lister = PagedLister([[named("a", 1), named("b", 2)], [named("c", 3)]])
    inf = kube.Informer(
        cast(kube.Kube, lister),
        CM,
        lambda old, new: seen.append((old, new)),
        keep=lambda o: plan.written("Service", o, ("ns", "svc")),
    )
    assert await inf._relist() == "99"
    assert sorted(inf.cache) == [("ns", "a"), ("ns", "b"), ("ns", "c")]
    assert all(isinstance(v, plan.Written) for v in inf.cache.values())
    assert len(seen) == 3
    # Again, with b changed and c gone: one update and one delete reported, a unchanged.
    lister.pages = [[named("a", 1), named("b", 5)]]
    seen.clear()
    await inf._relist()
    assert sorted(inf.cache) == [("ns", "a"), ("ns", "b")]
    assert [(o and o.version, n and n.version) for o, n in seen] == [(3, None), (2, 5)]
