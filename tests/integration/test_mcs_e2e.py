"""Multi-Cluster Services end to end: three real apiservers, real NATS, real publishers and
subscribers. Timing bounds follow the conformance suite (imports within 20 s, "must stay"
checks held for 5 s)."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import pytest

from engine import kube
from engine.core import plan
from tests.conftest import ClusterSet
from tests.integration.conftest import (
    Members,
    condition,
    endpoint_slice,
    eventually,
    holds,
    service,
    service_export,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_namespaces")]


async def get_import(cs: ClusterSet, cluster: str, ns: str, name: str = "hello") -> kube.Obj | None:
    return await cs[cluster].kube.get(kube.SERVICE_IMPORTS, ns, name)


async def all_imports(cs: ClusterSet, ns: str, name: str = "hello") -> list[kube.Obj] | None:
    got = [await get_import(cs, c.name, ns, name) for c in cs.clusters]
    found = [g for g in got if g]
    return found if len(found) == len(got) else None


async def no_imports(cs: ClusterSet, ns: str, name: str = "hello") -> bool:
    return all([await get_import(cs, c.name, ns, name) is None for c in cs.clusters])


async def export(
    cs: ClusterSet, cluster: str, ns: str, svc: kube.Obj | None = None, **se: Any
) -> None:
    k = cs[cluster].kube
    await k.create(kube.SERVICES, svc or service(ns))
    await k.create(kube.SERVICE_EXPORTS, service_export(ns, **se))


async def test_an_exported_clusterip_service_is_imported_in_every_cluster(
    mcsync: Members, namespace: str
) -> None:
    cs = mcsync.cs
    await export(cs, "cluster-1", namespace)
    imports = await eventually(lambda: all_imports(cs, namespace))
    for imp in imports:
        assert imp["spec"]["type"] == "ClusterSetIP"
        ports = sorted((p["name"], p["protocol"], p["port"]) for p in imp["spec"]["ports"])
        assert ports == [("tcp", "TCP", 42), ("udp", "UDP", 42)]

    # Each cluster allocates its own VIP: the derived Service's ClusterIP.
    async def with_ips() -> list[kube.Obj] | None:
        got = await all_imports(cs, namespace)
        return got if got and all(i["spec"].get("ips") for i in got) else None

    imports = await eventually(with_ips)
    for imp, c in zip(imports, cs.clusters, strict=True):
        ips = imp["spec"]["ips"]
        assert len(ips) == len(imp["spec"]["ipFamilies"])
        derived = await c.kube.get(kube.SERVICES, namespace, plan.derived_name(namespace, "hello"))
        assert derived is not None
        assert ips == derived["spec"]["clusterIPs"]
        assert ipaddress.ip_address(ips[0]).version == 4
    se = await cs["cluster-1"].kube.get(kube.SERVICE_EXPORTS, namespace, "hello")
    valid = await eventually(lambda: _cond(cs, "cluster-1", namespace, "Valid"))
    assert valid["status"] == "True"
    del se


async def _cond(
    cs: ClusterSet, cluster: str, ns: str, ctype: str, name: str = "hello"
) -> dict[str, Any] | None:
    se = await cs[cluster].kube.get(kube.SERVICE_EXPORTS, ns, name)
    return condition(se, ctype)


async def test_unexporting_deletes_the_import_everywhere(mcsync: Members, namespace: str) -> None:
    cs = mcsync.cs
    await export(cs, "cluster-1", namespace)
    await eventually(lambda: all_imports(cs, namespace))
    await cs["cluster-1"].kube.delete(kube.SERVICE_EXPORTS, namespace, "hello")
    await eventually(lambda: no_imports(cs, namespace))
    for c in cs.clusters:
        derived = await c.kube.get(kube.SERVICES, namespace, plan.derived_name(namespace, "hello"))
        assert derived is None


async def test_an_import_exists_as_long_as_one_exporter_remains(
    mcsync: Members, namespace: str
) -> None:
    cs = mcsync.cs
    await export(cs, "cluster-1", namespace)
    await eventually(lambda: all_imports(cs, namespace))
    await asyncio.sleep(1.1)
    await export(cs, "cluster-2", namespace)
    await eventually(lambda: _clusters_are(cs, namespace, ["cluster-1", "cluster-2"]))
    await cs["cluster-1"].kube.delete(kube.SERVICE_EXPORTS, namespace, "hello")
    await eventually(lambda: _clusters_are(cs, namespace, ["cluster-2"]))
    await holds(lambda: all_imports(cs, namespace), 5)
    await cs["cluster-2"].kube.delete(kube.SERVICE_EXPORTS, namespace, "hello")
    await eventually(lambda: no_imports(cs, namespace))


async def _clusters_are(cs: ClusterSet, ns: str, want: list[str]) -> bool:
    imports = await all_imports(cs, ns)
    if not imports:
        return False
    return all(
        [c["cluster"] for c in (i.get("status") or {}).get("clusters", [])] == want for i in imports
    )


async def test_endpoints_become_mcs_endpoint_slices_in_every_cluster(
    mcsync: Members, namespace: str
) -> None:
    cs = mcsync.cs
    await export(cs, "cluster-1", namespace)
    await cs["cluster-1"].kube.create(
        kube.ENDPOINT_SLICES,
        endpoint_slice(namespace, "hello", "hello-abc", ["10.1.0.5", "10.1.0.6"]),
    )

    async def slices_everywhere() -> list[kube.Obj] | None:
        out = []
        for c in cs.clusters:
            items, _ = await c.kube.list(
                kube.ENDPOINT_SLICES, namespace, f"{plan.LABEL_SERVICE_NAME}=hello"
            )
            if len(items) != 1:
                return None
            out.append(items[0])
        return out

    slices = await eventually(slices_everywhere)
    for s in slices:
        labels = s["metadata"]["labels"]
        assert labels[plan.LABEL_SOURCE_CLUSTER] == "cluster-1"
        assert labels[plan.LABEL_SLICE_MANAGED_BY] == "mcsync.io"
        assert labels["kubernetes.io/service-name"] == plan.derived_name(namespace, "hello")
        assert s["addressType"] == "IPv4"
        assert sorted(a for e in s["endpoints"] for a in e["addresses"]) == ["10.1.0.5", "10.1.0.6"]
        assert {(p["name"], p["port"]) for p in s["ports"]} == {("tcp", 8080), ("udp", 8080)}
    await cs["cluster-1"].kube.delete(kube.SERVICE_EXPORTS, namespace, "hello")

    async def slices_gone() -> bool:
        for c in cs.clusters:
            items, _ = await c.kube.list(
                kube.ENDPOINT_SLICES, namespace, f"{plan.LABEL_SERVICE_NAME}=hello"
            )
            if items:
                return False
        return True

    await eventually(slices_gone)
