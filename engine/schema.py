"""The log's public contract as documents: a JSON Schema per event type and an AsyncAPI 3 file.

Third-party tools follow the log without reading this code, so the subjects, headers and bodies
have to be written down somewhere they can trust. Writing them by hand would drift from the
msgspec types the engine really encodes; here they are generated from those types and from the
subject grammar, and :func:`check` lets a unit test (and ``mcsync schema --check``) prove that the
copies committed under ``docs/`` are current.

The module is pure apart from :func:`write` and :func:`check` (and reading the source of the
event types for their field docstrings): no clock, no network, so the same types give byte for
byte the same documents. Three kinds of output:

* ``schemas/<tag>.json`` - one JSON Schema (draft 2020-12) per event type, self-contained;
* ``asyncapi.yaml`` - an AsyncAPI 3.0.0 document: servers, one channel per subject kind of the
  grammar, the dead-letter channel, messages with their CloudEvents headers, send and receive
  operations, and the same event schemas under ``components.schemas``;
* the generated regions of ``events.md`` (field tables, subject and header tables), between
  ``<!-- BEGIN GENERATED: x -->`` and ``<!-- END GENERATED: x -->`` markers, so the prose around
  them is written by people while the facts come from the types.
"""

from __future__ import annotations

import ast
import copy
import inspect
import json
import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec
import yaml

from engine import events as ev
from engine import subjects

JsonObj = dict[str, Any]

JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID_PREFIX: Final = "urn:mcsync:schema:"
"""``$id`` of a schema is this prefix plus the tag: a name, not a URL to fetch."""
ASYNCAPI_VERSION: Final = "3.0.0"
CONTRACT_VERSION: Final = "1.0.0"
"""Version of the log contract as a whole (AsyncAPI ``info.version``); each event carries its own
version in its tag, so this changes only when the grammar or the headers change."""
CE_SPECVERSION: Final = "1.0"
CE_TYPE_PREFIX: Final = "io.mcsync."
"""``ce-type`` is this prefix plus the tag (the same constant as in ``engine.eventlog``)."""
DEAD_LETTER_PREFIX: Final = "mcsyncdlq"
MIN_NATS_SERVER: Final = "2.11"
SCHEMAS_DIR: Final = "schemas"
ASYNCAPI_FILE: Final = "asyncapi.yaml"
EVENTS_DOC: Final = "events.md"

_COMPONENTS: Final = "#/components/schemas/"
_DEFS: Final = "#/$defs/"


# --- the grammar, as channels ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Channel:
    """One subject kind of the grammar and the events that may appear on it."""

    key: str
    """Channel id in the AsyncAPI document; equal to the kind token of the subject."""
    tokens: tuple[str, ...]
    """The tokens after ``mcsync.<set>.<cluster>.<kind>``, as parameter names."""
    events: tuple[type[ev.Event], ...]
    summary: str
    description: str

    @property
    def address(self) -> str:
        parts = [subjects.PREFIX, "{clusterset}", "{cluster}", self.key]
        parts += ["{" + t + "}" for t in self.tokens]
        return ".".join(parts)

    @property
    def pattern(self) -> str:
        """The address in the ``<param>`` notation of the docs."""
        return self.address.replace("{", "<").replace("}", ">")

    @property
    def operation(self) -> str:
        return self.key[:1].upper() + self.key[1:]


CHANNELS: Final[tuple[Channel, ...]] = (
    Channel(
        key="export",
        tokens=("namespace", "name"),
        events=(ev.ExportUpserted, ev.ExportWithdrawn),
        summary="One cluster's export of one Service.",
        description=(
            "The whole exported state of Service `namespace/name` as one cluster exports it: the "
            "Service's exported properties and the ServiceExport's identity and creation time, "
            "or a tombstone when the ServiceExport is gone. The last message is the current "
            "state of the export."
        ),
    ),
    Channel(
        key="slice",
        tokens=("namespace", "name", "slice"),
        events=(ev.SliceUpserted, ev.SliceRemoved),
        summary="One source EndpointSlice of an exported Service.",
        description=(
            "One EndpointSlice `slice` of Service `namespace/name` in the writing cluster, whole, "
            "or a tombstone when the slice is gone or its Service is no longer exported."
        ),
    ),
    Channel(
        key="cluster",
        tokens=(),
        events=(ev.ClusterJoined, ev.ClusterUpdated, ev.ClusterLeft),
        summary="Membership, properties and version of one cluster.",
        description=(
            "Joined, changed and left events of the writing cluster: its ClusterProperties, "
            "Kubernetes version and how to reach its API server."
        ),
    ),
    Channel(
        key="sync",
        tokens=(),
        events=(ev.SnapshotComplete,),
        summary="The writing cluster's publisher finished a full list.",
        description=(
            "Appended after a publisher listed its cluster and appended every difference and "
            "tombstone: from here on every key of that cluster is current."
        ),
    ),
    Channel(
        key="heartbeat",
        tokens=(),
        events=(ev.Heartbeat,),
        summary="Liveness and control-plane health of one cluster.",
        description=(
            "Appended every few seconds without compare-and-set. Subscribers treat a cluster "
            "whose heartbeats stopped for longer than the heartbeat lease as stale. Routine "
            "heartbeats carry `Nats-TTL` so they do not dominate the history; health "
            "transitions are kept."
        ),
    ),
    Channel(
        key="lease",
        tokens=("lease",),
        events=(ev.LeaseAcquired, ev.LeaseRenewed, ev.LeaseReleased),
        summary="A cross-cluster leader lease, as written by one cluster's candidates.",
        description=(
            "Acquire, renew and release of lease `lease` by a candidate in the writing cluster. "
            "Every cluster writes one lease on its own subject, and every append is a "
            "compare-and-set against the last sequence of the wildcard "
            "`mcsync.<clusterset>.*.lease.<lease>`, so the lease is one sequence across the "
            "clusterset."
        ),
    ),
)

DEAD_LETTER_CHANNEL: Final = "deadLetter"
DEAD_LETTER_ADDRESS: Final = DEAD_LETTER_PREFIX + ".{clusterset}.{cluster}"


def channel_of(event_type: type[ev.Event]) -> Channel:
    """The channel whose subjects carry events of ``event_type``."""
    for channel in CHANNELS:
        if event_type in channel.events:
            return channel
    raise KeyError(f"no channel carries {event_type.__name__}")


# --- text helpers --------------------------------------------------------------------------

_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")
_RST_LITERAL = re.compile(r"``([^`]+)``")


def _doc(obj: type) -> str:
    """A class docstring as Markdown: dedented, reST literals and roles as backticks."""
    text = inspect.cleandoc(obj.__doc__ or "")
    text = _ROLE.sub(r"`\1`", text)
    return _RST_LITERAL.sub(r"`\1`", text)


def _field_docs(struct_type: type) -> dict[str, str]:
    """Attribute docstrings (a string right below a field) by JSON field name.

    msgspec does not see them, so they are read from the source of the class and its bases; a
    subclass's docstring wins. Without source (a frozen build), fields simply have none.
    """
    encode_names = {f.name: f.encode_name for f in msgspec.structs.fields(struct_type)}
    docs: dict[str, str] = {}
    for klass in reversed(struct_type.__mro__):
        if not issubclass(klass, msgspec.Struct) or klass is msgspec.Struct:
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        cls_def = tree.body[0]
        if not isinstance(cls_def, ast.ClassDef):
            continue
        for field, doc in zip(cls_def.body, cls_def.body[1:], strict=False):
            if (
                isinstance(field, ast.AnnAssign)
                and isinstance(field.target, ast.Name)
                and field.target.id in encode_names
                and isinstance(doc, ast.Expr)
                and isinstance(doc.value, ast.Constant)
                and isinstance(doc.value.value, str)
            ):
                text = inspect.cleandoc(doc.value.value).replace("\n", " ")
                docs[encode_names[field.target.id]] = _RST_LITERAL.sub(r"`\1`", text)
    return docs


def _with_field_docs(properties: JsonObj, struct_type: type) -> JsonObj:
    docs = _field_docs(struct_type)
    return {k: {**v, "description": docs[k]} if k in docs else v for k, v in properties.items()}


def _summary(obj: type) -> str:
    return _doc(obj).split("\n\n", 1)[0].replace("\n", " ")


ESCAPING: Final = (
    "A name token: every byte of the name's UTF-8 encoding outside `[A-Za-z0-9_-]` is written "
    "as `~XX` (two upper-case hex digits), so `.`, `*`, `>` and white space never reach the "
    "subject. The escaping is reversible and canonical: a token that is not the canonical escape "
    "of its name (lower-case hex, an escaped safe byte, an empty token) is not part of the "
    "grammar. Kubernetes names never contain `~`, so plain names read unchanged. "
    f"Example: `db.primary` is written `{subjects.escape('db.primary')}`."
)

_PARAMETERS: Final[dict[str, tuple[str, list[str]]]] = {
    "clusterset": (
        "The clusterset: an RFC 1123 DNS label, written as is. Its log is the stream "
        "`MCSYNC_<CLUSTERSET>` (upper case, `-` as `_`).",
        ["prod"],
    ),
    "cluster": (
        "The cluster that wrote the message (its `cluster.clusterset.k8s.io` ClusterProperty): "
        "an RFC 1123 DNS label, written as is. Each cluster is the only writer of the subjects "
        "under `mcsync.<clusterset>.<cluster>.>`, and the body's `cluster` field must equal it.",
        ["east"],
    ),
    "namespace": ("The Kubernetes namespace. " + ESCAPING, ["shop"]),
    "name": (
        "The Service name (of the export, or the Service a slice belongs to). " + ESCAPING,
        ["checkout"],
    ),
    "slice": (
        "The EndpointSlice name. " + ESCAPING,
        [subjects.escape("checkout-7x2kq"), subjects.escape("checkout.east.0")],
    ),
    "lease": (
        "The lease name. " + ESCAPING,
        [subjects.escape("db.primary")],
    ),
}

_DEAD_LETTER_CLUSTER: Final = (
    "The cluster (or tool) that read the message and set it aside: an RFC 1123 DNS label. "
    "This is the reader, not the writer of the original message."
)


# --- headers -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Header:
    """One message header: its schema, when it is set, and what it means."""

    name: str
    schema: JsonObj
    value: str
    """The value in short, for the tables of the docs."""
    when: str
    """On which messages it is set; ``always`` headers are required by the schema."""
    description: str

    @property
    def required(self) -> bool:
        return self.when == ALWAYS


ALWAYS: Final = "always"
_HEX_ID: Final = "^[0-9a-f]{32}$"


def _event_headers() -> tuple[Header, ...]:
    ce_types = [CE_TYPE_PREFIX + ev.tag_of(t) for t in ev.EVENT_TYPES]
    return (
        Header(
            "ce-specversion",
            {"type": "string", "const": CE_SPECVERSION},
            f"`{CE_SPECVERSION}`",
            ALWAYS,
            "CloudEvents version. A reader rejects any other value.",
        ),
        Header(
            "ce-id",
            {"type": "string", "pattern": _HEX_ID},
            "32 hex digits, equal to `Nats-Msg-Id`",
            ALWAYS,
            "The event id: SHA-256 over the subject, the sequence the append expects to follow "
            "on it and the body, cut to 32 hex digits (heartbeats, which expect nothing, also "
            "hash the time of the append). Re-publishing the same append gives the same id; "
            "returning to an earlier state later follows another sequence, so it is a new id.",
        ),
        Header(
            "ce-source",
            {"type": "string", "pattern": "^/mcsync/[a-z0-9-]+/[a-z0-9-]+$"},
            "`/mcsync/<clusterset>/<cluster>`",
            ALWAYS,
            "The clusterset and the writing cluster.",
        ),
        Header(
            "ce-type",
            {"type": "string", "enum": ce_types},
            f"`{CE_TYPE_PREFIX}<tag>`",
            ALWAYS,
            f"`{CE_TYPE_PREFIX}` followed by the body's `type` tag. A reader rejects a message "
            "whose `ce-type` and body disagree.",
        ),
        Header(
            "ce-time",
            {"type": "string", "format": "date-time"},
            "RFC 3339, UTC, with `Z`",
            ALWAYS,
            "When the writer appended the event, by its clock. The stream's own timestamp is "
            "the time of record; this one is informative.",
        ),
        Header(
            "ce-datacontenttype",
            {"type": "string", "const": "application/json"},
            "`application/json`",
            ALWAYS,
            "The body is JSON (in the NATS binding this header replaces `Content-Type`).",
        ),
        Header(
            "Nats-Msg-Id",
            {"type": "string", "pattern": _HEX_ID},
            "equal to `ce-id`",
            ALWAYS,
            "JetStream deduplication id: inside the stream's duplicate window a second append "
            "with the same id is acknowledged with the first one's sequence and not stored "
            "again.",
        ),
        Header(
            "Nats-Expected-Last-Subject-Sequence",
            {"type": "string", "pattern": "^[0-9]+$"},
            "the last sequence on the subject (`0`: none yet)",
            "every append except heartbeats",
            "Compare-and-set: JetStream refuses the append (error 10071, wrong last sequence) "
            "unless the last message on the subject has this sequence; `0` means the subject "
            "must be empty. It describes the write, not the event: nats-server stores it with "
            "the message, but a reader must not rely on it.",
        ),
        Header(
            "Nats-Expected-Last-Subject-Sequence-Subject",
            {"type": "string"},
            "`mcsync.<clusterset>.*.lease.<lease>`",
            "lease appends",
            "Makes the compare-and-set above check the last sequence of this wildcard (every "
            "cluster's subject of the lease) instead of the own subject, so one lease is one "
            f"sequence (nats-server {MIN_NATS_SERVER}+).",
        ),
        Header(
            "Nats-TTL",
            {"type": "string", "pattern": "^[0-9]+$"},
            "seconds (three heartbeat leases)",
            "routine heartbeats",
            "The message expires after this many seconds (stream `allow_msg_ttl`, nats-server "
            f"{MIN_NATS_SERVER}+), so routine heartbeats do not fill the history. A publisher's "
            "first heartbeat and every health transition carry no TTL and stay for the audit "
            "trail.",
        ),
    )


def _dead_letter_headers() -> tuple[Header, ...]:
    return (
        Header(
            "Mcsync-Dlq-Subject",
            {"type": "string"},
            "the original subject",
            ALWAYS,
            "The subject of the message that did not decode.",
        ),
        Header(
            "Mcsync-Dlq-Seq",
            {"type": "string", "pattern": "^[0-9]+$"},
            "the original sequence",
            ALWAYS,
            "Its sequence in the clusterset's stream, where the original stays.",
        ),
        Header(
            "Mcsync-Dlq-Error",
            {"type": "string"},
            "the reason, percent-encoded",
            ALWAYS,
            "Why it was set aside, at most 1000 characters before percent-encoding (the same "
            "encoding as CloudEvents header values).",
        ),
        Header(
            "Nats-Msg-Id",
            {"type": "string"},
            "`dlq-<reader>-<stream>-<sequence>`",
            ALWAYS,
            "One dead letter per reader and message, however often the message is delivered.",
        ),
    )


def _headers_schema(title: str, description: str, headers: tuple[Header, ...]) -> JsonObj:
    return {
        "title": title,
        "description": description,
        "type": "object",
        "properties": {h.name: {**h.schema, "description": h.description} for h in headers},
        "required": [h.name for h in headers if h.required],
    }


# --- JSON Schemas of the events --------------------------------------------------------------


def _rewrite_refs(node: Any, old: str, new: str) -> Any:
    if isinstance(node, dict):
        out: JsonObj = {}
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str) and v.startswith(old):
                out[k] = new + v[len(old) :]
            else:
                out[k] = _rewrite_refs(v, old, new)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(v, old, new) for v in node]
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
    events: dict[str, JsonObj]
    """Event schemas by tag, refs to nested structs as ``#/$defs/<Struct>``."""
    structs: dict[str, JsonObj]
    """Nested struct schemas (Port, Endpoint, ...) by class name, same ref style."""


def _bodies() -> _Bodies:
    _, raw_defs = msgspec.json.schema_components(ev.EVENT_TYPES, ref_template=_DEFS + "{name}")
    # Through JSON once, so defaults are plain JSON values (lists, not tuples) everywhere.
    defs: dict[str, JsonObj] = json.loads(json.dumps(raw_defs))
    by_name: dict[str, type] = {t.__name__: t for t in ev.EVENT_TYPES}
    events: dict[str, JsonObj] = {}
    for event_type in ev.EVENT_TYPES:
        tag = ev.tag_of(event_type)
        raw = defs[event_type.__name__]
        properties = _with_field_docs(raw["properties"], event_type)
        # msgspec writes the tag as a one-value enum; const says the same more plainly.
        properties["type"] = {"const": tag}
        events[tag] = {
            "title": tag,
            "description": _doc(event_type),
            "type": "object",
            "properties": properties,
            "required": list(raw["required"]),
        }
    structs: dict[str, JsonObj] = {}
    for name in sorted(defs):
        if name in by_name:
            continue
        raw = defs[name]
        struct_type = _struct_type(name)
        struct: JsonObj = {
            "title": name,
            "description": _doc(struct_type),
            "type": "object",
            "properties": _with_field_docs(raw["properties"], struct_type),
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


def _closure(schema: JsonObj, structs: dict[str, JsonObj]) -> list[str]:
    """Names of the nested structs ``schema`` refers to, directly or not, sorted."""
    seen: set[str] = set()
    todo = [r[len(_DEFS) :] for r in _refs(schema) if r.startswith(_DEFS)]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += [r[len(_DEFS) :] for r in _refs(structs[name]) if r.startswith(_DEFS)]
    return sorted(seen)


def schema_id(tag: str) -> str:
    return SCHEMA_ID_PREFIX + tag


def event_schemas() -> dict[str, JsonObj]:
    """One self-contained JSON Schema (draft 2020-12) per event type, keyed by tag."""
    bodies = _bodies()
    out: dict[str, JsonObj] = {}
    for tag, body in bodies.events.items():
        schema: JsonObj = {"$schema": JSON_SCHEMA_DIALECT, "$id": schema_id(tag)}
        schema.update(copy.deepcopy(body))
        needed = _closure(body, bodies.structs)
        if needed:
            schema["$defs"] = {n: copy.deepcopy(bodies.structs[n]) for n in needed}
        out[tag] = schema
    return out


# --- AsyncAPI --------------------------------------------------------------------------------


def _message(event_type: type[ev.Event]) -> JsonObj:
    tag = ev.tag_of(event_type)
    channel = channel_of(event_type)
    notes = {
        "heartbeat": "Appended without compare-and-set; routine ones carry `Nats-TTL`.",
        "lease": "Appended with compare-and-set across every cluster's subject of the lease.",
    }
    write = notes.get(
        channel.key, "Appended with compare-and-set on its own subject by its only writer."
    )
    return {
        "name": tag,
        "title": event_type.__name__,
        "summary": _summary(event_type),
        "description": _doc(event_type) + "\n\n" + write,
        "contentType": "application/json",
        "headers": {
            "allOf": [
                {"$ref": _COMPONENTS + "EventHeaders"},
                {
                    "type": "object",
                    "properties": {"ce-type": {"const": CE_TYPE_PREFIX + tag}},
                },
            ]
        },
        "payload": {"$ref": _COMPONENTS + tag},
    }


def _operation(
    action: str, channel_key: str, message_ids: list[str], summary: str, description: str
) -> JsonObj:
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel_key}"},
        "summary": summary,
        "description": description,
        "messages": [{"$ref": f"#/channels/{channel_key}/messages/{m}"} for m in message_ids],
    }


_RECEIVE: Final = (
    "Follow with an ordered consumer on the clusterset's stream, filter "
    "`mcsync.<clusterset>.>` (or a narrower wildcard) and `DeliverPolicy.LAST_PER_SUBJECT`: "
    "the last message of every subject (the current state of every key) first, then every "
    "new one in stream order. Ignore event types and body fields you do not know."
)
_SEND: Final = (
    "Only the writing cluster's mcsync publisher (NATS permissions allow it to publish on "
    "`mcsync.<clusterset>.<cluster>.>` only). Always an acknowledged JetStream publish with "
    "the CloudEvents headers and `Nats-Msg-Id`, never a core NATS publish."
)


def asyncapi() -> JsonObj:
    """The AsyncAPI 3.0.0 document of the log, as plain data (dump it with :func:`dump_yaml`)."""
    bodies = _bodies()
    channels: JsonObj = {}
    operations: JsonObj = {}
    messages: JsonObj = {}
    for channel in CHANNELS:
        tags = [ev.tag_of(t) for t in channel.events]
        params = ("clusterset", "cluster", *channel.tokens)
        channels[channel.key] = {
            "address": channel.address,
            "title": channel.key,
            "summary": channel.summary,
            "description": channel.description,
            "parameters": {p: {"$ref": f"#/components/parameters/{p}"} for p in params},
            "messages": {t: {"$ref": f"#/components/messages/{t}"} for t in tags},
        }
        operations["receive" + channel.operation] = _operation(
            "receive", channel.key, tags, f"Follow {channel.key} events.", _RECEIVE
        )
        operations["send" + channel.operation] = _operation(
            "send", channel.key, tags, f"Append {channel.key} events.", _SEND
        )
        for event_type in channel.events:
            messages[ev.tag_of(event_type)] = _message(event_type)

    channels[DEAD_LETTER_CHANNEL] = {
        "address": DEAD_LETTER_ADDRESS,
        "title": "dead letters",
        "summary": "Messages of the log that a reader could not decode, set aside.",
        "description": (
            "Stream `MCSYNCDLQ_<CLUSTERSET>`, subjects `mcsyncdlq.<clusterset>.>`, kept seven "
            "days and at most 100000 messages. A reader that cannot decode a message of the log "
            "logs it, counts it, copies it here with the reason and goes on; the original stays "
            "in the log."
        ),
        "parameters": {
            "clusterset": {"$ref": "#/components/parameters/clusterset"},
            "cluster": {"$ref": "#/components/parameters/deadLetterCluster"},
        },
        "messages": {"deadLetter": {"$ref": "#/components/messages/deadLetter"}},
    }
    operations["receiveDeadLetter"] = _operation(
        "receive",
        DEAD_LETTER_CHANNEL,
        ["deadLetter"],
        "Inspect dead letters.",
        "Operators and tools read the dead-letter stream to find malformed messages.",
    )
    operations["sendDeadLetter"] = _operation(
        "send",
        DEAD_LETTER_CHANNEL,
        ["deadLetter"],
        "Set an undecodable message aside.",
        "A reader of the log (an mcsync subscriber, or a tool using its follower) copies a "
        "message that did not decode, best effort.",
    )
    messages["deadLetter"] = {
        "name": "deadLetter",
        "title": "Dead letter",
        "summary": "The body of a message that did not decode, with where it came from.",
        "contentType": "application/octet-stream",
        "headers": {"$ref": _COMPONENTS + "DeadLetterHeaders"},
        "payload": {"$ref": _COMPONENTS + "DeadLetterBody"},
    }

    schemas: JsonObj = {}
    for tag, body in bodies.events.items():
        schemas[tag] = _rewrite_refs(copy.deepcopy(body), _DEFS, _COMPONENTS)
    for name, body in bodies.structs.items():
        schemas[name] = _rewrite_refs(copy.deepcopy(body), _DEFS, _COMPONENTS)
    schemas["EventHeaders"] = _headers_schema(
        "EventHeaders",
        "CloudEvents binary-mode headers (NATS binding) and JetStream headers of every event. "
        "Header names are case-insensitive; values are percent-encoded (bytes outside "
        'U+0021-U+007E, `"` and `%`) and may be double-quoted.',
        _event_headers(),
    )
    schemas["DeadLetterHeaders"] = _headers_schema(
        "DeadLetterHeaders", "Headers of a dead letter.", _dead_letter_headers()
    )
    schemas["DeadLetterBody"] = {
        "title": "DeadLetterBody",
        "description": (
            "The original message body, unchanged, cut at "
            f"{ev.MAX_EVENT_BYTES} bytes. It may be anything, since it did not decode."
        ),
    }

    parameters: JsonObj = {
        name: {"description": text, "examples": examples}
        for name, (text, examples) in _PARAMETERS.items()
    }
    parameters["deadLetterCluster"] = {"description": _DEAD_LETTER_CLUSTER, "examples": ["east"]}

    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "mcsync event log",
            "version": CONTRACT_VERSION,
            "description": (
                "The replicated event log of an mcsync clusterset on NATS JetStream: one stream "
                "`MCSYNC_<CLUSTERSET>` with subjects `mcsync.<clusterset>.>`. Each cluster "
                "writes only under its own `mcsync.<clusterset>.<cluster>.>`. Events carry "
                "whole state, so the last message on a subject is the current state of its key. "
                f"Needs nats-server >= {MIN_NATS_SERVER}. Generated from the event types by "
                "`mcsync schema`; see events.md for the prose."
            ),
            "license": {"name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "localhost:4222",
                "protocol": "nats",
                "description": (
                    "Placeholder (nats://localhost:4222): any NATS server or cluster with "
                    f"JetStream, version {MIN_NATS_SERVER} or later, that holds the stream."
                ),
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": schemas,
            "messages": messages,
            "parameters": parameters,
        },
    }


class _Dumper(yaml.SafeDumper):
    """Block scalars for multi-line text, and no anchors for repeated values."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _represent_str)


def dump_yaml(doc: JsonObj) -> str:
    return str(yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100))


def dump_json(schema: JsonObj) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# --- Markdown for events.md ------------------------------------------------------------------


def _md_code(value: str) -> str:
    return "`" + value + "`"


def _md_type(node: JsonObj) -> str:
    """A short human rendering of a (msgspec-generated) schema node."""
    if "$ref" in node:
        name = str(node["$ref"]).rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "const" in node:
        return _md_code(json.dumps(node["const"]))
    if "enum" in node:
        return " \\| ".join(_md_code(json.dumps(v)) for v in node["enum"])
    if "anyOf" in node:
        return " or ".join(_md_type(n) for n in node["anyOf"])
    kind = node.get("type")
    if kind == "array":
        return "array of " + _md_type(node["items"])
    if kind == "object":
        return "map of string to " + _md_type(node.get("additionalProperties", {}))
    if kind == "string" and node.get("format") == "date-time":
        return "string (RFC 3339 date-time with offset)"
    return str(kind) if kind else "any"


def _fields_table(schema: JsonObj) -> str:
    required = set(schema.get("required", []))
    properties: JsonObj = schema["properties"]
    # A meaning column only where the types document their fields (attribute docstrings).
    described = any("description" in node for node in properties.values())
    rows = ["| field | type | required / default |", "|---|---|---|"]
    if described:
        rows = ["| field | type | required / default | meaning |", "|---|---|---|---|"]
    for name, node in properties.items():
        if name in required:
            need = "required"
        elif "default" in node:
            need = "default " + _md_code(json.dumps(node["default"]))
        else:
            need = "optional"
        row = f"| `{name}` | {_md_type(node)} | {need} |"
        if described:
            row += f" {node.get('description', '')} |"
        rows.append(row)
    return "\n".join(rows)


def _subjects_table() -> str:
    rows = ["| subject | events | writer |", "|---|---|---|"]
    for channel in CHANNELS:
        tags = ", ".join(_md_code(ev.tag_of(t)) for t in channel.events)
        writer = (
            "candidates in `<cluster>`" if channel.key == "lease" else "publisher of `<cluster>`"
        )
        rows.append(f"| `{channel.pattern}` | {tags} | {writer} |")
    dlq = DEAD_LETTER_ADDRESS.replace("{", "<").replace("}", ">")
    rows.append(f"| `{dlq}` | dead letters (stream `MCSYNCDLQ_<SET>`) | readers of the log |")
    return "\n".join(rows)


def _headers_table(headers: tuple[Header, ...]) -> str:
    rows = ["| header | value | set on | meaning |", "|---|---|---|---|"]
    rows += [f"| `{h.name}` | {h.value} | {h.when} | {h.description} |" for h in headers]
    return "\n".join(rows)


def markdown_regions() -> dict[str, str]:
    """The generated regions of ``events.md``, by region name."""
    bodies = _bodies()
    regions: dict[str, str] = {
        "subjects": _subjects_table(),
        "headers": _headers_table(_event_headers()),
        "dead-letter-headers": _headers_table(_dead_letter_headers()),
    }
    for tag, body in bodies.events.items():
        regions["fields:" + tag] = _fields_table(body)
    parts = []
    for name, body in bodies.structs.items():
        parts.append(f"#### {name}\n\n{body['description']}\n\n{_fields_table(body)}")
    regions["structs"] = "\n\n".join(parts)
    return regions


_REGION = re.compile(
    r"(<!-- BEGIN GENERATED: (?P<name>\S+) -->\n)(?P<body>.*?)(<!-- END GENERATED: (?P=name) -->)",
    re.DOTALL,
)


def missing_regions(text: str) -> list[str]:
    """Generated regions that ``events.md`` lacks (a new event type needs a section)."""
    present = {m.group("name") for m in _REGION.finditer(text)}
    return [name for name in markdown_regions() if name not in present]


def render_events_doc(text: str) -> str:
    """``text`` with every generated region replaced by its current content."""
    regions = markdown_regions()

    def fill(m: re.Match[str]) -> str:
        body = regions.get(m.group("name"))
        if body is None:
            return m.group(0)  # an unknown region is left alone (and not ours to judge)
        return m.group(1) + body + "\n" + m.group(4)

    return _REGION.sub(fill, text)


# --- files ---------------------------------------------------------------------------------


def generate() -> dict[str, str]:
    """Every fully generated file, by path relative to the docs folder, with its content."""
    files = {
        f"{SCHEMAS_DIR}/{tag}.json": dump_json(schema) for tag, schema in event_schemas().items()
    }
    files[ASYNCAPI_FILE] = dump_yaml(asyncapi())
    return files


def write(out_dir: Path) -> list[Path]:
    """Write the generated documents under ``out_dir`` (normally ``docs/``).

    Writes ``schemas/<tag>.json`` and ``asyncapi.yaml``, and refreshes the generated regions of
    ``events.md`` when that file exists (its prose is written by hand, so it is never created).
    Files already current are not touched. Schema files of tags that no longer exist are not
    deleted: :func:`check` reports them, because removing a published schema is a breaking
    change someone must decide on.

    Returns:
        Every path generated, current or rewritten, in a stable order.
    """
    written: list[Path] = []
    for rel, content in generate().items():
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text(encoding="utf-8") != content:
            path.write_text(content, encoding="utf-8", newline="\n")
        written.append(path)
    doc = out_dir / EVENTS_DOC
    if doc.is_file():
        text = doc.read_text(encoding="utf-8")
        new = render_events_doc(text)
        if new != text:
            doc.write_text(new, encoding="utf-8", newline="\n")
        written.append(doc)
    return written


def check(out_dir: Path) -> list[str]:
    """Names (relative to ``out_dir``) of the files that differ from what would be generated.

    Reports missing and changed files, schema files of unknown tags under ``schemas/``, and
    ``events.md`` when one of its generated regions is stale or missing (the file itself is
    optional). An empty list means everything is current.
    """
    stale: list[str] = []
    files = generate()
    for rel, content in files.items():
        path = out_dir / rel
        if not path.is_file() or path.read_text(encoding="utf-8") != content:
            stale.append(rel)
    schema_dir = out_dir / SCHEMAS_DIR
    if schema_dir.is_dir():
        for path in sorted(schema_dir.glob("*.json")):
            rel = f"{SCHEMAS_DIR}/{path.name}"
            if rel not in files:
                stale.append(rel)
    doc = out_dir / EVENTS_DOC
    if doc.is_file():
        text = doc.read_text(encoding="utf-8")
        if missing_regions(text) or render_events_doc(text) != text:
            stale.append(EVENTS_DOC)
    return sorted(stale)
