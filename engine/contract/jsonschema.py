"""A self-contained JSON Schema (draft 2020-12) per event type, generated from the msgspec types."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

from engine.contract import channels
from engine.core import events as ev

# --- JSON Schemas of the events --------------------------------------------------------------


def rewrite_refs(node: Any, old: str, new: str) -> Any:
    if isinstance(node, dict):
        out: channels.JsonObj = {}
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str) and v.startswith(old):
                out[k] = new + v[len(old) :]
            else:
                out[k] = rewrite_refs(v, old, new)
        return out
    if isinstance(node, list):
        return [rewrite_refs(v, old, new) for v in node]
    return node


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                yield v
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


@dataclass(frozen=True, slots=True)
class _Bodies:
    events: dict[str, channels.JsonObj]
    """Event schemas by tag, refs to nested structs as ``#/$defs/<Struct>``."""
    structs: dict[str, channels.JsonObj]
    """Nested struct schemas (Port, Endpoint, ...) by class name, same ref style."""


def event_bodies() -> _Bodies:
    _, raw_defs = msgspec.json.schema_components(
        ev.EVENT_TYPES, ref_template=channels.DEFS + "{name}"
    )
    # Through JSON once, so defaults are plain JSON values (lists, not tuples) everywhere.
    defs: dict[str, channels.JsonObj] = json.loads(json.dumps(raw_defs))
    by_name: dict[str, type] = {t.__name__: t for t in ev.EVENT_TYPES}
    events: dict[str, channels.JsonObj] = {}
    for event_type in ev.EVENT_TYPES:
        tag = ev.tag_of(event_type)
        raw = defs[event_type.__name__]
        properties = channels.with_field_docs(raw["properties"], event_type)
        # msgspec writes the tag as a one-value enum; const says the same more plainly.
        properties["type"] = {"const": tag}
        events[tag] = {
            "title": tag,
            "description": channels.docstring(event_type),
            "type": "object",
            "properties": properties,
            "required": list(raw["required"]),
        }
    structs: dict[str, channels.JsonObj] = {}
    for name in sorted(defs):
        if name in by_name:
            continue
        raw = defs[name]
        struct_type = _struct_type(name)
        struct: channels.JsonObj = {
            "title": name,
            "description": channels.docstring(struct_type),
            "type": "object",
            "properties": channels.with_field_docs(raw["properties"], struct_type),
        }
        if raw.get("required"):
            struct["required"] = list(raw["required"])
        structs[name] = struct
    return _Bodies(events, structs)


def _struct_type(name: str) -> type:
    found = getattr(ev, name, None)
    if not (isinstance(found, type) and issubclass(found, msgspec.Struct)):
        raise LookupError(f"schema component {name} is not a struct of engine.events")
    return found


def _closure(schema: channels.JsonObj, structs: dict[str, channels.JsonObj]) -> list[str]:
    """Names of the nested structs ``schema`` refers to, directly or not, sorted."""
    seen: set[str] = set()
    todo = [r[len(channels.DEFS) :] for r in _refs(schema) if r.startswith(channels.DEFS)]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += [
            r[len(channels.DEFS) :] for r in _refs(structs[name]) if r.startswith(channels.DEFS)
        ]
    return sorted(seen)


def schema_id(tag: str) -> str:
    return channels.SCHEMA_ID_PREFIX + tag


def event_schemas() -> dict[str, channels.JsonObj]:
    """One self-contained JSON Schema (draft 2020-12) per event type, keyed by tag."""
    bodies = event_bodies()
    out: dict[str, channels.JsonObj] = {}
    for tag, body in bodies.events.items():
        schema: channels.JsonObj = {"$schema": channels.JSON_SCHEMA_DIALECT, "$id": schema_id(tag)}
        schema.update(copy.deepcopy(body))
        needed = _closure(body, bodies.structs)
        if needed:
            schema["$defs"] = {n: copy.deepcopy(bodies.structs[n]) for n in needed}
        out[tag] = schema
    return out
