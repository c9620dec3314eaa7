"""Informers against a real apiserver: they report others' changes, not the writer's own."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from engine import kube
from tests.conftest import ClusterSet
from tests.integration.conftest import eventually

pytestmark = pytest.mark.integration


def config_map(namespace: str, name: str, value: str) -> kube.Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"v": value},
    }


CONFIG_MAPS = kube.Resource("", "v1", "configmaps", "ConfigMap")


async def test_an_informer_reports_others_changes_but_not_what_its_writer_observed(
    clusterset: ClusterSet, namespace: str
) -> None:
    k = clusterset["cluster-1"].kube
    seen: list[tuple[str | None, str | None]] = []

    def on_change(old: kube.Obj | None, new: kube.Obj | None) -> None:
        def value(o: kube.Obj | None) -> str | None:
            return None if o is None else o["data"]["v"]

        seen.append((value(old), value(new)))

    informer = kube.Informer(k, CONFIG_MAPS, on_change, namespace=namespace)
    task = asyncio.create_task(informer.run())
    try:
        await informer.synced.wait()
        # Someone else creates it: reported.
        await k.create(CONFIG_MAPS, config_map(namespace, "c", "theirs"))
        await eventually(lambda: _has(seen, (None, "theirs")))
        # Our own write through the informer: neither the write nor its watch event is
        # reported, whichever of the answer and the event comes first.
        await informer.apply(config_map(namespace, "c", "ours"))
        await asyncio.sleep(0.5)
        assert seen == [(None, "theirs")]
        assert informer.get(namespace, "c")["data"]["v"] == "ours"  # type: ignore[index]
        # Someone else changes it after us: reported.
        await k.apply(CONFIG_MAPS, config_map(namespace, "c", "again"))
        await eventually(lambda: _has(seen, ("ours", "again")))
        # We delete it and forget it: not reported; someone else deletes another: reported.
        await k.create(CONFIG_MAPS, config_map(namespace, "d", "other"))
        await eventually(lambda: _has(seen, (None, "other")))
        assert await informer.delete(namespace, "c")
        await k.delete(CONFIG_MAPS, namespace, "d")
        await eventually(lambda: _has(seen, ("other", None)))
        await asyncio.sleep(0.3)
        assert ("again", None) not in seen
        # A write that failed observes nothing: what happened meanwhile is reported after it.
        with contextlib.suppress(kube.KubeError), informer.writing(namespace, "e"):
            await k.create(CONFIG_MAPS, config_map(namespace, "e", "meanwhile"))
            await eventually(lambda: _cached(informer, namespace, "e"))
            assert (None, "meanwhile") not in seen  # held while the write is in flight
            raise kube.KubeError(409, "the write failed")
        assert (None, "meanwhile") in seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


Change = tuple[str | None, str | None]


async def _cached(informer: kube.Informer, namespace: str, name: str) -> bool:
    return informer.get(namespace, name) is not None


async def _has(seen: list[Change], item: Change) -> bool:
    return item in seen
