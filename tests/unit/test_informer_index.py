"""The informer cache's index by owning service follows every way an object enters or leaves."""

from __future__ import annotations

from engine.kube.informer import IndexedCache
from engine.kube.resources import Obj


def owned(ns: str, name: str, service: str | None) -> Obj:
    labels = {"svc": service} if service else {}
    return {"metadata": {"namespace": ns, "name": name, "labels": labels}}


def by_label(obj: Obj) -> tuple[str, str] | None:
    svc = obj["metadata"]["labels"].get("svc")
    return (obj["metadata"]["namespace"], svc) if svc else None


def test_the_index_follows_adds_relabels_and_removals() -> None:
    cache = IndexedCache(by_label)
    cache[("ns", "a-1")] = owned("ns", "a-1", "a")
    cache[("ns", "a-2")] = owned("ns", "a-2", "a")
    cache[("ns", "b-1")] = owned("ns", "b-1", "b")
    cache[("ns", "loose")] = owned("ns", "loose", None)
    assert cache.group(("ns", "a")) == {("ns", "a-1"), ("ns", "a-2")}
    assert cache.group(("ns", "b")) == {("ns", "b-1")}

    cache[("ns", "a-2")] = owned("ns", "a-2", "b")  # relabelled
    assert cache.group(("ns", "a")) == {("ns", "a-1")}
    assert cache.group(("ns", "b")) == {("ns", "b-1"), ("ns", "a-2")}

    del cache[("ns", "a-1")]
    assert cache.pop(("ns", "b-1"))["metadata"]["name"] == "b-1"
    assert cache.pop(("ns", "gone"), None) is None
    assert cache.group(("ns", "a")) == frozenset()
    assert cache.group(("ns", "b")) == {("ns", "a-2")}
    assert set(cache) == {("ns", "a-2"), ("ns", "loose")}

    cache.clear()
    assert cache.group(("ns", "b")) == frozenset()
    assert not cache
