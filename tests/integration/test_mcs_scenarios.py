"""Multi-Cluster Services scenarios beyond the conformance suite (specs/mcs-api.md §6, §10-§12):
namespaces that appear late, Services deleted or unexportable under their export, restarts that
must cost nothing, bursts that must coalesce, a stale publisher replica, and the status fields
conformance does not check. Real apiservers, real NATS, real publishers and subscribers.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from typing import Any

import pytest
import structlog.testing

from engine import jetstream, kube
from engine.core import events as ev
from engine.core import plan, subjects
from engine.core.fold import Envelope
from engine.runner import Member
from publishers.membership import ReporterSettings
from publishers.publisher import PublisherSettings
from tests.conftest import ClusterSet
from tests.integration.conftest import (
    Members,
    api_writes,
    create_namespace,
    endpoint_slice,
    eventually,
    export_condition,
    get_import,
    hello_export,
    hello_service,
    holds,
    imports_in,
    mcs_slices,
    no_import_in,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_namespaces")]

CLUSTERS = ["cluster-1", "cluster-2", "cluster-3"]
# The fixture's ports plus one. (Tests change the Service with server-side apply, which only
# adds ports: the ones it was created with belong to another field manager.)
PORTS3 = [
    {"name": "tcp", "port": 42, "protocol": "TCP"},
    {"name": "udp", "port": 42, "protocol": "UDP"},
    {"name": "http", "port": 80, "protocol": "TCP"},
]


async def export_hello(
    cs: ClusterSet, cluster: str, ns: str, service: kube.Obj | None = None, **spec: Any
) -> None:
    k = cs[cluster].kube
    await k.create(kube.SERVICES, service or hello_service(ns))
    await k.create(kube.SERVICE_EXPORTS, hello_export(ns, **spec))


async def add_slice(
    cs: ClusterSet, cluster: str, ns: str, addresses: list[str], name: str | None = None
) -> str:
    name = name or f"hello-{cluster}-src"
    await cs[cluster].kube.create(
        kube.ENDPOINT_SLICES, endpoint_slice(ns, "hello", name, addresses)
    )
    return name


def addresses_of(slices: list[kube.Obj]) -> list[str]:
    return sorted(a for s in slices for e in s.get("endpoints") or [] for a in e["addresses"])


async def slices_by_source(cs: ClusterSet, cluster: str, ns: str) -> dict[str, list[str]]:
    """The addresses of the MCS slices in ``cluster``, by source cluster."""
    out: dict[str, list[str]] = {}
    for s in await mcs_slices(cs, cluster, ns):
        source = s["metadata"]["labels"][plan.LABEL_SOURCE_CLUSTER]
        out.setdefault(source, []).extend(a for e in s["endpoints"] for a in e["addresses"])
    return {k: sorted(v) for k, v in out.items()}


async def status_clusters(cs: ClusterSet, cluster: str, ns: str) -> list[str] | None:
    imp = await get_import(cs, cluster, ns)
    if imp is None:
        return None
    return [c["cluster"] for c in (imp.get("status") or {}).get("clusters") or []]


async def everywhere(cs: ClusterSet, probe: Any, want: Any) -> bool:
    """Whether ``await probe(cs, cluster)`` equals ``want`` in every cluster."""
    return all([await probe(cs, c.name) == want for c in cs.clusters])


async def converged(cs: ClusterSet, ns: str, exporters: list[str], slices: bool = True) -> bool:
    """Every cluster imports the service with its VIP and conditions, and (with ``slices``) the
    slices of every exporter; every exporter's ServiceExport has its conditions."""
    imports = await imports_in(cs, ns)
    if imports is None:
        return False
    for imp in imports.values():
        status = imp.get("status") or {}
        if not imp["spec"].get("ips") or not status.get("conditions"):
            return False
        if [c["cluster"] for c in status.get("clusters") or []] != exporters:
            return False
    for c in cs.clusters:
        if slices and sorted(await slices_by_source(cs, c.name, ns)) != exporters:
            return False
    for e in exporters:
        if await export_condition(cs, e, ns, "Conflict") is None:
            return False
    return True


def total_writes(members: list[Member]) -> tuple[int, float]:
    """Kubernetes API writes of these members: the clients' counters and the metrics."""
    return sum(m.k8s.writes for m in members), sum(api_writes(m) for m in members)


async def quiet(members: list[Member], for_seconds: float = 1.0) -> tuple[int, float]:
    """Wait until the members make no more writes for ``for_seconds``; return the totals."""
    for _ in range(20):
        before = total_writes(members)
        await asyncio.sleep(for_seconds)
        if total_writes(members) == before:
            return before
    raise AssertionError(f"still writing after {20 * for_seconds}s: {total_writes(members)}")


# --- namespaces ----------------------------------------------------------------------------


async def test_the_import_appears_when_its_namespace_appears_in_a_cluster_that_lacked_it(
    mcsync: Members, clean_namespaces: list[str]
) -> None:
    cs = mcsync.cs
    ns = f"t-{uuid.uuid4().hex[:10]}"
    clean_namespaces.append(ns)
    await create_namespace(cs, ns, ["cluster-1"])
    await export_hello(cs, "cluster-1", ns)
    await add_slice(cs, "cluster-1", ns, ["10.1.0.5"])
    await eventually(lambda: imports_in(cs, ns, ["cluster-1"]))
    # Only where the namespace exists: nothing in cluster-2 and cluster-3 (nor a derived
    # Service, which could not exist without the namespace either).
    assert await no_import_in(cs, ns, ["cluster-2", "cluster-3"])

    await create_namespace(cs, ns, ["cluster-2"])
    imports = await eventually(lambda: imports_in(cs, ns, ["cluster-2"]))
    assert imports["cluster-2"]["spec"]["type"] == "ClusterSetIP"

    async def derived_ip_in_cluster_2() -> bool:
        imp = await get_import(cs, "cluster-2", ns)
        return bool(imp and imp["spec"].get("ips"))

    await eventually(derived_ip_in_cluster_2)
    await eventually(lambda: _slices_are(cs, "cluster-2", ns, {"cluster-1": ["10.1.0.5"]}))
    assert await no_import_in(cs, ns, ["cluster-3"])


async def test_a_terminating_namespace_gets_no_writes_and_no_errors(
    mcsync: Members, clean_namespaces: list[str]
) -> None:
    cs = mcsync.cs
    ns = f"t-{uuid.uuid4().hex[:10]}"
    clean_namespaces.append(ns)
    await create_namespace(cs, ns, ["cluster-1", "cluster-2"])
    await export_hello(cs, "cluster-1", ns)
    await add_slice(cs, "cluster-1", ns, ["10.1.0.5"])
    await eventually(lambda: imports_in(cs, ns, ["cluster-2"]))
    # Without a namespace controller the namespace stays Terminating: as long as it likes.
    await cs["cluster-2"].kube.delete(kube.NAMESPACES, None, ns)
    sub = mcsync.members["cluster-2"]
    with structlog.testing.capture_logs() as logs:
        # What mcsync owns there goes (deletes are allowed while a namespace terminates) ...
        await eventually(lambda: no_import_in(cs, ns, ["cluster-2"]))
        # ... and a change to the service writes nothing there, and reports no error.
        await add_slice(cs, "cluster-1", ns, ["10.1.0.6"], name="hello-2")
        await eventually(lambda: _one(cs, ns))
        await asyncio.sleep(1.0)
    assert [e for e in logs if e.get("log_level") == "error"] == []
    assert await mcs_slices(cs, "cluster-2", ns) == []
    assert sub.metrics.errors.labels("cluster-2", "apply:ServiceImport", "false")._value.get() == 0


async def _one(cs: ClusterSet, ns: str) -> bool:
    """cluster-1 itself shows both endpoints (the change went through the log)."""
    return await slices_by_source(cs, "cluster-1", ns) == {"cluster-1": ["10.1.0.5", "10.1.0.6"]}


async def _slices_are(cs: ClusterSet, cluster: str, ns: str, want: dict[str, list[str]]) -> bool:
    return await slices_by_source(cs, cluster, ns) == want


# --- the exported Service -------------------------------------------------------------------


async def test_deleting_the_exported_service_invalidates_the_export_and_withdraws_it(
    mcsync: Members, namespace: str
) -> None:
    cs = mcsync.cs
    await export_hello(cs, "cluster-1", namespace)
    await add_slice(cs, "cluster-1", namespace, ["10.1.0.5"])
    await asyncio.sleep(1.1)
    await export_hello(cs, "cluster-2", namespace)
    await add_slice(cs, "cluster-2", namespace, ["10.2.0.5"])
    both = {"cluster-1": ["10.1.0.5"], "cluster-2": ["10.2.0.5"]}
    await eventually(lambda: everywhere(cs, lambda cs, c: slices_by_source(cs, c, namespace), both))

    # cluster-1's Service goes; its ServiceExport stays.
    assert await cs["cluster-1"].kube.delete(kube.SERVICES, namespace, "hello")

    async def no_service() -> dict[str, Any] | None:
        valid = await export_condition(cs, "cluster-1", namespace, "Valid")
        return valid if valid and valid["status"] == "False" else None

    valid = await eventually(no_service)
    assert valid["reason"] == "NoService"
    only2 = {"cluster-2": ["10.2.0.5"]}
    await eventually(
        lambda: everywhere(cs, lambda cs, c: slices_by_source(cs, c, namespace), only2)
    )
    await eventually(
        lambda: everywhere(cs, lambda cs, c: status_clusters(cs, c, namespace), ["cluster-2"])
    )
    ready = await export_condition(cs, "cluster-1", namespace, "Ready")
    assert ready is not None
    assert ready["status"] == "False"

    # The last exporter's Service goes too: no import left anywhere, no slices, no VIP.
    assert await cs["cluster-2"].kube.delete(kube.SERVICES, namespace, "hello")
    await eventually(lambda: no_import_in(cs, namespace))
    derived = plan.derived_name(namespace, "hello")

    async def nothing_left(cluster: str) -> bool:
        return not await mcs_slices(cs, cluster, namespace) and (
            await cs[cluster].kube.get(kube.SERVICES, namespace, derived) is None
        )

    for c in cs.clusters:
        await eventually(functools.partial(nothing_left, c.name))
    for cluster in ("cluster-1", "cluster-2"):
        await eventually(
            functools.partial(_reason_is, cs, cluster, namespace, "Valid", "NoService")
        )

    # The Service comes back: so does the import.
    await cs["cluster-2"].kube.create(kube.SERVICES, hello_service(namespace))
    await eventually(lambda: imports_in(cs, namespace))


async def _reason_is(cs: ClusterSet, cluster: str, ns: str, ctype: str, reason: str) -> bool:
    c = await export_condition(cs, cluster, ns, ctype)
    return c is not None and c["reason"] == reason


async def test_an_externalname_export_is_invalid_with_its_reason_and_never_imported(
    mcsync: Members, namespace: str
) -> None:
    cs = mcsync.cs
    external = hello_service(
        namespace, type="ExternalName", externalName="example.com", ipFamilyPolicy=None
    )
    await export_hello(cs, "cluster-1", namespace, external)
    await eventually(lambda: _reason_is(cs, "cluster-1", namespace, "Valid", "InvalidServiceType"))
    valid = await export_condition(cs, "cluster-1", namespace, "Valid")
    assert valid is not None
    assert valid["status"] == "False"
    await holds(lambda: no_import_in(cs, namespace), 5)


async def test_a_condition_another_controller_keeps_on_the_export_causes_no_write_loop(
    mcsync: Members, namespace: str
) -> None:
    """ServiceExport conditions are a list-map keyed by type: mcsync sets Valid, Ready and
    Conflict, leaves other types to their owners, and stops writing once its own are there."""
    cs = mcsync.cs
    k = cs["cluster-1"].kube
    await k.create(kube.SERVICES, hello_service(namespace))
    await k.create(kube.SERVICE_EXPORTS, hello_export(namespace))
    foreign = {
        "type": "example.com/Audited",
        "status": "True",
        "reason": "Audited",
        "message": "checked by another controller",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    await k.request(
        "PATCH",
        kube.SERVICE_EXPORTS.path(namespace, "hello", "status"),
        body={"status": {"conditions": [foreign]}},
        content_type="application/merge-patch+json",
    )
    await eventually(lambda: _reason_is(cs, "cluster-1", namespace, "Valid", "Valid"))
    sub1 = mcsync.members["cluster-1"]
    await quiet([sub1])
    assert api_writes(sub1, "ServiceExportStatus") <= 2
    assert await export_condition(cs, "cluster-1", namespace, "example.com/Audited") == foreign


# --- status fields -------------------------------------------------------------------------


async def test_the_import_status_lists_the_exporting_clusters(
    mcsync: Members, namespace: str
) -> None:
    cs = mcsync.cs
    for cluster in CLUSTERS:
        await export_hello(cs, cluster, namespace)
    await eventually(
        lambda: everywhere(cs, lambda cs, c: status_clusters(cs, c, namespace), CLUSTERS)
    )
    assert await cs["cluster-2"].kube.delete(kube.SERVICE_EXPORTS, namespace, "hello")
    await eventually(
        lambda: everywhere(
            cs, lambda cs, c: status_clusters(cs, c, namespace), ["cluster-1", "cluster-3"]
        )
    )


async def test_the_import_says_whether_endpoint_slice_objects_are_present(
    mcsync: Members, namespace: str
) -> None:
    cs = mcsync.cs

    async def slice_objects(cs: ClusterSet, cluster: str) -> str | None:
        imp = await get_import(cs, cluster, namespace)
        return ((imp or {}).get("status") or {}).get("endpointSliceObjects")

    await export_hello(cs, "cluster-1", namespace)
    await eventually(lambda: everywhere(cs, slice_objects, "Absent"))
    name = await add_slice(cs, "cluster-1", namespace, ["10.1.0.5"])
    await eventually(lambda: everywhere(cs, slice_objects, "Present"))
    for c in cs.clusters:
        assert addresses_of(await mcs_slices(cs, c.name, namespace)) == ["10.1.0.5"]
    assert await cs["cluster-1"].kube.delete(kube.ENDPOINT_SLICES, namespace, name)
    await eventually(lambda: everywhere(cs, slice_objects, "Absent"))
    for c in cs.clusters:
        assert await mcs_slices(cs, c.name, namespace) == []


async def test_a_headless_import_has_ip_families_but_no_ips_and_no_derived_service(
    mcsync: Members, namespace: str
) -> None:
    cs = mcsync.cs
    await export_hello(cs, "cluster-1", namespace, hello_service(namespace, clusterIP="None"))
    await add_slice(cs, "cluster-1", namespace, ["10.1.0.5"])
    await eventually(
        lambda: everywhere(
            cs, lambda cs, c: slices_by_source(cs, c, namespace), {"cluster-1": ["10.1.0.5"]}
        )
    )
    imports = await eventually(lambda: imports_in(cs, namespace))
    for cluster, imp in imports.items():
        assert imp["spec"]["type"] == "Headless", cluster
        assert imp["spec"]["ipFamilies"] == ["IPv4"], cluster
        assert not imp["spec"].get("ips"), cluster
        annotations = imp["metadata"].get("annotations") or {}
        assert plan.ANNOTATION_DERIVED not in annotations, cluster
        owned, _ = await cs[cluster].kube.list(
            kube.SERVICES, namespace, f"{plan.LABEL_MANAGED_BY}={plan.MANAGED_BY}"
        )
        assert owned == [], cluster
        derived = plan.derived_name(namespace, "hello")
        assert await cs[cluster].kube.get(kube.SERVICES, namespace, derived) is None
        slices = await mcs_slices(cs, cluster, namespace)
        assert [s["metadata"]["labels"]["kubernetes.io/service-name"] for s in slices] == [derived]


async def test_a_conflict_message_names_the_field_and_the_winning_cluster(
    mcsync: Members, namespace: str
) -> None:
    cs = mcsync.cs
    await export_hello(cs, "cluster-1", namespace)
    await eventually(lambda: get_import(cs, "cluster-1", namespace))
    await asyncio.sleep(1.1)
    await export_hello(cs, "cluster-2", namespace, hello_service(namespace, sessionAffinity="None"))
    for cluster in ("cluster-1", "cluster-2"):

        async def conflict(cluster: str = cluster) -> dict[str, Any] | None:
            c = await export_condition(cs, cluster, namespace, "Conflict")
            return c if c and c["status"] == "True" else None

        c = await eventually(conflict)
        assert c["reason"] == "SessionAffinityConflict,SessionAffinityConfigConflict"
        assert "sessionAffinity" in c["message"]
        assert '"cluster-1"' in c["message"]  # the winner: the oldest export
    imp = await get_import(cs, "cluster-3", namespace)
    assert imp is not None
    assert imp["spec"]["sessionAffinity"] == "ClientIP"


# --- restarts ------------------------------------------------------------------------------


async def start_split(members: Members, cluster: str, **kw: Any) -> tuple[Member, Member]:
    """Run ``cluster``'s publisher and subscriber as two members, so one can restart alone."""
    pub = await members.start_as(f"{cluster}/publisher", cluster, subscribe=False, **kw)
    sub = await members.start_as(f"{cluster}/subscriber", cluster, publish=False)
    return pub, sub


async def test_a_publisher_restart_with_nothing_changed_writes_nothing_anywhere(
    members: Members, namespace: str
) -> None:
    cs = members.cs
    pub, sub1 = await start_split(members, "cluster-1")
    others = [await members.start(c) for c in ("cluster-2", "cluster-3")]
    await export_hello(cs, "cluster-1", namespace)
    await add_slice(cs, "cluster-1", namespace, ["10.1.0.5", "10.1.0.6"])
    await eventually(lambda: converged(cs, namespace, ["cluster-1"]))
    writers = [sub1, *others]
    before = await quiet(writers)
    log_before = pub.publisher.appends if pub.publisher else -1
    assert log_before >= 2  # the export, the slice (and the first marker)

    await members.stop("cluster-1/publisher")
    pub = await members.start_as("cluster-1/publisher", "cluster-1", subscribe=False)
    assert pub.publisher is not None
    assert pub.publisher.appends == 1  # only the snapshot-complete marker
    assert pub.publisher.epoch == 2
    await holds(lambda: _unchanged(writers, before), 2.0)
    assert pub.publisher.appends == 1
    assert pub.k8s.writes == 0


async def _unchanged(members: list[Member], before: tuple[int, float]) -> bool:
    return total_writes(members) == before


async def test_a_subscriber_restart_with_nothing_changed_writes_nothing(
    members: Members, namespace: str
) -> None:
    cs = members.cs
    _, sub2 = await start_split(members, "cluster-2")
    others = [await members.start(c) for c in ("cluster-1", "cluster-3")]
    await export_hello(cs, "cluster-1", namespace)
    await add_slice(cs, "cluster-1", namespace, ["10.1.0.5"])
    await export_hello(cs, "cluster-2", namespace)
    await add_slice(cs, "cluster-2", namespace, ["10.2.0.5"])
    await eventually(lambda: converged(cs, namespace, ["cluster-1", "cluster-2"]))
    await quiet([sub2])
    before = await quiet(others)

    await members.stop("cluster-2/subscriber")
    sub2 = await members.start_as("cluster-2/subscriber", "cluster-2", publish=False)
    assert sub2.subscriber is not None
    assert sub2.subscriber.reconciles >= 1  # it did look at the service
    await holds(lambda: _unchanged([sub2, *others], (before[0], before[1])), 2.0)
    assert total_writes([sub2]) == (0, 0.0)


async def test_a_subscriber_restart_writes_exactly_what_changed_while_it_was_down(
    members: Members, namespace: str
) -> None:
    cs = members.cs
    await start_split(members, "cluster-2")
    for c in ("cluster-1", "cluster-3"):
        await members.start(c)
    await export_hello(cs, "cluster-1", namespace)
    await add_slice(cs, "cluster-1", namespace, ["10.1.0.5"])
    await eventually(lambda: converged(cs, namespace, ["cluster-1"]))
    await quiet([members.members["cluster-2/subscriber"]])

    await members.stop("cluster-2/subscriber")
    # While cluster-2's subscriber is down, cluster-1's Service gains a port.
    await cs["cluster-1"].kube.apply(kube.SERVICES, hello_service(namespace, ports=PORTS3))

    async def cluster_3_has_three_ports() -> bool:
        imp = await get_import(cs, "cluster-3", namespace)
        return imp is not None and len(imp["spec"]["ports"]) == 3

    await eventually(cluster_3_has_three_ports)
    imp2 = await get_import(cs, "cluster-2", namespace)
    assert imp2 is not None
    assert len(imp2["spec"]["ports"]) == 2  # stale while the subscriber is down

    sub2 = await members.start_as("cluster-2/subscriber", "cluster-2", publish=False)
    imp2 = await get_import(cs, "cluster-2", namespace)
    assert imp2 is not None
    assert len(imp2["spec"]["ports"]) == 3
    await quiet([sub2])
    # The derived Service's ports and the import's spec: two writes, nothing else.
    assert api_writes(sub2, "Service") == 1
    assert api_writes(sub2, "ServiceImport") == 1
    assert total_writes([sub2]) == (2, 2.0)


# --- bursts --------------------------------------------------------------------------------


async def test_a_burst_of_endpoint_slice_churn_coalesces_into_few_writes_of_the_last_state(
    mcsync: Members, namespace: str
) -> None:
    cs = mcsync.cs
    await export_hello(cs, "cluster-1", namespace)
    name = await add_slice(cs, "cluster-1", namespace, ["10.1.0.0"])
    await eventually(lambda: converged(cs, namespace, ["cluster-1"]))
    subs = list(mcsync.members.values())
    await quiet(subs)
    before = {m.cluster: api_writes(m, "EndpointSlice") for m in subs}

    updates = 50
    k = cs["cluster-1"].kube
    for i in range(1, updates + 1):
        await k.apply(
            kube.ENDPOINT_SLICES, endpoint_slice(namespace, "hello", name, [f"10.1.0.{i}"])
        )
    last = {c: [f"10.1.0.{updates}"] for c in ["cluster-1"]}
    await eventually(lambda: everywhere(cs, lambda cs, c: slices_by_source(cs, c, namespace), last))
    await quiet(subs)
    for m in subs:
        writes = api_writes(m, "EndpointSlice") - before[m.cluster]
        assert 1 <= writes <= updates // 5, (m.cluster, writes)
    for c in cs.clusters:
        assert await slices_by_source(cs, c.name, namespace) == last


# --- a stale publisher replica -------------------------------------------------------------


async def test_a_stale_publisher_replica_gets_conflicts_and_never_overwrites_newer_state(
    members: Members, namespace: str
) -> None:
    cs = members.cs
    # Instance ids order the replicas: were the duplicate id noticed, "b" would stop, not "a".
    await members.start("cluster-1", instance="cluster-1-a")
    for c in ("cluster-2", "cluster-3"):
        await members.start(c)
    await export_hello(cs, "cluster-1", namespace)
    await eventually(lambda: converged(cs, namespace, ["cluster-1"], slices=False))

    # A second publisher of cluster-1 that acts only 2 s after it notices a change: by then the
    # first one has moved the log on, so the replica's appends expect an old sequence. (A short
    # lease lets it start without waiting for the first one to go silent.)
    replica = await members.start_as(
        "cluster-1/replica",
        "cluster-1",
        subscribe=False,
        instance="cluster-1-b",
        publisher_settings=PublisherSettings(flush_interval=2.0),
        reporter_settings=ReporterSettings(lease=0.2),
    )
    assert replica.publisher is not None
    assert replica.publisher.appends == 1  # its own snapshot marker: nothing differed

    k = cs["cluster-1"].kube
    await k.apply(kube.SERVICES, hello_service(namespace, sessionAffinity="None"))
    await asyncio.sleep(0.3)
    await k.apply(kube.SERVICES, hello_service(namespace, sessionAffinity="None", ports=PORTS3))

    async def replica_conflicted() -> bool:
        got = replica.metrics.registry.get_sample_value(
            "mcsync_append_conflicts_total", {"cluster": "cluster-1"}
        )
        return (got or 0) >= 1

    await eventually(replica_conflicted, 10)
    await asyncio.sleep(0.5)
    assert replica.publisher.appends == 1  # it lost every race and wrote nothing

    # The log's last export event is the newest state, written by the first publisher.
    subject = subjects.export(members.clusterset_name, "cluster-1", namespace, "hello")
    nc = await jetstream.connect(cs.nats.url)
    try:
        last = (
            await jetstream.EventLog(nc, members.clusterset_name).read_last_per_subject(subject)
        )[subject]
    finally:
        await nc.close()
    assert isinstance(last, Envelope)
    assert isinstance(last.event, ev.ExportUpserted)
    assert last.event.session_affinity == "None"
    assert [p.name for p in last.event.ports] == ["tcp", "udp", "http"]

    async def imported_newest() -> bool:
        imports = await imports_in(cs, namespace)
        return imports is not None and all(
            len(i["spec"]["ports"]) == 3 and i["spec"]["sessionAffinity"] == "None"
            for i in imports.values()
        )

    await eventually(imported_newest)
    await holds(imported_newest, 1.0)
