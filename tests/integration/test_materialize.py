"""What a subscriber's writes cost: the first drain writes each object once, and a reconcile
looks only at its own service's objects, however many the cluster holds; what it keeps of the
objects it wrote (a digest each) is enough to repair them when someone edits or deletes them.

Real apiservers, real NATS, a real publisher in cluster-1 and a subscriber alone in cluster-2.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Any

import pytest

from engine import jetstream, kube
from engine.core import events as ev
from engine.core import plan, subjects
from engine.core.fold import Envelope
from engine.kube.informer import IndexedCache
from engine.runner import Member
from tests.integration.conftest import (
    Members,
    api_writes,
    endpoint_slice,
    eventually,
    holds,
    mcs_slices,
    service,
    service_export,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_namespaces")]

SERVICES = [f"svc-{i}" for i in range(4)]


async def export_services(members: Members, ns: str, log: jetstream.EventLog) -> None:
    """Cluster-1's publisher alone exports SERVICES, each with one source slice; returns once
    the log holds every export and slice."""
    await members.start_as("cluster-1/publisher", "cluster-1", subscribe=False)
    k = members.cs["cluster-1"].kube
    for i, name in enumerate(SERVICES):
        await k.create(kube.SERVICES, service(ns, name))
        await k.create(kube.SERVICE_EXPORTS, service_export(ns, name))
        await k.create(
            kube.ENDPOINT_SLICES,
            endpoint_slice(ns, name, f"{name}-src", [f"10.9.{i}.1", f"10.9.{i}.2"], port=42),
        )

    async def all_in_the_log() -> bool:
        last = await log.read_last_per_subject(subjects.all_subjects(log.clusterset))
        found = [
            e.event
            for e in last.values()
            if isinstance(e, Envelope)
            and isinstance(e.event, ev.ExportUpserted | ev.SliceUpserted)
            and e.event.namespace == ns
        ]
        return len(found) == 2 * len(SERVICES)

    await eventually(all_in_the_log)


async def materialized(members: Members, ns: str) -> Member:
    """A subscriber alone in cluster-2, ready (its first drain done) once every import there
    has its VIP."""
    sub = await members.start_as("cluster-2/subscriber", "cluster-2", publish=False)
    k = members.cs["cluster-2"].kube

    async def imported() -> bool:
        items, _ = await k.list(kube.SERVICE_IMPORTS, ns)
        return len(items) == len(SERVICES) and all(i["spec"].get("ips") for i in items)

    await eventually(imported)
    return sub


async def test_the_first_drain_writes_each_object_once_with_the_vip_and_a_ready_status(
    members: Members, namespace: str, log: jetstream.EventLog
) -> None:
    await export_services(members, namespace, log)
    sub = await materialized(members, namespace)

    n = len(SERVICES)
    assert api_writes(sub, "Service") == n
    assert api_writes(sub, "ServiceImport") == n  # written once, with spec.ips
    assert api_writes(sub, "ServiceImportStatus") == n  # written once, Ready
    assert api_writes(sub, "EndpointSlice") == n
    items, _ = await members.cs["cluster-2"].kube.list(kube.SERVICE_IMPORTS, namespace)
    for imp in items:
        ready = [c for c in imp["status"]["conditions"] if c["type"] == "Ready"]
        assert ready[0]["status"] == "True"
        derived = await members.cs["cluster-2"].kube.get(
            kube.SERVICES, namespace, plan.derived_name(namespace, imp["metadata"]["name"])
        )
        assert derived is not None
        assert imp["spec"]["ips"] == derived["spec"]["clusterIPs"]


class CacheSpy:
    """Records every look at an informer cache: whole scans and the groups asked for."""

    def __init__(self, caches: list[IndexedCache], monkeypatch: pytest.MonkeyPatch) -> None:
        self.scans = 0
        self.groups: list[Hashable] = []
        watched = {id(c) for c in caches}
        spy = self

        def scanning(name: str) -> Any:
            original = getattr(IndexedCache, name)

            def wrapper(self: IndexedCache, *args: Any) -> Any:
                if id(self) in watched:
                    spy.scans += 1
                return original(self, *args)

            return wrapper

        for name in ("__iter__", "keys", "values", "items"):
            monkeypatch.setattr(IndexedCache, name, scanning(name))
        group = IndexedCache.group

        def grouping(self: IndexedCache, g: Hashable) -> frozenset[kube.ObjKey]:
            if id(self) in watched:
                spy.groups.append(g)
            return group(self, g)

        monkeypatch.setattr(IndexedCache, "group", grouping)


def _iter_names(slices: list[kube.Obj]) -> Iterator[str]:
    return (s["metadata"]["labels"][plan.LABEL_SERVICE_NAME] for s in slices)


async def test_pruning_a_service_looks_only_at_that_services_objects(
    members: Members, namespace: str, log: jetstream.EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    await export_services(members, namespace, log)
    member = await materialized(members, namespace)
    assert sorted(_iter_names(await mcs_slices_all(members, namespace))) == SERVICES
    sub = member.subscriber
    assert sub is not None
    caches = [sub.services.cache, sub.slices.cache]
    assert all(isinstance(c, IndexedCache) for c in caches)
    spy = CacheSpy([c for c in caches if isinstance(c, IndexedCache)], monkeypatch)

    # svc-0 loses its only source slice: its MCS slice in cluster-2 must go, nothing else.
    await members.cs["cluster-1"].kube.delete(kube.ENDPOINT_SLICES, namespace, "svc-0-src")

    async def pruned() -> bool:
        return not await mcs_slices(members.cs, "cluster-2", namespace, "svc-0")

    await eventually(pruned)
    assert sorted(_iter_names(await mcs_slices_all(members, namespace))) == SERVICES[1:]
    assert api_writes(member, "EndpointSlice") == len(SERVICES) + 1  # one delete
    assert spy.scans == 0, "a reconcile scanned a whole cache"
    assert set(spy.groups) == {(namespace, "svc-0")}


async def mcs_slices_all(members: Members, ns: str) -> list[kube.Obj]:
    items, _ = await members.cs["cluster-2"].kube.list(
        kube.ENDPOINT_SLICES, ns, f"{plan.LABEL_SLICE_MANAGED_BY}={plan.MANAGED_BY}"
    )
    return items


async def merge_patch(k: kube.Kube, res: kube.Resource, ns: str, name: str, body: Any) -> None:
    """Edit an object as a person would (``kubectl edit``: an update under another manager)."""
    await k.request(
        "PATCH", res.path(ns, name), body=body, content_type="application/merge-patch+json"
    )


def _api_writes_all(member: Member) -> float:
    return sum(api_writes(member, kind) for kind in ("Service", "ServiceImport", "EndpointSlice"))


async def test_a_derived_object_someone_edits_or_deletes_is_repaired_and_only_it(
    members: Members, namespace: str, log: jetstream.EventLog
) -> None:
    await export_services(members, namespace, log)
    member = await materialized(members, namespace)
    k = members.cs["cluster-2"].kube
    ns = namespace
    before = {
        kind: api_writes(member, kind) for kind in ("Service", "ServiceImport", "EndpointSlice")
    }
    slices = {
        s["metadata"]["labels"][plan.LABEL_SERVICE_NAME]: s
        for s in await mcs_slices_all(members, ns)
    }
    want_endpoints = slices["svc-0"]["endpoints"]
    old_ip = (await k.get(kube.SERVICES, ns, plan.derived_name(ns, "svc-2")) or {})["spec"][
        "clusterIP"
    ]

    # svc-0: its slice's endpoints replaced; svc-1: its import's VIP changed; svc-2: its
    # derived Service deleted; svc-3: its slice deleted.
    await merge_patch(
        k,
        kube.ENDPOINT_SLICES,
        ns,
        slices["svc-0"]["metadata"]["name"],
        {"endpoints": [{"addresses": ["10.66.6.6"], "conditions": {"ready": True}}]},
    )
    await merge_patch(k, kube.SERVICE_IMPORTS, ns, "svc-1", {"spec": {"ips": ["10.66.6.7"]}})
    await k.delete(kube.SERVICES, ns, plan.derived_name(ns, "svc-2"))
    await k.delete(kube.ENDPOINT_SLICES, ns, slices["svc-3"]["metadata"]["name"])

    async def repaired() -> bool:
        now = {
            s["metadata"]["labels"][plan.LABEL_SERVICE_NAME]: s
            for s in await mcs_slices_all(members, ns)
        }
        if set(now) != set(SERVICES) or now["svc-0"]["endpoints"] != want_endpoints:
            return False
        imp1 = await k.get(kube.SERVICE_IMPORTS, ns, "svc-1")
        derived1 = await k.get(kube.SERVICES, ns, plan.derived_name(ns, "svc-1"))
        derived2 = await k.get(kube.SERVICES, ns, plan.derived_name(ns, "svc-2"))
        imp2 = await k.get(kube.SERVICE_IMPORTS, ns, "svc-2")
        return bool(
            imp1
            and derived1
            and imp1["spec"]["ips"] == derived1["spec"]["clusterIPs"]
            and derived2
            and imp2
            and derived2["spec"]["clusterIP"] != old_ip
            and imp2["spec"]["ips"] == derived2["spec"]["clusterIPs"]
        )

    await eventually(repaired)
    # One write for each repair: svc-0's slice, svc-1's import, svc-2's derived Service and its
    # import (the new VIP), svc-3's slice; then nothing more.
    assert api_writes(member, "EndpointSlice") == before["EndpointSlice"] + 2
    assert api_writes(member, "ServiceImport") == before["ServiceImport"] + 2
    assert api_writes(member, "Service") == before["Service"] + 1
    settled = _api_writes_all(member)

    async def no_more_writes() -> bool:
        return _api_writes_all(member) == settled

    await holds(no_more_writes, 2.0)
