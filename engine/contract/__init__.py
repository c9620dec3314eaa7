"""The log's public contract as documents: a JSON Schema per event type and an AsyncAPI 3 file.

Third-party tools follow the log without reading this code, so the subjects, headers and bodies
have to be written down somewhere they can trust. They are generated here from the msgspec types
and the subject grammar, and :func:`check` lets a unit test (and ``mcsync schema --check``) prove
that the copies committed under ``docs/`` are current. Pure apart from writing and checking files.

* :mod:`.channels` - the channels (one per subject kind), their parameters and headers;
* :mod:`.jsonschema` - one self-contained JSON Schema per event type;
* :mod:`.asyncapi` - the AsyncAPI 3.0.0 document;
* :mod:`.documents` - the generated files and the generated regions of ``events.md``.
"""

from engine.contract.asyncapi import document as asyncapi_document
from engine.contract.asyncapi import (
    dump_json,
    dump_yaml,
)
from engine.contract.channels import (
    ALWAYS,
    ASYNCAPI_FILE,
    ASYNCAPI_VERSION,
    CE_SPECVERSION,
    CE_TYPE_PREFIX,
    CHANNELS,
    COMPONENTS,
    CONTRACT_VERSION,
    DEAD_LETTER_ADDRESS,
    DEAD_LETTER_CHANNEL,
    DEAD_LETTER_CLUSTER,
    DEAD_LETTER_PREFIX,
    DEFS,
    ESCAPING,
    EVENTS_DOC,
    JSON_SCHEMA_DIALECT,
    MIN_NATS_SERVER,
    PARAMETERS,
    SCHEMA_ID_PREFIX,
    SCHEMAS_DIR,
    Channel,
    Header,
    JsonObj,
    channel_of,
    dead_letter_headers,
    docstring,
    event_headers,
    headers_schema,
    summary_of,
    with_field_docs,
)
from engine.contract.documents import (
    check,
    generate,
    markdown_regions,
    missing_regions,
    render_events_doc,
    write,
)
from engine.contract.jsonschema import (
    event_bodies,
    event_schemas,
    rewrite_refs,
    schema_id,
)

__all__ = [
    "ALWAYS",
    "ASYNCAPI_FILE",
    "ASYNCAPI_VERSION",
    "CE_SPECVERSION",
    "CE_TYPE_PREFIX",
    "CHANNELS",
    "COMPONENTS",
    "CONTRACT_VERSION",
    "DEAD_LETTER_ADDRESS",
    "DEAD_LETTER_CHANNEL",
    "DEAD_LETTER_CLUSTER",
    "DEAD_LETTER_PREFIX",
    "DEFS",
    "ESCAPING",
    "EVENTS_DOC",
    "JSON_SCHEMA_DIALECT",
    "MIN_NATS_SERVER",
    "PARAMETERS",
    "SCHEMAS_DIR",
    "SCHEMA_ID_PREFIX",
    "Channel",
    "Header",
    "JsonObj",
    "asyncapi_document",
    "channel_of",
    "check",
    "dead_letter_headers",
    "docstring",
    "dump_json",
    "dump_yaml",
    "event_bodies",
    "event_headers",
    "event_schemas",
    "generate",
    "headers_schema",
    "markdown_regions",
    "missing_regions",
    "render_events_doc",
    "rewrite_refs",
    "schema_id",
    "summary_of",
    "with_field_docs",
    "write",
]
