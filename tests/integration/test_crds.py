"""The CRDs in deploy/crds, exercised against real kube-apiservers.

Nothing is installed here: the session fixture ``clusterset`` (tests/conftest.py) has already
installed and established the CRDs in every cluster, and ``namespace`` is a fresh namespace that
exists in every cluster. Unless a test says otherwise it talks to the first cluster only, since
every cluster gets the same CRDs.

Contract: /work/shared/specs/mcs-api.md §1, §2 and §9 item 78, and
/work/shared/specs/inventory-and-leases.md §1 and §4.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from kubernetes_asyncio.client import (
    ApiClient,
    ApiException,
    ApiextensionsV1Api,
    CustomObjectsApi,
)

pytestmark = pytest.mark.integration

MCS = "multicluster.x-k8s.io"
ABOUT = "about.k8s.io"
MCS_VERSIONS = ("v1alpha1", "v1beta1")
ABOUT_VERSIONS = ("v1alpha1", "v1beta1")
PROFILE_VERSION = "v1alpha1"  # the storage version
PROFILE_VERSIONS = ("v1alpha1", "v1alpha2")
MERGE_PATCH = "application/merge-patch+json"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"
NOW = "2026-01-02T03:04:05Z"
LATER = "2026-01-02T04:05:06Z"
DELETE = object()  # marks a key to remove in with_changes()

Obj = dict[str, Any]


# --------------------------------------------------------------------------- helpers


def with_changes(base: Obj, changes: Obj) -> Obj:
    """A deep copy of ``base`` with top-level keys replaced, or removed when set to DELETE."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if value is DELETE:
            out.pop(key, None)
        else:
            out[key] = copy.deepcopy(value)
    return out


def condition(
    type_: str = "Ready",
    status: str = "True",
    reason: str = "Ready",
    message: str = "",
    **extra: Any,
) -> Obj:
    cond: Obj = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": NOW,
    }
    cond.update(extra)
    return cond


def service_export(name: str, version: str = "v1beta1", spec: Obj | None = None) -> Obj:
    body: Obj = {
        "apiVersion": f"{MCS}/{version}",
        "kind": "ServiceExport",
        "metadata": {"name": name},
    }
    if spec is not None:
        body["spec"] = spec
    return body


# Shaped like the KEP-1645 ServiceImport example: one VIP, one named TCP port.
IMPORT_SPEC: Obj = {
    "type": "ClusterSetIP",
    "ips": ["42.42.42.42"],
    "ipFamilies": ["IPv4"],
    "ports": [{"name": "http", "protocol": "TCP", "port": 80}],
    "sessionAffinity": "None",
}


def service_import(name: str, version: str = "v1beta1", spec: Obj | None = None) -> Obj:
    return {
        "apiVersion": f"{MCS}/{version}",
        "kind": "ServiceImport",
        "metadata": {"name": name},
        "spec": copy.deepcopy(IMPORT_SPEC if spec is None else spec),
    }


def cluster_profile(
    name: str,
    manager: str = "mcsync-test",
    spec: Obj | None = None,
    version: str = PROFILE_VERSION,
) -> Obj:
    return {
        "apiVersion": f"{MCS}/{version}",
        "kind": "ClusterProfile",
        "metadata": {"name": name, "labels": {"x-k8s.io/cluster-manager": manager}},
        "spec": (
            {"displayName": name, "clusterManager": {"name": manager}} if spec is None else spec
        ),
    }


def cluster_property(name: str, version: str, spec: Obj | None) -> Obj:
    body: Obj = {
        "apiVersion": f"{ABOUT}/{version}",
        "kind": "ClusterProperty",
        "metadata": {"name": name},
    }
    if spec is not None:
        body["spec"] = spec
    return body


CA_DATA = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nnot-a-real-ca\n").decode()

# Shaped like the KEP-4322 "API Example", plus an access provider as multicluster-runtime reads it.
PROFILE_STATUS: Obj = {
    "version": {"kubernetes": "1.28.0"},
    "properties": [
        {"name": "clusterset.k8s.io", "value": "some-clusterset", "lastObservedTime": NOW},
        {"name": "location", "value": "apac"},
    ],
    "conditions": [
        condition("ControlPlaneHealthy", "True", "Healthy", "all control plane checks pass"),
        condition("Joined", "True", "Joined", "cluster joined the inventory"),
    ],
    "accessProviders": [
        {
            "name": "secretreader",
            "cluster": {
                "server": "https://spoke-1.example.com:6443",
                "certificate-authority-data": CA_DATA,
                "extensions": [
                    {
                        "name": "client.authentication.k8s.io/exec",
                        "extension": {"clusterName": "spoke-1", "nested": {"list": [1, "two"]}},
                    }
                ],
            },
        }
    ],
}


def error_text(exc: ApiException) -> str:
    body = exc.body
    if isinstance(body, bytes):
        return body.decode()
    return str(body)


async def expect_invalid(call: Awaitable[Any], *fragments: str) -> str:
    """Await ``call``, require an HTTP 422 whose body names every fragment, return the body."""
    with pytest.raises(ApiException) as excinfo:
        await call
    text = error_text(excinfo.value)
    assert excinfo.value.status == 422, text
    for fragment in fragments:
        assert fragment in text, text
    return text


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def api(clusterset: Any) -> CustomObjectsApi:
    return CustomObjectsApi(clusterset.clusters[0].api)


@pytest.fixture
def api_client(clusterset: Any) -> ApiClient:
    api_client: ApiClient = clusterset.clusters[0].api
    return api_client


@pytest.fixture
async def property_name(api: CustomObjectsApi) -> AsyncIterator[str]:
    """A unique ClusterProperty name (cluster-scoped, so no namespace cleans it up)."""
    name = f"{unique('prop')}.test.mcsync.example.com"
    yield name
    try:
        await api.delete_cluster_custom_object(ABOUT, "v1beta1", "clusterproperties", name)
    except ApiException as exc:
        if exc.status != 404:
            raise


# Every namespaced kind with a status subresource: plural, served versions, object factory,
# a valid status, and a spec change to try through /status.
NamespacedKind = tuple[str, tuple[str, ...], Callable[[str, str], Obj], Obj, Obj]

NAMESPACED_KINDS: dict[str, NamespacedKind] = {
    "ServiceExport": (
        "serviceexports",
        MCS_VERSIONS,
        service_export,
        {"conditions": [condition("Valid", "True", "Valid")]},
        {"exportedLabels": {"changed": "through-status"}},
    ),
    "ServiceImport": (
        "serviceimports",
        MCS_VERSIONS,
        service_import,
        {
            "clusters": [{"cluster": "cluster-1"}],
            "conditions": [condition("Ready", "True", "Ready")],
            "endpointSliceObjects": "Present",
        },
        {**IMPORT_SPEC, "type": "Headless", "ips": []},
    ),
    "ClusterProfile": (
        "clusterprofiles",
        PROFILE_VERSIONS,
        lambda name, version: cluster_profile(name, version=version),
        {"conditions": [condition("ControlPlaneHealthy", "True", "Healthy")]},
        {"displayName": "changed-through-status", "clusterManager": {"name": "mcsync-test"}},
    ),
}
KIND_VERSIONS = [
    pytest.param(kind, version, id=f"{kind}-{version}")
    for kind, (_, versions, *_rest) in NAMESPACED_KINDS.items()
    for version in versions
]


async def create_namespaced(
    api: CustomObjectsApi, namespace: str, kind: str, version: str, name: str
) -> Obj:
    plural, _, factory, _, _ = NAMESPACED_KINDS[kind]
    created: Obj = await api.create_namespaced_custom_object(
        MCS, version, namespace, plural, factory(name, version)
    )
    return created


async def patch_status(
    api: CustomObjectsApi, namespace: str, kind: str, version: str, name: str, status: Obj
) -> Obj:
    """Merge-patch ``{"status": status}`` through the status subresource."""
    plural = NAMESPACED_KINDS[kind][0]
    patched: Obj = await api.patch_namespaced_custom_object_status(  # type: ignore[call-arg]  # the stub lacks _content_type, which the client accepts
        MCS, version, namespace, plural, name, {"status": status}, _content_type=MERGE_PATCH
    )
    return patched


async def get_namespaced(
    api: CustomObjectsApi, namespace: str, kind: str, version: str, name: str
) -> Obj:
    plural = NAMESPACED_KINDS[kind][0]
    got: Obj = await api.get_namespaced_custom_object(MCS, version, namespace, plural, name)
    return got


async def get_table(client: ApiClient, path: str) -> Obj:
    table: Obj = await client.call_api(
        path,
        "GET",
        header_params={"Accept": TABLE},
        response_types_map={200: "object"},
        auth_settings=["BearerToken"],
        _return_http_data_only=True,
    )
    return table


# --------------------------------------------------------------------------- discovery

SERVED = (
    [
        pytest.param(
            MCS,
            version,
            "serviceexports",
            "ServiceExport",
            True,
            ["svcex", "svcexport"],
            ["multicluster"],
            id=f"serviceexports-{version}",
        )
        for version in MCS_VERSIONS
    ]
    + [
        pytest.param(
            MCS,
            version,
            "serviceimports",
            "ServiceImport",
            True,
            ["svcim", "svcimport"],
            ["multicluster"],
            id=f"serviceimports-{version}",
        )
        for version in MCS_VERSIONS
    ]
    + [
        pytest.param(
            MCS,
            version,
            "clusterprofiles",
            "ClusterProfile",
            True,
            None,
            ["multicluster"],
            id=f"clusterprofiles-{version}",
        )
        for version in PROFILE_VERSIONS
    ]
    + [
        pytest.param(
            ABOUT,
            version,
            "clusterproperties",
            "ClusterProperty",
            False,
            None,
            ["multicluster"],
            id=f"clusterproperties-{version}",
        )
        for version in ABOUT_VERSIONS
    ]
)


@pytest.mark.parametrize(
    ("group", "version", "plural", "kind", "namespaced", "short_names", "categories"), SERVED
)
async def test_discovery_lists_the_resource_with_its_scope_short_names_and_categories(
    api: CustomObjectsApi,
    group: str,
    version: str,
    plural: str,
    kind: str,
    namespaced: bool,
    short_names: list[str] | None,
    categories: list[str] | None,
) -> None:
    resources = await api.get_api_resources(group, version)
    by_name = {r.name: r for r in resources.resources}
    resource = by_name[plural]
    assert resource.kind == kind
    assert resource.namespaced is namespaced
    assert (resource.short_names or None) == short_names
    assert (resource.categories or None) == categories
    assert f"{plural}/status" in by_name


def _text(value: object) -> str:
    """A value of a ``pytest.param`` that is a string."""
    assert isinstance(value, str), value
    return value


async def test_every_cluster_serves_every_crd_version(clusterset: Any) -> None:
    wanted = [(_text(p.values[0]), _text(p.values[1]), _text(p.values[2])) for p in SERVED]
    for cluster in clusterset.clusters:
        api = CustomObjectsApi(cluster.api)
        for group, version, plural in wanted:
            resources = await api.get_api_resources(group, version)
            assert plural in {r.name for r in resources.resources}, (cluster.name, version)


async def test_every_cluster_accepts_a_serviceexport_through_both_versions(
    clusterset: Any, namespace: str
) -> None:
    for cluster in clusterset.clusters:
        api = CustomObjectsApi(cluster.api)
        for version in MCS_VERSIONS:
            name = f"svc-{version}"
            created = await api.create_namespaced_custom_object(
                MCS, version, namespace, "serviceexports", service_export(name, version)
            )
            assert created["metadata"]["name"] == name, cluster.name


async def test_clusterprofile_is_not_served_as_v1beta1(
    api: CustomObjectsApi, namespace: str
) -> None:
    """ClusterProfile exists as v1alpha1 and v1alpha2 only (cluster-inventory-api v0.2.0)."""
    resources = await api.get_api_resources(MCS, "v1beta1")
    assert "clusterprofiles" not in {r.name for r in resources.resources}
    body = cluster_profile("member")
    body["apiVersion"] = f"{MCS}/v1beta1"
    with pytest.raises(ApiException) as excinfo:
        await api.create_namespaced_custom_object(
            MCS, "v1beta1", namespace, "clusterprofiles", body
        )
    assert excinfo.value.status == 404, error_text(excinfo.value)


async def test_clusterproperty_crd_is_recognised_as_api_approved(clusterset: Any) -> None:
    """about.k8s.io is a protected group; the annotation must be an approval URL."""
    ext = ApiextensionsV1Api(clusterset.clusters[0].api)
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        crd = await ext.read_custom_resource_definition(f"clusterproperties.{ABOUT}")
        conditions = {c.type: c.status for c in (crd.status.conditions or [])}
        if "KubernetesAPIApprovalPolicyConformant" in conditions:
            break
        assert asyncio.get_running_loop().time() < deadline, conditions
        await asyncio.sleep(0.5)
    assert conditions["KubernetesAPIApprovalPolicyConformant"] == "True"
    assert conditions["Established"] == "True"


# --------------------------------------------------------------------------- ServiceExport


@pytest.mark.parametrize("version", MCS_VERSIONS)
async def test_serviceexport_shaped_like_the_upstream_example_is_accepted(
    api: CustomObjectsApi, namespace: str, version: str
) -> None:
    spec = {
        "exportedLabels": {"app": "nginx", "tier": "frontend"},
        "exportedAnnotations": {"example.com/owner": "team-a"},
    }
    created = await api.create_namespaced_custom_object(
        MCS, version, namespace, "serviceexports", service_export("nginx", version, spec)
    )
    assert created["apiVersion"] == f"{MCS}/{version}"
    assert created["spec"] == spec
    for other in MCS_VERSIONS:
        got = await get_namespaced(api, namespace, "ServiceExport", other, "nginx")
        assert got["apiVersion"] == f"{MCS}/{other}"
        assert got["spec"] == spec


async def test_serviceexport_without_spec_is_accepted(
    api: CustomObjectsApi, namespace: str
) -> None:
    created = await api.create_namespaced_custom_object(
        MCS, "v1beta1", namespace, "serviceexports", service_export("bare")
    )
    assert created.get("spec") in (None, {})


@pytest.mark.parametrize("version", MCS_VERSIONS)
async def test_serviceexport_with_a_non_string_exported_label_is_rejected(
    api: CustomObjectsApi, namespace: str, version: str
) -> None:
    body = service_export("bad-labels", version, {"exportedLabels": {"replicas": 3}})
    await expect_invalid(
        api.create_namespaced_custom_object(MCS, version, namespace, "serviceexports", body),
        "spec.exportedLabels",
    )


# --------------------------------------------------------------------------- ServiceImport


@pytest.mark.parametrize("version", MCS_VERSIONS)
async def test_serviceimport_shaped_like_the_upstream_example_is_accepted(
    api: CustomObjectsApi, namespace: str, version: str
) -> None:
    created = await api.create_namespaced_custom_object(
        MCS, version, namespace, "serviceimports", service_import("nginx", version)
    )
    assert created["spec"] == IMPORT_SPEC
    for other in MCS_VERSIONS:
        got = await get_namespaced(api, namespace, "ServiceImport", other, "nginx")
        assert got["apiVersion"] == f"{MCS}/{other}"
        assert got["spec"] == IMPORT_SPEC


@pytest.mark.parametrize("version", MCS_VERSIONS)
async def test_dual_stack_serviceimport_using_every_optional_field_is_accepted(
    api: CustomObjectsApi, namespace: str, version: str
) -> None:
    spec = {
        "type": "ClusterSetIP",
        "ips": ["10.96.10.10", "fd00:10:96::10"],
        "ipFamilies": ["IPv4", "IPv6"],
        "ports": [
            {"name": "http", "protocol": "TCP", "appProtocol": "kubernetes.io/h2c", "port": 80},
            {"name": "dns", "protocol": "UDP", "port": 53},
            {"name": "sig", "protocol": "SCTP", "port": 9999},
        ],
        "sessionAffinity": "ClientIP",
        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}},
        "internalTrafficPolicy": "Local",
        "trafficDistribution": "PreferClose",
    }
    created = await api.create_namespaced_custom_object(
        MCS, version, namespace, "serviceimports", service_import("dual", version, spec)
    )
    assert created["spec"] == spec


@pytest.mark.parametrize("version", MCS_VERSIONS)
async def test_headless_serviceimport_without_ips_is_accepted(
    api: CustomObjectsApi, namespace: str, version: str
) -> None:
    spec = {
        "type": "Headless",
        "ipFamilies": ["IPv6"],
        "ports": [{"name": "db", "protocol": "TCP", "port": 5432}],
    }
    created = await api.create_namespaced_custom_object(
        MCS, version, namespace, "serviceimports", service_import("headless", version, spec)
    )
    assert created["spec"] == spec


@pytest.mark.parametrize("version", MCS_VERSIONS)
async def test_serviceimport_port_protocol_defaults_to_tcp(
    api: CustomObjectsApi, namespace: str, version: str
) -> None:
    spec = with_changes(IMPORT_SPEC, {"ports": [{"port": 8080}]})
    created = await api.create_namespaced_custom_object(
        MCS, version, namespace, "serviceimports", service_import("defaulted", version, spec)
    )
    assert created["spec"]["ports"] == [{"protocol": "TCP", "port": 8080}]


INVALID_IMPORT_SPECS = [
    pytest.param({"type": "LoadBalancer"}, "spec.type", id="unknown-type"),
    pytest.param({"type": DELETE}, "spec.type", id="no-type"),
    pytest.param({"ports": DELETE}, "spec.ports", id="no-ports"),
    pytest.param({"ips": ["10.0.0.1", "10.0.0.2", "10.0.0.3"]}, "spec.ips", id="three-ips"),
    pytest.param(
        {"ipFamilies": ["IPv4", "IPv6", "IPv4"]}, "spec.ipFamilies", id="three-ip-families"
    ),
    pytest.param({"ipFamilies": ["IPv4", "IPv4"]}, "spec.ipFamilies", id="repeated-ip-family"),
    pytest.param({"ipFamilies": ["IPv5"]}, "spec.ipFamilies", id="unknown-ip-family"),
    pytest.param(
        {"ports": [{"name": "http", "protocol": "TCP"}]}, "spec.ports[0].port", id="port-missing"
    ),
    pytest.param(
        {"ports": [{"name": "http", "port": "eighty"}]},
        "spec.ports[0].port",
        id="port-not-a-number",
    ),
    pytest.param(
        {"ports": [{"protocol": "HTTP", "port": 80}]}, "spec.ports[0].protocol", id="bad-protocol"
    ),
    pytest.param({"sessionAffinity": "Sticky"}, "spec.sessionAffinity", id="bad-session-affinity"),
    pytest.param(
        {"internalTrafficPolicy": "Node"},
        "spec.internalTrafficPolicy",
        id="bad-internal-traffic-policy",
    ),
    pytest.param(
        {"sessionAffinityConfig": {"clientIP": {"timeoutSeconds": "forever"}}},
        "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
        id="non-numeric-affinity-timeout",
    ),
]


@pytest.mark.parametrize("version", MCS_VERSIONS)
@pytest.mark.parametrize(("changes", "field_path"), INVALID_IMPORT_SPECS)
async def test_serviceimport_with_an_invalid_spec_is_rejected(
    api: CustomObjectsApi, namespace: str, version: str, changes: Obj, field_path: str
) -> None:
    body = service_import("invalid", version, with_changes(IMPORT_SPEC, changes))
    await expect_invalid(
        api.create_namespaced_custom_object(MCS, version, namespace, "serviceimports", body),
        field_path,
    )


@pytest.mark.parametrize("version", MCS_VERSIONS)
async def test_serviceimport_status_written_through_the_subresource_round_trips(
    api: CustomObjectsApi, namespace: str, version: str
) -> None:
    await create_namespaced(api, namespace, "ServiceImport", version, "nginx")
    status = {
        "clusters": [{"cluster": "cluster-1"}, {"cluster": "cluster-2"}],
        "conditions": [condition("Ready", "False", "IPFamilyNotSupported", "no IPv6 here")],
        "endpointSliceObjects": "Absent",
    }
    patched = await patch_status(api, namespace, "ServiceImport", version, "nginx", status)
    assert patched["status"] == status
    for other in MCS_VERSIONS:
        got = await get_namespaced(api, namespace, "ServiceImport", other, "nginx")
        assert got["status"] == status


INVALID_IMPORT_STATUSES = [
    pytest.param(
        {"endpointSliceObjects": "Maybe"},
        "status.endpointSliceObjects",
        id="bad-endpointslice-objects",
    ),
    pytest.param(
        {"clusters": [{}]}, "status.clusters[0].cluster", id="cluster-entry-without-cluster"
    ),
    pytest.param(
        {"clusters": [{"cluster": "cluster-1"}, {"cluster": "cluster-1"}]},
        "status.clusters[1]",
        id="repeated-cluster",
    ),
]


@pytest.mark.parametrize(("status", "field_path"), INVALID_IMPORT_STATUSES)
async def test_serviceimport_with_an_invalid_status_is_rejected(
    api: CustomObjectsApi, namespace: str, status: Obj, field_path: str
) -> None:
    await create_namespaced(api, namespace, "ServiceImport", "v1beta1", "nginx")
    await expect_invalid(
        patch_status(api, namespace, "ServiceImport", "v1beta1", "nginx", status), field_path
    )


async def test_serviceimport_table_shows_type_ip_and_age_columns(
    api: CustomObjectsApi, api_client: ApiClient, namespace: str
) -> None:
    await create_namespaced(api, namespace, "ServiceImport", "v1beta1", "nginx")
    table = await get_table(
        api_client, f"/apis/{MCS}/v1beta1/namespaces/{namespace}/serviceimports"
    )
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names[-3:] == ["Type", "IP", "Age"]
    (row,) = table["rows"]
    cells = dict(zip(names, row["cells"], strict=True))
    assert cells["Type"] == "ClusterSetIP"
    assert "42.42.42.42" in str(cells["IP"])


# --------------------------------------------------------------------------- conditions


@pytest.mark.parametrize(("kind", "version"), KIND_VERSIONS)
async def test_condition_with_a_space_in_its_reason_is_rejected(
    api: CustomObjectsApi, namespace: str, kind: str, version: str
) -> None:
    await create_namespaced(api, namespace, kind, version, "obj")
    status = {"conditions": [condition("Conflict", "True", "Port Conflict")]}
    await expect_invalid(
        patch_status(api, namespace, kind, version, "obj", status),
        "status.conditions[0].reason",
    )


@pytest.mark.parametrize(("kind", "version"), KIND_VERSIONS)
async def test_condition_without_last_transition_time_is_rejected(
    api: CustomObjectsApi, namespace: str, kind: str, version: str
) -> None:
    await create_namespaced(api, namespace, kind, version, "obj")
    cond = condition("Ready", "True", "Ready")
    del cond["lastTransitionTime"]
    await expect_invalid(
        patch_status(api, namespace, kind, version, "obj", {"conditions": [cond]}),
        "status.conditions[0].lastTransitionTime",
    )


@pytest.mark.parametrize(("kind", "version"), KIND_VERSIONS)
async def test_comma_joined_conflict_reasons_are_accepted(
    api: CustomObjectsApi, namespace: str, kind: str, version: str
) -> None:
    await create_namespaced(api, namespace, kind, version, "obj")
    cond = condition(
        "Conflict",
        "True",
        "PortConflict,TypeConflict",
        'Conflicting type. Using "ClusterSetIP" from oldest service export in "cluster-1".',
        observedGeneration=1,
    )
    patched = await patch_status(api, namespace, kind, version, "obj", {"conditions": [cond]})
    assert patched["status"]["conditions"] == [cond]


INVALID_CONDITIONS = [
    pytest.param({"reason": ""}, "status.conditions[0].reason", id="empty-reason"),
    pytest.param(
        {"reason": "1stReason"}, "status.conditions[0].reason", id="reason-starts-with-digit"
    ),
    pytest.param(
        {"reason": "Trailing,"}, "status.conditions[0].reason", id="reason-ends-with-comma"
    ),
    pytest.param({"reason": "R" * 1025}, "status.conditions[0].reason", id="reason-too-long"),
    pytest.param({"reason": DELETE}, "status.conditions[0].reason", id="no-reason"),
    pytest.param(
        {"status": "Yes"}, "status.conditions[0].status", id="status-not-true-false-unknown"
    ),
    pytest.param({"status": DELETE}, "status.conditions[0].status", id="no-status"),
    pytest.param({"type": DELETE}, "status.conditions[0].type", id="no-type"),
    pytest.param({"type": "Not A Type"}, "status.conditions[0].type", id="type-with-spaces"),
    pytest.param({"message": DELETE}, "status.conditions[0].message", id="no-message"),
    pytest.param({"message": "m" * 32769}, "status.conditions[0].message", id="message-too-long"),
    pytest.param(
        {"lastTransitionTime": "yesterday"},
        "status.conditions[0].lastTransitionTime",
        id="time-not-a-date-time",
    ),
    pytest.param(
        {"observedGeneration": -1},
        "status.conditions[0].observedGeneration",
        id="negative-generation",
    ),
]


@pytest.mark.parametrize(("kind", "version"), KIND_VERSIONS)
@pytest.mark.parametrize(("changes", "field_path"), INVALID_CONDITIONS)
async def test_condition_breaking_the_metav1_condition_schema_is_rejected(
    api: CustomObjectsApi,
    namespace: str,
    kind: str,
    version: str,
    changes: Obj,
    field_path: str,
) -> None:
    await create_namespaced(api, namespace, kind, version, "obj")
    cond = with_changes(condition("Ready", "True", "Ready", "fine"), changes)
    await expect_invalid(
        patch_status(api, namespace, kind, version, "obj", {"conditions": [cond]}), field_path
    )


@pytest.mark.parametrize(("kind", "version"), KIND_VERSIONS)
async def test_two_conditions_of_the_same_type_are_rejected(
    api: CustomObjectsApi, namespace: str, kind: str, version: str
) -> None:
    await create_namespaced(api, namespace, kind, version, "obj")
    status = {"conditions": [condition("Ready"), condition("Ready", "False", "Pending")]}
    await expect_invalid(
        patch_status(api, namespace, kind, version, "obj", status), "status.conditions[1]"
    )


@pytest.mark.parametrize(("kind", "version"), KIND_VERSIONS)
async def test_condition_with_an_empty_message_and_a_prefixed_type_is_accepted(
    api: CustomObjectsApi, namespace: str, kind: str, version: str
) -> None:
    await create_namespaced(api, namespace, kind, version, "obj")
    cond = condition("mcsync.example.com/Synced", "Unknown", "Pending", "")
    patched = await patch_status(api, namespace, kind, version, "obj", {"conditions": [cond]})
    assert patched["status"]["conditions"] == [cond]


# --------------------------------------------------------------------------- status subresource


@pytest.mark.parametrize(("kind", "version"), KIND_VERSIONS)
async def test_status_written_in_a_create_is_dropped(
    api: CustomObjectsApi, namespace: str, kind: str, version: str
) -> None:
    plural, _, factory, status, _ = NAMESPACED_KINDS[kind]
    body = factory("obj", version)
    body["status"] = copy.deepcopy(status)
    created = await api.create_namespaced_custom_object(MCS, version, namespace, plural, body)
    assert not created.get("status")
    got = await get_namespaced(api, namespace, kind, version, "obj")
    assert not got.get("status")


@pytest.mark.parametrize(("kind", "version"), KIND_VERSIONS)
async def test_status_patch_through_the_status_subresource_is_stored(
    api: CustomObjectsApi, namespace: str, kind: str, version: str
) -> None:
    created = await create_namespaced(api, namespace, kind, version, "obj")
    status = NAMESPACED_KINDS[kind][3]
    patched = await patch_status(api, namespace, kind, version, "obj", status)
    assert patched["status"] == status
    assert patched["metadata"]["generation"] == created["metadata"]["generation"]
    got = await api.get_namespaced_custom_object_status(
        MCS, version, namespace, NAMESPACED_KINDS[kind][0], "obj"
    )
    assert got["status"] == status


@pytest.mark.parametrize(("kind", "version"), KIND_VERSIONS)
async def test_status_patch_does_not_change_the_spec(
    api: CustomObjectsApi, namespace: str, kind: str, version: str
) -> None:
    created = await create_namespaced(api, namespace, kind, version, "obj")
    _, _, _, status, other_spec = NAMESPACED_KINDS[kind]
    body = {"spec": other_spec, "status": status}
    patched = await api.patch_namespaced_custom_object_status(  # type: ignore[call-arg]  # the stub lacks _content_type, which the client accepts
        MCS, version, namespace, NAMESPACED_KINDS[kind][0], "obj", body, _content_type=MERGE_PATCH
    )
    assert patched["status"] == status
    assert patched.get("spec") == created.get("spec")


@pytest.mark.parametrize(("kind", "version"), KIND_VERSIONS)
async def test_main_resource_patch_does_not_change_the_status(
    api: CustomObjectsApi, namespace: str, kind: str, version: str
) -> None:
    await create_namespaced(api, namespace, kind, version, "obj")
    plural, _, _, status, _ = NAMESPACED_KINDS[kind]
    await patch_status(api, namespace, kind, version, "obj", status)
    body = {
        "metadata": {"labels": {"touched": "yes"}},
        "status": {"conditions": [condition("Other", "False", "Ignored")]},
    }
    patched = await api.patch_namespaced_custom_object(  # type: ignore[call-arg]  # the stub lacks _content_type, which the client accepts
        MCS, version, namespace, plural, "obj", body, _content_type=MERGE_PATCH
    )
    assert patched["metadata"]["labels"]["touched"] == "yes"
    assert patched["status"] == status


# --------------------------------------------------------------------------- ClusterProfile


@pytest.mark.parametrize("version", PROFILE_VERSIONS)
async def test_clusterprofile_shaped_like_the_kep_example_is_accepted(
    api: CustomObjectsApi, namespace: str, version: str
) -> None:
    body = cluster_profile("cluster-us-east", "some-cluster-manager", version=version)
    created = await api.create_namespaced_custom_object(
        MCS, version, namespace, "clusterprofiles", body
    )
    assert created["spec"] == body["spec"]
    assert created["metadata"]["labels"] == body["metadata"]["labels"]
    patched = await patch_status(
        api, namespace, "ClusterProfile", version, "cluster-us-east", PROFILE_STATUS
    )
    assert patched["status"] == PROFILE_STATUS


@pytest.mark.parametrize("version", PROFILE_VERSIONS)
async def test_clusterprofile_with_deprecated_credential_providers_is_accepted(
    api: CustomObjectsApi, namespace: str, version: str
) -> None:
    """Kept in the schema both versions share, so no v1alpha1 writer loses it (upstream
    v1alpha2 has no such field; mcsync never writes it)."""
    await create_namespaced(api, namespace, "ClusterProfile", version, "legacy")
    status = {
        "credentialProviders": [
            {"name": "google", "cluster": {"server": "https://gke.example.com"}}
        ]
    }
    patched = await patch_status(api, namespace, "ClusterProfile", version, "legacy", status)
    assert patched["status"] == status


@pytest.mark.parametrize(("written", "read"), [PROFILE_VERSIONS, PROFILE_VERSIONS[::-1]])
async def test_a_clusterprofile_written_at_one_version_reads_the_same_at_the_other(
    api: CustomObjectsApi, namespace: str, written: str, read: str
) -> None:
    body = cluster_profile("member", version=written)
    await api.create_namespaced_custom_object(MCS, written, namespace, "clusterprofiles", body)
    stored = await patch_status(api, namespace, "ClusterProfile", written, "member", PROFILE_STATUS)
    got = await get_namespaced(api, namespace, "ClusterProfile", read, "member")
    assert got["apiVersion"] == f"{MCS}/{read}"
    assert got["spec"] == stored["spec"] == body["spec"]
    assert got["status"] == stored["status"] == PROFILE_STATUS
    assert got["metadata"]["labels"] == body["metadata"]["labels"]
    assert got["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]


async def test_clusterprofiles_are_stored_as_v1alpha1(clusterset: Any) -> None:
    """No storage migration on upgrade, and the CRD can go back to a v1alpha1-only one."""
    for cluster in clusterset.clusters:
        crd = await ApiextensionsV1Api(cluster.api).read_custom_resource_definition(
            f"clusterprofiles.{MCS}"
        )
        storage = [v.name for v in crd.spec.versions if v.storage]
        assert storage == ["v1alpha1"], cluster.name
        assert crd.status.stored_versions == ["v1alpha1"], cluster.name
        assert crd.spec.conversion.strategy == "None", cluster.name


@pytest.mark.parametrize("version", PROFILE_VERSIONS)
async def test_changing_the_cluster_manager_name_is_rejected(
    api: CustomObjectsApi, namespace: str, version: str
) -> None:
    await create_namespaced(api, namespace, "ClusterProfile", version, "member")
    patch = {"spec": {"clusterManager": {"name": "someone-else"}}}
    await expect_invalid(
        api.patch_namespaced_custom_object(  # type: ignore[call-arg]  # the stub lacks _content_type, which the client accepts
            MCS,
            version,
            namespace,
            "clusterprofiles",
            "member",
            patch,
            _content_type=MERGE_PATCH,
        ),
        "ClusterManager is immutable",
    )
    got = await get_namespaced(api, namespace, "ClusterProfile", version, "member")
    assert got["spec"]["clusterManager"] == {"name": "mcsync-test"}


async def test_changing_the_display_name_is_allowed(api: CustomObjectsApi, namespace: str) -> None:
    await create_namespaced(api, namespace, "ClusterProfile", PROFILE_VERSION, "member")
    patched = await api.patch_namespaced_custom_object(  # type: ignore[call-arg]  # the stub lacks _content_type, which the client accepts
        MCS,
        PROFILE_VERSION,
        namespace,
        "clusterprofiles",
        "member",
        {"spec": {"displayName": "Member One"}},
        _content_type=MERGE_PATCH,
    )
    assert patched["spec"] == {
        "displayName": "Member One",
        "clusterManager": {"name": "mcsync-test"},
    }


@pytest.mark.parametrize("version", PROFILE_VERSIONS)
@pytest.mark.parametrize("manager", ["m", "Some.Manager_1-x", "m" * 63])
async def test_a_cluster_manager_name_that_is_a_label_value_is_accepted(
    api: CustomObjectsApi, namespace: str, version: str, manager: str
) -> None:
    body = cluster_profile("member", manager, version=version)
    created = await api.create_namespaced_custom_object(
        MCS, version, namespace, "clusterprofiles", body
    )
    assert created["spec"]["clusterManager"]["name"] == manager


INVALID_PROFILE_SPECS = [
    pytest.param(None, "spec", id="no-spec"),
    pytest.param({"displayName": "x"}, "spec.clusterManager", id="no-cluster-manager"),
    pytest.param(
        {"clusterManager": {}}, "spec.clusterManager.name", id="cluster-manager-without-name"
    ),
    pytest.param(
        {"clusterManager": {"name": ""}}, "spec.clusterManager.name", id="empty-manager-name"
    ),
    pytest.param(
        {"clusterManager": {"name": "m" * 64}},
        "spec.clusterManager.name",
        id="manager-name-over-63",
    ),
    pytest.param(
        {"clusterManager": {"name": "Open Cluster Management"}},
        "spec.clusterManager.name",
        id="manager-name-not-a-label-value",
    ),
    pytest.param(
        {"clusterManager": {"name": "-mcsync"}},
        "spec.clusterManager.name",
        id="manager-name-starting-with-a-dash",
    ),
]


@pytest.mark.parametrize("version", PROFILE_VERSIONS)
@pytest.mark.parametrize(("spec", "field_path"), INVALID_PROFILE_SPECS)
async def test_clusterprofile_with_an_invalid_spec_is_rejected(
    api: CustomObjectsApi, namespace: str, spec: Obj | None, field_path: str, version: str
) -> None:
    body = cluster_profile("broken", version=version)
    if spec is None:
        del body["spec"]
    else:
        body["spec"] = spec
    await expect_invalid(
        api.create_namespaced_custom_object(MCS, version, namespace, "clusterprofiles", body),
        field_path,
    )


def _provider(name: str, **cluster: Any) -> Obj:
    return {"name": name, "cluster": {"server": "https://x.example.com", **cluster}}


SERVER_ERROR = "server must be a valid absolute URL with a host"
PROXY_ERROR = "proxy-url must be a valid URL with scheme http, https, or socks5 and a host"

INVALID_PROFILE_STATUSES = [
    pytest.param(
        {"properties": [{"name": "p", "value": "v" * 1025}]},
        "status.properties[0].value",
        id="property-value-over-1024",
    ),
    pytest.param(
        {"properties": [{"name": "p", "value": ""}]},
        "status.properties[0].value",
        id="empty-property-value",
    ),
    pytest.param(
        {"properties": [{"name": "", "value": "v"}]},
        "status.properties[0].name",
        id="empty-property-name",
    ),
    pytest.param(
        {"properties": [{"name": "n" * 254, "value": "v"}]},
        "status.properties[0].name",
        id="property-name-over-253",
    ),
    pytest.param(
        {"properties": [{"value": "v"}]}, "status.properties[0].name", id="property-without-name"
    ),
    pytest.param(
        {"properties": [{"name": "p", "value": "a"}, {"name": "p", "value": "b"}]},
        "status.properties[1]",
        id="repeated-property",
    ),
    pytest.param(
        {"properties": [{"name": "p", "value": "v", "lastObservedTime": "now"}]},
        "status.properties[0].lastObservedTime",
        id="observed-time-not-a-date-time",
    ),
    pytest.param(
        {"accessProviders": [{"name": "google", "cluster": {}}]},
        "status.accessProviders[0].cluster.server",
        id="access-provider-without-server",
    ),
    pytest.param(
        {"accessProviders": [{"cluster": {"server": "https://x"}}]},
        "status.accessProviders[0].name",
        id="access-provider-without-name",
    ),
    pytest.param(
        {"accessProviders": [_provider("google"), _provider("google")]},
        "status.accessProviders[1]",
        id="repeated-access-provider",
    ),
    pytest.param(
        {"accessProviders": [_provider("google", extensions=[{"name": "e"}])]},
        "status.accessProviders[0].cluster.extensions[0].extension",
        id="extension-without-payload",
    ),
    pytest.param(
        {"accessProviders": [_provider("google", **{"insecure-skip-tls-verify": "yes"})]},
        "insecure-skip-tls-verify",
        id="skip-tls-verify-not-a-boolean",
    ),
    # What v1alpha2 validates more strictly; one schema, so at both versions.
    pytest.param(
        {"accessProviders": [{"name": "google"}]},
        "status.accessProviders[0].cluster",
        id="access-provider-without-cluster",
    ),
    pytest.param(
        {"accessProviders": [_provider("")]},
        "status.accessProviders[0].name",
        id="empty-access-provider-name",
    ),
    pytest.param(
        {"accessProviders": [_provider("n" * 254)]},
        "status.accessProviders[0].name",
        id="access-provider-name-over-253",
    ),
    pytest.param(
        {"accessProviders": [_provider(f"p{i}") for i in range(65)]},
        "status.accessProviders",
        id="more-than-64-access-providers",
    ),
    pytest.param(
        {"accessProviders": [_provider("google", server="spoke-1.example.com:6443")]},
        SERVER_ERROR,
        id="server-without-scheme",
    ),
    pytest.param(
        {"accessProviders": [_provider("google", server="https://")]},
        SERVER_ERROR,
        id="server-without-host",
    ),
    pytest.param(
        {"accessProviders": [_provider("google", server="/api")]},
        SERVER_ERROR,
        id="server-a-path",
    ),
    pytest.param(
        {"accessProviders": [_provider("google", server="https://" + "h" * 2048)]},
        "status.accessProviders[0].cluster.server",
        id="server-over-2048",
    ),
    pytest.param(
        {"accessProviders": [_provider("google", **{"proxy-url": "ftp://proxy.example.com"})]},
        PROXY_ERROR,
        id="proxy-with-ftp-scheme",
    ),
    pytest.param(
        {"accessProviders": [_provider("google", **{"proxy-url": "http://"})]},
        PROXY_ERROR,
        id="proxy-without-host",
    ),
    pytest.param(
        {"accessProviders": [_provider("google", **{"proxy-url": "proxy.example.com:3128"})]},
        PROXY_ERROR,
        id="proxy-without-scheme",
    ),
    pytest.param(
        {"accessProviders": [_provider("g", extensions=[{"name": "", "extension": {}}])]},
        "status.accessProviders[0].cluster.extensions[0].name",
        id="empty-extension-name",
    ),
    pytest.param(
        {
            "accessProviders": [
                _provider(
                    "g",
                    extensions=[{"name": "e", "extension": {}}, {"name": "e", "extension": {}}],
                )
            ]
        },
        "status.accessProviders[0].cluster.extensions[1]",
        id="repeated-extension",
    ),
]


@pytest.mark.parametrize("version", PROFILE_VERSIONS)
@pytest.mark.parametrize(("status", "field_path"), INVALID_PROFILE_STATUSES)
async def test_clusterprofile_with_an_invalid_status_is_rejected(
    api: CustomObjectsApi, namespace: str, status: Obj, field_path: str, version: str
) -> None:
    await create_namespaced(api, namespace, "ClusterProfile", version, "member")
    await expect_invalid(
        patch_status(api, namespace, "ClusterProfile", version, "member", status),
        field_path,
    )


@pytest.mark.parametrize("version", PROFILE_VERSIONS)
async def test_the_most_a_v1alpha2_status_may_hold_is_accepted(
    api: CustomObjectsApi, namespace: str, version: str
) -> None:
    providers = [_provider(f"p{i}") for i in range(63)] + [
        _provider(
            "n" * 253,
            server="https://" + "h" * 2028 + ".example.com",  # 2048 characters
            **{
                "proxy-url": "socks5://proxy.example.com:1080",
                "tls-server-name": "t" * 253,
                "disable-compression": True,
            },
        )
    ]
    status = {"accessProviders": providers}
    await create_namespaced(api, namespace, "ClusterProfile", version, "member")
    patched = await patch_status(api, namespace, "ClusterProfile", version, "member", status)
    assert patched["status"] == status
    for proxy in ("http://proxy.example.com:3128", "https://proxy.example.com", ""):
        status = {"accessProviders": [_provider("p", **{"proxy-url": proxy})]}
        patched = await patch_status(api, namespace, "ClusterProfile", version, "member", status)
        assert patched["status"]["accessProviders"] == status["accessProviders"]


@pytest.mark.parametrize("version", PROFILE_VERSIONS)
async def test_clusterprofile_table_shows_manager_version_and_health(
    api: CustomObjectsApi, api_client: ApiClient, namespace: str, version: str
) -> None:
    await create_namespaced(api, namespace, "ClusterProfile", version, "member")
    await patch_status(api, namespace, "ClusterProfile", version, "member", PROFILE_STATUS)
    table = await get_table(
        api_client, f"/apis/{MCS}/{version}/namespaces/{namespace}/clusterprofiles"
    )
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names == ["Name", "Display Name", "Manager", "Version", "Healthy", "Age"]
    (row,) = table["rows"]
    assert row["cells"][:5] == ["member", "member", "mcsync-test", "1.28.0", "True"]


# --------------------------------------------------------------------------- ClusterProperty


@pytest.mark.parametrize("version", ABOUT_VERSIONS)
async def test_clusterproperty_is_accepted_and_readable_through_both_versions(
    api: CustomObjectsApi, property_name: str, version: str
) -> None:
    body = cluster_property(property_name, version, {"value": "cluster-1"})
    created = await api.create_cluster_custom_object(ABOUT, version, "clusterproperties", body)
    assert created["apiVersion"] == f"{ABOUT}/{version}"
    assert "namespace" not in created["metadata"]
    for other in ABOUT_VERSIONS:
        got = await api.get_cluster_custom_object(ABOUT, other, "clusterproperties", property_name)
        assert got["apiVersion"] == f"{ABOUT}/{other}"
        assert got["spec"] == {"value": "cluster-1"}


@pytest.mark.parametrize("version", ABOUT_VERSIONS)
async def test_clusterproperty_with_an_empty_value_is_rejected(
    api: CustomObjectsApi, property_name: str, version: str
) -> None:
    body = cluster_property(property_name, version, {"value": ""})
    await expect_invalid(
        api.create_cluster_custom_object(ABOUT, version, "clusterproperties", body), "spec.value"
    )


@pytest.mark.parametrize("version", ABOUT_VERSIONS)
@pytest.mark.parametrize(
    ("spec", "field_path"),
    [
        pytest.param({}, "spec.value", id="no-value"),
        pytest.param(None, "spec", id="no-spec"),
        pytest.param({"value": 42}, "spec.value", id="value-not-a-string"),
    ],
)
async def test_clusterproperty_without_a_string_value_is_rejected(
    api: CustomObjectsApi, property_name: str, version: str, spec: Obj | None, field_path: str
) -> None:
    body = cluster_property(property_name, version, spec)
    await expect_invalid(
        api.create_cluster_custom_object(ABOUT, version, "clusterproperties", body), field_path
    )


async def test_clusterproperty_value_has_no_maximum_length(
    api: CustomObjectsApi, property_name: str
) -> None:
    value = "x" * 128_001
    body = cluster_property(property_name, "v1beta1", {"value": value})
    created = await api.create_cluster_custom_object(ABOUT, "v1beta1", "clusterproperties", body)
    assert created["spec"]["value"] == value


async def test_clusterproperty_table_shows_value_and_age_columns(
    api: CustomObjectsApi, api_client: ApiClient, property_name: str
) -> None:
    body = cluster_property(property_name, "v1beta1", {"value": "cluster-1"})
    await api.create_cluster_custom_object(ABOUT, "v1beta1", "clusterproperties", body)
    table = await get_table(api_client, f"/apis/{ABOUT}/v1beta1/clusterproperties/{property_name}")
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names[-2:] == ["value", "age"]
    (row,) = table["rows"]
    assert dict(zip(names, row["cells"], strict=True))["value"] == "cluster-1"
