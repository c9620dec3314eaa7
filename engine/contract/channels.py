"""What the log's contract consists of: channels (one per subject kind), parameters, headers."""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from engine.core import events as ev
from engine.core import subjects

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

COMPONENTS: Final = "#/components/schemas/"
DEFS: Final = "#/$defs/"


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


def docstring(obj: type) -> str:
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


def with_field_docs(properties: JsonObj, struct_type: type) -> JsonObj:
    docs = _field_docs(struct_type)
    return {k: {**v, "description": docs[k]} if k in docs else v for k, v in properties.items()}


def summary_of(obj: type) -> str:
    return docstring(obj).split("\n\n", 1)[0].replace("\n", " ")


ESCAPING: Final = (
    "A name token: every byte of the name's UTF-8 encoding outside `[A-Za-z0-9_-]` is written "
    "as `~XX` (two upper-case hex digits), so `.`, `*`, `>` and white space never reach the "
    "subject. The escaping is reversible and canonical: a token that is not the canonical escape "
    "of its name (lower-case hex, an escaped safe byte, an empty token) is not part of the "
    "grammar. Kubernetes names never contain `~`, so plain names read unchanged. "
    f"Example: `db.primary` is written `{subjects.escape('db.primary')}`."
)

PARAMETERS: Final[dict[str, tuple[str, list[str]]]] = {
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

DEAD_LETTER_CLUSTER: Final = (
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


def event_headers() -> tuple[Header, ...]:
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
            "32 hex digits",
            ALWAYS,
            "The event id: SHA-256 over the subject, the sequence the append expects to follow "
            "on it and the body, cut to 32 hex digits (heartbeats, which expect nothing, also "
            "hash the time of the append). Re-publishing the same append gives the same id, so "
            "a writer whose ack was lost recognises its own event at the head of its subject; "
            "returning to an earlier state later follows another sequence, so it is a new id. "
            "Appends carry no `Nats-Msg-Id`: the stream's duplicate window is shared by every "
            "cluster, and an id another cluster can predict would let it suppress the append.",
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


def dead_letter_headers() -> tuple[Header, ...]:
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
            "Mcsync-Dlq-Kind",
            {"type": "string", "enum": ["invalid", "unknown-version", "refused"]},
            "`invalid`, `unknown-version` or `refused`",
            ALWAYS,
            "Why the message is unusable: not an mcsync event, an event type or version the "
            "reader does not know, or a valid event that may not stand on its subject.",
        ),
        Header(
            "Nats-Msg-Id",
            {"type": "string"},
            "`dlq-<reader>-<stream>-<sequence>`",
            ALWAYS,
            "One dead letter per reader and message, however often the message is delivered.",
        ),
    )


def headers_schema(title: str, description: str, headers: tuple[Header, ...]) -> JsonObj:
    return {
        "title": title,
        "description": description,
        "type": "object",
        "properties": {h.name: {**h.schema, "description": h.description} for h in headers},
        "required": [h.name for h in headers if h.required],
    }
