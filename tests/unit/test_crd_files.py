"""Static checks on the CustomResourceDefinitions in deploy/crds (no cluster needed).

The contract is /work/shared/specs/mcs-api.md §1 and §9 item 78 and
/work/shared/specs/inventory-and-leases.md §1 and §4. The cluster-side behaviour of the same
files is exercised in tests/integration/test_crds.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

CRD_DIR = Path(__file__).resolve().parents[2] / "deploy" / "crds"

MCS = "multicluster.x-k8s.io"
ABOUT = "about.k8s.io"
REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
# A Kubernetes label value (at most 63 characters, checked apart): what upstream v1alpha2 checks
# with CEL format.labelValue(), as a pattern every apiserver version understands.
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
AGE_COLUMN = ("Age", "date", ".metadata.creationTimestamp")


@dataclass(frozen=True)
class Expected:
    kind: str
    group: str
    plural: str
    singular: str
    scope: str
    # version name -> (served, storage)
    versions: dict[str, tuple[bool, bool]]
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    # (name, type, jsonPath) per printer column, in order
    columns: tuple[tuple[str, str, str], ...] = ()
    labels: dict[str, str] = field(default_factory=dict)


MCS_LABELS = {
    "multicluster.x-k8s.io/release-version": "v0.5.0",
    "multicluster.x-k8s.io/crd-schema-revision": "0",
}
ALPHA_AND_BETA = {"v1alpha1": (True, False), "v1beta1": (True, True)}

EXPECTED: dict[str, Expected] = {
    "multicluster.x-k8s.io_serviceexports.yaml": Expected(
        kind="ServiceExport",
        group=MCS,
        plural="serviceexports",
        singular="serviceexport",
        scope="Namespaced",
        versions=ALPHA_AND_BETA,
        short_names=("svcex", "svcexport"),
        categories=("multicluster",),
        columns=(AGE_COLUMN,),
        labels=MCS_LABELS,
    ),
    "multicluster.x-k8s.io_serviceimports.yaml": Expected(
        kind="ServiceImport",
        group=MCS,
        plural="serviceimports",
        singular="serviceimport",
        scope="Namespaced",
        versions=ALPHA_AND_BETA,
        short_names=("svcim", "svcimport"),
        categories=("multicluster",),
        columns=(("Type", "string", ".spec.type"), ("IP", "string", ".spec.ips"), AGE_COLUMN),
        labels=MCS_LABELS,
    ),
    "multicluster.x-k8s.io_clusterprofiles.yaml": Expected(
        kind="ClusterProfile",
        group=MCS,
        plural="clusterprofiles",
        singular="clusterprofile",
        scope="Namespaced",
        # v1alpha1 stays the storage version, as upstream v0.2.0 keeps it (docs/inventory.md).
        versions={"v1alpha1": (True, True), "v1alpha2": (True, False)},
        categories=("multicluster",),
        columns=(
            ("Display Name", "string", ".spec.displayName"),
            ("Manager", "string", ".spec.clusterManager.name"),
            ("Version", "string", ".status.version.kubernetes"),
            ("Healthy", "string", '.status.conditions[?(@.type=="ControlPlaneHealthy")].status'),
            AGE_COLUMN,
        ),
    ),
    "about.k8s.io_clusterproperties.yaml": Expected(
        kind="ClusterProperty",
        group=ABOUT,
        plural="clusterproperties",
        singular="clusterproperty",
        scope="Cluster",
        versions=ALPHA_AND_BETA,
        categories=("multicluster",),
        columns=(
            ("value", "string", ".spec.value"),
            ("age", "date", ".metadata.creationTimestamp"),
        ),
    ),
}
FILES = sorted(EXPECTED)


def load(filename: str) -> dict[str, Any]:
    with (CRD_DIR / filename).open(encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    assert len(docs) == 1, f"{filename}: expected one YAML document, got {len(docs)}"
    doc = docs[0]
    assert isinstance(doc, dict)
    return doc


def versions_of(crd: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in crd["spec"]["versions"]}


def root_schema(version: dict[str, Any]) -> dict[str, Any]:
    schema = version["schema"]["openAPIV3Schema"]
    assert isinstance(schema, dict)
    return schema


def at(schema: dict[str, Any], path: str) -> dict[str, Any]:
    """Walk a dotted path of property names; ``[]`` steps into array items."""
    node = schema
    for part in path.split("."):
        node = node["items"] if part == "[]" else node["properties"][part]
    return node


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def all_schemas() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for filename in FILES:
        for name, version in versions_of(load(filename)).items():
            yield filename, name, root_schema(version)


def test_crd_directory_holds_exactly_the_expected_files() -> None:
    assert sorted(p.name for p in CRD_DIR.glob("*.yaml")) == FILES
    assert not list(CRD_DIR.glob("*.yml"))


@pytest.mark.parametrize("filename", FILES)
def test_every_crd_file_starts_with_a_comment_naming_the_upstream_version(filename: str) -> None:
    head = (CRD_DIR / filename).read_text(encoding="utf-8").splitlines()
    comment = [line for line in head[:6] if line.startswith("#")]
    assert head[0].startswith("# "), "the file must open with a comment"
    text = " ".join(comment)
    assert EXPECTED[filename].kind in text
    assert "Follows kubernetes-sigs/" in text


@pytest.mark.parametrize("filename", FILES)
def test_crd_file_is_an_apiextensions_v1_crd_named_after_its_plural_and_group(
    filename: str,
) -> None:
    crd = load(filename)
    exp = EXPECTED[filename]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == f"{exp.plural}.{exp.group}"
    assert filename == f"{exp.group}_{exp.plural}.yaml"


@pytest.mark.parametrize("filename", FILES)
def test_crd_declares_the_expected_kind_group_scope_and_names(filename: str) -> None:
    spec = load(filename)["spec"]
    exp = EXPECTED[filename]
    assert spec["group"] == exp.group
    assert spec["scope"] == exp.scope
    names = spec["names"]
    assert names["kind"] == exp.kind
    assert names["listKind"] == f"{exp.kind}List"
    assert names["plural"] == exp.plural
    assert names["singular"] == exp.singular
    assert tuple(names.get("shortNames", ())) == exp.short_names
    assert tuple(names.get("categories", ())) == exp.categories


@pytest.mark.parametrize("filename", FILES)
def test_crd_versions_have_the_expected_served_and_storage_flags(filename: str) -> None:
    versions = versions_of(load(filename))
    flags = {name: (v["served"], v["storage"]) for name, v in versions.items()}
    assert flags == EXPECTED[filename].versions
    for v in versions.values():
        assert isinstance(v["served"], bool)
        assert isinstance(v["storage"], bool)


@pytest.mark.parametrize("filename", FILES)
def test_exactly_one_version_is_the_storage_version(filename: str) -> None:
    storage = [v["name"] for v in load(filename)["spec"]["versions"] if v["storage"]]
    assert len(storage) == 1, storage


@pytest.mark.parametrize("filename", FILES)
def test_all_versions_of_a_crd_share_one_schema_and_subresources(filename: str) -> None:
    versions = list(versions_of(load(filename)).values())
    first = versions[0]
    for other in versions[1:]:
        assert other["schema"] == first["schema"], other["name"]
        assert other.get("subresources") == first.get("subresources"), other["name"]
        assert other.get("additionalPrinterColumns") == first.get("additionalPrinterColumns")


@pytest.mark.parametrize("filename", FILES)
def test_every_version_has_a_status_subresource(filename: str) -> None:
    for v in versions_of(load(filename)).values():
        assert v.get("subresources", {}).get("status") == {}, v["name"]


@pytest.mark.parametrize("filename", FILES)
def test_printer_columns_match_the_contract(filename: str) -> None:
    for v in versions_of(load(filename)).values():
        columns = tuple(
            (c["name"], c["type"], c["jsonPath"]) for c in v.get("additionalPrinterColumns", [])
        )
        assert columns == EXPECTED[filename].columns, v["name"]


@pytest.mark.parametrize("filename", FILES)
def test_crd_labels_match_the_contract(filename: str) -> None:
    labels = load(filename)["metadata"].get("labels", {})
    assert labels == EXPECTED[filename].labels
    assert all(isinstance(value, str) for value in labels.values())


@pytest.mark.parametrize("filename", FILES)
def test_crds_in_protected_groups_carry_an_api_approval_annotation(filename: str) -> None:
    crd = load(filename)
    group = crd["spec"]["group"]
    protected = group in {"k8s.io", "kubernetes.io"} or group.endswith(
        (".k8s.io", ".kubernetes.io")
    )
    annotation = crd["metadata"].get("annotations", {}).get("api-approved.kubernetes.io")
    if protected:
        assert isinstance(annotation, str)
        assert annotation.startswith(("https://", "unapproved"))
    else:
        assert annotation is None


def test_schemas_are_structural() -> None:
    for filename, version, schema in all_schemas():
        for path, node in walk(schema):
            where = f"{filename} {version} {path or '<root>'}"
            assert "type" in node or node.get("x-kubernetes-int-or-string"), where
            assert not ("properties" in node and "additionalProperties" in node), where
            if node.get("x-kubernetes-preserve-unknown-fields"):
                assert node["type"] == "object", where
            if "default" in node and "enum" in node:
                assert node["default"] in node["enum"], where
            for key in node.get("required", []):
                assert key in node.get("properties", {}), where


def test_list_map_keys_are_required_in_the_items() -> None:
    seen = 0
    for filename, version, schema in all_schemas():
        for path, node in walk(schema):
            list_type = node.get("x-kubernetes-list-type")
            where = f"{filename} {version} {path}"
            if list_type == "map":
                seen += 1
                keys = node["x-kubernetes-list-map-keys"]
                assert keys, where
                items = node["items"]
                assert items["type"] == "object", where
                for key in keys:
                    assert key in items.get("required", []) or "default" in items["properties"][key]
            elif list_type == "set":
                assert node["items"]["type"] in {"string", "integer", "number", "boolean"}, where
            else:
                assert "x-kubernetes-list-map-keys" not in node, where
    assert seen > 0


def test_every_conditions_list_has_the_metav1_condition_shape() -> None:
    found = set()
    for filename, version, schema in all_schemas():
        for path, node in walk(schema):
            if not path.endswith(".conditions"):
                continue
            found.add(filename)
            where = f"{filename} {version} {path}"
            assert node["type"] == "array", where
            assert node["x-kubernetes-list-type"] == "map", where
            assert node["x-kubernetes-list-map-keys"] == ["type"], where
            item = node["items"]
            assert set(item["required"]) == {
                "type",
                "status",
                "reason",
                "message",
                "lastTransitionTime",
            }, where
            props = item["properties"]
            assert props["status"]["enum"] == ["True", "False", "Unknown"], where
            assert props["reason"]["pattern"] == REASON_PATTERN, where
            assert (props["reason"]["minLength"], props["reason"]["maxLength"]) == (1, 1024)
            assert props["message"]["maxLength"] == 32768, where
            assert "minLength" not in props["message"], where
            assert props["lastTransitionTime"]["format"] == "date-time", where
            assert props["observedGeneration"]["format"] == "int64", where
            assert props["observedGeneration"]["minimum"] == 0, where
            assert props["type"]["maxLength"] == 316, where
    assert found == {
        "multicluster.x-k8s.io_serviceexports.yaml",
        "multicluster.x-k8s.io_serviceimports.yaml",
        "multicluster.x-k8s.io_clusterprofiles.yaml",
    }


def test_serviceexport_spec_has_the_exported_label_and_annotation_maps() -> None:
    for v in versions_of(load("multicluster.x-k8s.io_serviceexports.yaml")).values():
        schema = root_schema(v)
        for name in ("exportedLabels", "exportedAnnotations"):
            node = at(schema, f"spec.{name}")
            assert node["type"] == "object"
            assert node["additionalProperties"] == {"type": "string"}
        assert "required" not in at(schema, "spec")


def test_serviceimport_schema_matches_the_mcs_contract() -> None:
    for v in versions_of(load("multicluster.x-k8s.io_serviceimports.yaml")).values():
        schema = root_schema(v)
        spec = at(schema, "spec")
        assert set(spec["required"]) == {"ports", "type"}
        assert set(spec["properties"]) == {
            "ports",
            "type",
            "ips",
            "ipFamilies",
            "sessionAffinity",
            "sessionAffinityConfig",
            "internalTrafficPolicy",
            "trafficDistribution",
        }
        ports = at(schema, "spec.ports")
        assert ports["x-kubernetes-list-type"] == "atomic"
        port = at(schema, "spec.ports.[]")
        assert port["required"] == ["port"]
        assert set(port["properties"]) == {"name", "protocol", "appProtocol", "port"}
        assert at(schema, "spec.ports.[].port")["format"] == "int32"
        protocol = at(schema, "spec.ports.[].protocol")
        assert protocol["enum"] == ["TCP", "UDP", "SCTP"]
        assert protocol["default"] == "TCP"
        assert at(schema, "spec.type")["enum"] == ["ClusterSetIP", "Headless"]
        assert at(schema, "spec.ips")["maxItems"] == 2
        assert at(schema, "spec.ipFamilies")["maxItems"] == 2
        assert at(schema, "spec.ipFamilies.[]")["enum"] == ["IPv4", "IPv6"]
        assert at(schema, "spec.sessionAffinity")["enum"] == ["ClientIP", "None"]
        timeout = at(schema, "spec.sessionAffinityConfig.clientIP.timeoutSeconds")
        assert (timeout["type"], timeout["format"]) == ("integer", "int32")
        assert at(schema, "spec.internalTrafficPolicy")["enum"] == ["Cluster", "Local"]
        traffic_distribution = at(schema, "spec.trafficDistribution")
        assert traffic_distribution["type"] == "string"
        assert "enum" not in traffic_distribution
        clusters = at(schema, "status.clusters")
        assert clusters["x-kubernetes-list-map-keys"] == ["cluster"]
        assert clusters["items"]["required"] == ["cluster"]
        assert at(schema, "status.endpointSliceObjects")["enum"] == ["Present", "Absent"]


@pytest.mark.parametrize("version", ["v1alpha1", "v1alpha2"])
def test_clusterprofile_schema_matches_the_inventory_contract(version: str) -> None:
    schema = root_schema(versions_of(load("multicluster.x-k8s.io_clusterprofiles.yaml"))[version])
    assert schema["required"] == ["spec"]
    assert at(schema, "spec")["required"] == ["clusterManager"]
    manager = at(schema, "spec.clusterManager")
    assert manager["required"] == ["name"]
    assert manager["x-kubernetes-validations"] == [
        {"rule": "self == oldSelf", "message": "ClusterManager is immutable"}
    ]
    assert at(schema, "spec.displayName")["type"] == "string"
    status = at(schema, "status")
    assert set(status["properties"]) == {
        "conditions",
        "version",
        "properties",
        "accessProviders",
        "credentialProviders",
    }
    assert at(schema, "status.version.kubernetes")["type"] == "string"
    props = at(schema, "status.properties")
    assert props["x-kubernetes-list-map-keys"] == ["name"]
    name = at(schema, "status.properties.[].name")
    value = at(schema, "status.properties.[].value")
    assert (name["minLength"], name["maxLength"]) == (1, 253)
    assert (value["minLength"], value["maxLength"]) == (1, 1024)
    assert at(schema, "status.properties.[].lastObservedTime")["format"] == "date-time"
    access = at(schema, "status.accessProviders")
    assert access["x-kubernetes-list-map-keys"] == ["name"]
    assert access["items"]["required"] == ["name", "cluster"]
    cluster = at(schema, "status.accessProviders.[].cluster")
    assert cluster["required"] == ["server"]
    assert set(cluster["properties"]) == {
        "server",
        "certificate-authority-data",
        "certificate-authority",
        "tls-server-name",
        "insecure-skip-tls-verify",
        "proxy-url",
        "disable-compression",
        "extensions",
    }
    ca_data = at(schema, "status.accessProviders.[].cluster.certificate-authority-data")
    assert (ca_data["type"], ca_data["format"]) == ("string", "byte")
    extension = at(schema, "status.accessProviders.[].cluster.extensions.[]")
    assert set(extension["required"]) == {"name", "extension"}
    assert extension["properties"]["extension"]["x-kubernetes-preserve-unknown-fields"] is True
    assert at(schema, "status.credentialProviders")["items"] == access["items"]


@pytest.mark.parametrize("version", ["v1alpha1", "v1alpha2"])
def test_clusterprofile_carries_the_v1alpha2_validation(version: str) -> None:
    """cluster-inventory-api apis/v1alpha2: what it validates more strictly than v1alpha1."""
    schema = root_schema(versions_of(load("multicluster.x-k8s.io_clusterprofiles.yaml"))[version])
    manager = at(schema, "spec.clusterManager.name")
    assert (manager["minLength"], manager["maxLength"]) == (1, 63)
    assert manager["pattern"] == LABEL_VALUE_PATTERN
    access = at(schema, "status.accessProviders")
    assert access["maxItems"] == 64
    # Bounded too, or the CEL rules in its items would exceed the apiserver's cost budget.
    assert at(schema, "status.credentialProviders")["maxItems"] == 64
    name = at(schema, "status.accessProviders.[].name")
    assert (name["minLength"], name["maxLength"]) == (1, 253)
    server = at(schema, "status.accessProviders.[].cluster.server")
    assert server["maxLength"] == 2048
    assert [r["rule"] for r in server["x-kubernetes-validations"]] == [
        "isURL(self) && url(self).getHost() != ''"
    ]
    proxy = at(schema, "status.accessProviders.[].cluster.proxy-url")
    assert proxy["maxLength"] == 2048
    (rule,) = proxy["x-kubernetes-validations"]
    assert "['http', 'https', 'socks5']" in rule["rule"]
    assert "getHost() != ''" in rule["rule"]
    assert at(schema, "status.accessProviders.[].cluster.tls-server-name")["maxLength"] == 253
    extensions = at(schema, "status.accessProviders.[].cluster.extensions")
    assert extensions["x-kubernetes-list-map-keys"] == ["name"]
    ext_name = at(schema, "status.accessProviders.[].cluster.extensions.[].name")
    assert (ext_name["minLength"], ext_name["maxLength"]) == (1, 253)


@pytest.mark.parametrize("manager", ["mcsync", "a", "A.b_c-9", "x" * 63])
def test_clusterprofile_manager_pattern_accepts_label_values(manager: str) -> None:
    assert re.fullmatch(LABEL_VALUE_PATTERN, manager)


@pytest.mark.parametrize("manager", ["-mcsync", "mcsync.", "two words", "a/b", "é"])
def test_clusterprofile_manager_pattern_refuses_what_no_label_value_can_be(manager: str) -> None:
    assert not re.fullmatch(LABEL_VALUE_PATTERN, manager)


def test_clusterprofile_versions_convert_without_a_webhook() -> None:
    """One schema for both versions: the apiserver only rewrites apiVersion (strategy None)."""
    spec = load("multicluster.x-k8s.io_clusterprofiles.yaml")["spec"]
    assert spec["conversion"] == {"strategy": "None"}
    for filename in FILES:
        conversion = load(filename)["spec"].get("conversion", {"strategy": "None"})
        assert conversion == {"strategy": "None"}, filename


def test_clusterproperty_value_is_required_with_min_length_one_and_no_max_length() -> None:
    for v in versions_of(load("about.k8s.io_clusterproperties.yaml")).values():
        schema = root_schema(v)
        assert schema["required"] == ["spec"]
        assert at(schema, "spec")["required"] == ["value"]
        value = at(schema, "spec.value")
        assert value["type"] == "string"
        assert value["minLength"] == 1
        assert "maxLength" not in value
