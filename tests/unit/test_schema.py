"""The log's public contract: the committed documents are current and the events fit them.

``jsonschema`` is not installed in this project, so events are validated here without it: each
one is decoded with the msgspec types (the engine's real reader) and then walked against its JSON
Schema by a small checker of exactly the keywords these generated schemas use (``$ref``,
``const``, ``enum``, ``pattern``, ``type``, ``properties``, ``required``, ``items``,
``additionalProperties``, ``anyOf``; ``format`` is left to msgspec). A test pins that keyword
set, so a schema that starts using another keyword fails loudly instead of being half-checked.
The checker is stricter than JSON Schema in one way: an event field that no schema declares is
an error, since fields are never removed and such a field is a typo.
"""

from __future__ import annotations

import inspect
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from engine import contract, jetstream
from engine.core import events as ev
from engine.core import subjects

DOCS = Path(__file__).resolve().parents[2] / "docs"
GOLDEN = Path(__file__).resolve().parents[1] / "golden"
GOLDEN_FILES = sorted(GOLDEN.glob("*.json")) if GOLDEN.is_dir() else []
RUN_ME = (
    "run `mcsync schema` to regenerate docs/schemas, docs/asyncapi.yaml and the generated "
    "tables of docs/events.md, then commit them"
)
T0 = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


# --- a minimal checker for the keywords the generated schemas use -----------------------------

KNOWN_KEYWORDS = {
    "$schema",
    "$id",
    "$defs",
    "$ref",
    "title",
    "description",
    "default",
    "const",
    "enum",
    "type",
    "format",
    "pattern",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "anyOf",
}
_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
    "array": (list,),
    "object": (dict,),
}


def _resolve(root: dict[str, Any], ref: str) -> dict[str, Any]:
    assert ref.startswith("#/"), f"{ref} is not a reference inside the document"
    node: Any = root
    for raw in ref[2:].split("/"):
        token = raw.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and token in node, f"{ref} does not resolve"
        node = node[token]
    assert isinstance(node, dict)
    return node


def _errors(
    root: dict[str, Any], node: dict[str, Any], value: Any, at: str, closed: bool = True
) -> list[str]:
    """What is wrong with ``value``; ``closed`` also refuses object keys no schema declares."""
    if "$ref" in node:
        return _errors(root, _resolve(root, node["$ref"]), value, at, closed)
    if "anyOf" in node:
        if any(not _errors(root, alt, value, at, closed) for alt in node["anyOf"]):
            return []
        return [f"{at}: {value!r} matches no alternative"]
    if "const" in node and value != node["const"]:
        return [f"{at}: {value!r} is not {node['const']!r}"]
    if "enum" in node and value not in node["enum"]:
        return [f"{at}: {value!r} is not one of {node['enum']}"]
    if "pattern" in node and not (
        isinstance(value, str) and re.search(node["pattern"], value) is not None
    ):
        return [f"{at}: {value!r} does not match {node['pattern']}"]
    kind = node.get("type")
    if kind is not None:
        is_bool = isinstance(value, bool)
        if not isinstance(value, _TYPES[kind]) or (is_bool and kind != "boolean"):
            return [f"{at}: {value!r} is not of type {kind}"]
    out: list[str] = []
    if isinstance(value, dict):
        props: dict[str, Any] = node.get("properties", {})
        out += [
            f"{at}: lacks required {name!r}"
            for name in node.get("required", [])
            if name not in value
        ]
        for key, item in value.items():
            if key in props:
                out += _errors(root, props[key], item, f"{at}.{key}", closed)
            elif "additionalProperties" in node:
                out += _errors(root, node["additionalProperties"], item, f"{at}.{key}", closed)
            elif closed:
                # Fields are never removed, so an event that has a field no schema declares was
                # written with a typo (or the schema lost a field).
                out.append(f"{at}: {key!r} is not a declared field")
    if isinstance(value, list) and "items" in node:
        for i, item in enumerate(value):
            out += _errors(root, node["items"], item, f"{at}[{i}]", closed)
    return out


def validate(body: bytes) -> list[str]:
    """Decode ``body`` as the engine does, then check it against the schema of its tag."""
    event = ev.decode(body)  # raises on anything the real reader refuses
    tag = ev.tag_of(type(event))
    event_schema = contract.event_schemas()[tag]
    assert event_schema["properties"]["type"]["const"] == tag
    return _errors(event_schema, event_schema, json.loads(body), "$")


def _keywords(node: Any, inside_properties: bool = False) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if not inside_properties:
                found.add(key)
            nested_names = key in ("properties", "$defs") and not inside_properties
            found |= _keywords(value, inside_properties=nested_names)
    elif isinstance(node, list):
        for value in node:
            found |= _keywords(value)
    return found


def _all_refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        refs = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return refs + [r for k, v in node.items() if k != "$ref" for r in _all_refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _all_refs(v)]
    return []


# --- the committed files ----------------------------------------------------------------------


def test_committed_documents_equal_the_generated_ones() -> None:
    stale = contract.check(DOCS)
    assert stale == [], f"out of date under docs/: {', '.join(stale)}; {RUN_ME}"


def test_events_doc_has_a_generated_region_for_every_event_type() -> None:
    text = (DOCS / contract.EVENTS_DOC).read_text(encoding="utf-8")
    missing = contract.missing_regions(text)
    assert missing == [], (
        f"docs/events.md lacks the generated regions {missing}: add a section with "
        "<!-- BEGIN GENERATED: name --> / <!-- END GENERATED: name --> markers and prose, "
        f"then {RUN_ME}"
    )


def test_generation_is_deterministic_and_write_then_check_is_clean(tmp_path: Path) -> None:
    assert contract.generate() == contract.generate()
    written = contract.write(tmp_path)
    assert {p.relative_to(tmp_path).as_posix() for p in written} == set(contract.generate())
    assert contract.check(tmp_path) == []
    again = {p: p.read_text(encoding="utf-8") for p in written}
    contract.write(tmp_path)
    assert {p: p.read_text(encoding="utf-8") for p in written} == again


def test_check_reports_missing_changed_and_unknown_files(tmp_path: Path) -> None:
    assert contract.check(tmp_path) == sorted(contract.generate())
    contract.write(tmp_path)
    (tmp_path / "asyncapi.yaml").write_text("asyncapi: 2.6.0\n", encoding="utf-8")
    (tmp_path / "schemas" / "export.upserted.v0.json").write_text("{}\n", encoding="utf-8")
    assert contract.check(tmp_path) == ["asyncapi.yaml", "schemas/export.upserted.v0.json"]


def test_check_reports_a_stale_region_of_the_events_doc(tmp_path: Path) -> None:
    contract.write(tmp_path)
    current = (DOCS / contract.EVENTS_DOC).read_text(encoding="utf-8")
    stale = current.replace("| `cluster` | string | required |", "| `cluster` | int | no |", 1)
    assert stale != current
    (tmp_path / contract.EVENTS_DOC).write_text(stale, encoding="utf-8")
    assert contract.check(tmp_path) == [contract.EVENTS_DOC]
    contract.write(tmp_path)
    assert (tmp_path / contract.EVENTS_DOC).read_text(encoding="utf-8") == current


def test_json_files_are_pretty_with_sorted_keys_and_a_trailing_newline() -> None:
    for path in sorted((DOCS / contract.SCHEMAS_DIR).glob("*.json")):
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
        assert text == json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# --- the JSON Schemas ---------------------------------------------------------------------------


def test_there_is_one_schema_per_event_type_titled_by_its_tag() -> None:
    schemas = contract.event_schemas()
    assert list(schemas) == [ev.tag_of(t) for t in ev.EVENT_TYPES]
    for event_type in ev.EVENT_TYPES:
        tag = ev.tag_of(event_type)
        s = schemas[tag]
        assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert s["$id"] == f"urn:mcsync:schema:{tag}"
        assert s["title"] == tag
        assert s["description"] == inspect.cleandoc(event_type.__doc__ or "").replace("``", "`")
        assert s["properties"]["type"] == {"const": tag}
        assert s["required"][:2] == ["type", "cluster"]


def test_schemas_use_only_keywords_the_test_checker_understands() -> None:
    for tag, s in contract.event_schemas().items():
        unknown = _keywords(s) - KNOWN_KEYWORDS
        assert not unknown, f"{tag} uses {unknown}: teach the checker in this test about them"


def test_every_ref_of_a_schema_file_resolves_inside_it() -> None:
    for tag, s in contract.event_schemas().items():
        for ref in _all_refs(s):
            assert ref.startswith("#/$defs/"), f"{tag}: {ref}"
            _resolve(s, ref)


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=[p.name for p in GOLDEN_FILES])
def test_golden_event_validates_against_its_schema(path: Path) -> None:
    assert validate(path.read_bytes()) == []


def test_every_event_type_has_a_golden_file() -> None:
    if not GOLDEN_FILES:
        pytest.skip("tests/golden holds no events yet")
    tags = {json.loads(p.read_bytes())["type"] for p in GOLDEN_FILES}
    assert {ev.tag_of(t) for t in ev.EVENT_TYPES} <= tags


BUILT: list[ev.Event] = [
    ev.ExportUpserted(cluster="east", namespace="shop", name="cart", uid="u-1", created=T0),
    ev.ExportUpserted(
        cluster="west",
        namespace="shop",
        name="cart",
        uid="u-2",
        created=T0,
        service_type="Headless",
        ports=(ev.Port(port=8080, name="http", app_protocol="http"),),
        ip_families=("IPv6",),
        exported_labels={"tier": "web"},
    ),
    ev.SliceUpserted(
        cluster="east",
        namespace="shop",
        service="cart",
        name="cart-abc12",
        address_type="IPv4",
        endpoints=(ev.Endpoint(addresses=("10.0.0.7",), ready=True, zone="z1"),),
        ports=(ev.EndpointPort(port=8080, name="http"),),
    ),
    ev.ClusterJoined(
        cluster="east",
        clusterset="prod",
        properties={"cluster.clusterset.k8s.io": "east"},
        access_providers=(ev.AccessProvider(name="mcsync", server="https://east:6443"),),
    ),
    ev.Heartbeat(cluster="east", health="Unhealthy", reason="ReadyzFailed"),
    ev.SnapshotComplete(cluster="east", epoch=3),
    ev.LeaseRenewed(
        cluster="east", name="db.primary", holder="pod-1", duration_seconds=15, token=4
    ),
    ev.LeaseReleased(cluster="east", name="db.primary", holder="pod-1", token=4),
]


def _tag(event: ev.Event) -> str:
    return ev.tag_of(type(event))


@pytest.mark.parametrize("event", BUILT, ids=_tag)
def test_an_encoded_event_validates_against_its_schema(event: ev.Event) -> None:
    assert validate(ev.encode(event)) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.pop("uid"), "lacks required 'uid'"),
        (lambda d: d.update(type="export.upserted.v2"), "is not 'export.upserted.v1'"),
        (lambda d: d.update(servicetype="Headless"), "'servicetype' is not a declared field"),
        (lambda d: d["ports"][0].update(protocol="ICMP"), "'ICMP' is not one of"),
        (lambda d: d["ports"][0].update(port="80"), "'80' is not of type integer"),
        (lambda d: d["ports"][0].update(port=True), "True is not of type integer"),
        (lambda d: d.update(sessionAffinityTimeout="x"), "matches no alternative"),
        (lambda d: d["exportedLabels"].update(n=1), "1 is not of type string"),
    ],
)
def test_the_checker_reports_what_breaks_the_schema(change: Any, expected: str) -> None:
    s = contract.event_schemas()["export.upserted.v1"]
    data = json.loads(ev.encode(BUILT[1]))
    assert _errors(s, s, data, "$") == []
    change(data)
    errors = _errors(s, s, data, "$")
    assert any(expected in e for e in errors), errors


def test_an_unknown_field_passes_msgspec_but_not_the_checker() -> None:
    data = json.loads(ev.encode(BUILT[0]))
    data["namespce"] = "typo"
    body = json.dumps(data).encode()
    assert isinstance(ev.decode(body), ev.ExportUpserted)
    assert validate(body) == ["$: 'namespce' is not a declared field"]


def test_the_real_reader_refuses_an_event_without_a_required_field() -> None:
    data = json.loads(ev.encode(BUILT[0]))
    del data["created"]
    with pytest.raises(msgspec.ValidationError):
        validate(json.dumps(data).encode())


# --- the AsyncAPI document ----------------------------------------------------------------------


def _asyncapi() -> dict[str, Any]:
    doc = yaml.safe_load((DOCS / contract.ASYNCAPI_FILE).read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def test_asyncapi_is_version_3_and_loads_back_to_the_generated_document() -> None:
    doc = _asyncapi()
    assert doc["asyncapi"] == "3.0.0"
    assert doc == contract.asyncapi_document()
    assert doc["servers"]["local"] == {
        "host": "localhost:4222",
        "protocol": "nats",
        "description": doc["servers"]["local"]["description"],
    }


def test_every_event_tag_appears_in_exactly_one_channel() -> None:
    doc = _asyncapi()
    seen: list[str] = []
    for channel in doc["channels"].values():
        for ref in channel["messages"].values():
            message = _resolve(doc, ref["$ref"])
            payload = _resolve(doc, message["payload"]["$ref"])
            if "const" in payload.get("properties", {}).get("type", {}):
                seen.append(payload["properties"]["type"]["const"])
    assert sorted(seen) == sorted(ev.tag_of(t) for t in ev.EVENT_TYPES)


def test_every_ref_resolves_inside_the_asyncapi_document() -> None:
    doc = _asyncapi()
    refs = _all_refs(doc)
    assert len(refs) > 50
    for ref in refs:
        _resolve(doc, ref)


def test_every_operation_sends_or_receives_messages_of_its_own_channel() -> None:
    doc = _asyncapi()
    actions: dict[str, set[str]] = {}
    for op in doc["operations"].values():
        channel_ref = op["channel"]["$ref"]
        _resolve(doc, channel_ref)
        actions.setdefault(channel_ref, set()).add(op["action"])
        for message in op["messages"]:
            assert message["$ref"].startswith(channel_ref + "/messages/")
            _resolve(doc, message["$ref"])
    assert all(a == {"send", "receive"} for a in actions.values())
    assert len(actions) == len(doc["channels"])


def test_channel_parameters_match_the_address_placeholders() -> None:
    doc = _asyncapi()
    for key, channel in doc["channels"].items():
        placeholders = [t[1:-1] for t in channel["address"].split(".") if t.startswith("{")]
        assert list(channel["parameters"]) == placeholders, key
        for ref in channel["parameters"].values():
            assert _resolve(doc, ref["$ref"])["description"]


def test_components_schemas_are_the_json_schemas_of_the_files() -> None:
    components = _asyncapi()["components"]["schemas"]
    for tag, s in contract.event_schemas().items():
        body = {k: v for k, v in s.items() if k not in ("$schema", "$id", "$defs")}
        rewritten = json.loads(json.dumps(body).replace('"#/$defs/', '"#/components/schemas/'))
        assert components[tag] == rewritten
        for name, nested in s.get("$defs", {}).items():
            text = json.dumps(nested).replace('"#/$defs/', '"#/components/schemas/')
            assert components[name] == json.loads(text)


def test_channel_addresses_follow_the_subject_grammar() -> None:
    values = {
        "clusterset": "prod",
        "cluster": "east",
        "namespace": "shop",
        "name": "cart",
        "slice": subjects.escape("cart.east.0"),
        "lease": subjects.escape("db.primary"),
    }
    built = {
        "export": subjects.export("prod", "east", "shop", "cart"),
        "slice": subjects.endpoint_slice("prod", "east", "shop", "cart", "cart.east.0"),
        "cluster": subjects.cluster("prod", "east"),
        "sync": subjects.sync("prod", "east"),
        "heartbeat": subjects.heartbeat("prod", "east"),
        "lease": subjects.lease("prod", "east", "db.primary"),
    }
    assert [c.key for c in contract.CHANNELS] == list(built)
    for channel in contract.CHANNELS:
        assert channel.address.format(**values) == built[channel.key]
        assert subjects.parse(built[channel.key]).kind == channel.key
    dlq = contract.DEAD_LETTER_ADDRESS.format(clusterset="prod", cluster="east")
    assert dlq == jetstream.dead_letter_subject("prod", "east")


def test_the_headers_the_log_writes_fit_the_headers_schema() -> None:
    assert contract.CE_TYPE_PREFIX == jetstream.CE_TYPE_PREFIX
    assert contract.CE_SPECVERSION == jetstream.CE_SPECVERSION
    doc = contract.asyncapi_document()
    headers_schema = doc["components"]["schemas"]["EventHeaders"]
    for event in BUILT:
        subject = subjects.cluster("prod", event.cluster)
        body = ev.encode(event)
        msg_id = ev.event_id(subject, 7, body)
        headers = jetstream.headers_for(event, subject, msg_id, T0, "prod")
        headers["Nats-Expected-Last-Subject-Sequence"] = "7"
        assert _errors(doc, headers_schema, headers, "headers", closed=False) == []
        message = doc["components"]["messages"][ev.tag_of(type(event))]
        for part in message["headers"]["allOf"]:
            assert _errors(doc, part, headers, "headers", closed=False) == []
    assert set(headers_schema["required"]) <= set(
        jetstream.headers_for(BUILT[0], "s", "0" * 32, T0, "prod")
    )
