"""The AsyncAPI 3.0.0 document of the log: servers, channels, messages and operations."""

from __future__ import annotations

import copy
import json
from typing import Any, Final

import yaml

from engine.contract import channels, jsonschema
from engine.core import events as ev

# --- AsyncAPI --------------------------------------------------------------------------------


def _message(event_type: type[ev.Event]) -> channels.JsonObj:
    tag = ev.tag_of(event_type)
    channel = channels.channel_of(event_type)
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
        "summary": channels.summary_of(event_type),
        "description": channels.docstring(event_type) + "\n\n" + write,
        "contentType": "application/json",
        "headers": {
            "allOf": [
                {"$ref": channels.COMPONENTS + "EventHeaders"},
                {
                    "type": "object",
                    "properties": {"ce-type": {"const": channels.CE_TYPE_PREFIX + tag}},
                },
            ]
        },
        "payload": {"$ref": channels.COMPONENTS + tag},
    }


def _operation(
    action: str, channel_key: str, message_ids: list[str], summary: str, description: str
) -> channels.JsonObj:
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


def document() -> channels.JsonObj:
    """The AsyncAPI 3.0.0 document of the log, as plain data (dump it with :func:`dump_yaml`)."""
    bodies = jsonschema.event_bodies()
    channel_docs: channels.JsonObj = {}
    operations: channels.JsonObj = {}
    messages: channels.JsonObj = {}
    for channel in channels.CHANNELS:
        tags = [ev.tag_of(t) for t in channel.events]
        params = ("clusterset", "cluster", *channel.tokens)
        channel_docs[channel.key] = {
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

    channel_docs[channels.DEAD_LETTER_CHANNEL] = {
        "address": channels.DEAD_LETTER_ADDRESS,
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
        channels.DEAD_LETTER_CHANNEL,
        ["deadLetter"],
        "Inspect dead letters.",
        "Operators and tools read the dead-letter stream to find malformed messages.",
    )
    operations["sendDeadLetter"] = _operation(
        "send",
        channels.DEAD_LETTER_CHANNEL,
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
        "headers": {"$ref": channels.COMPONENTS + "DeadLetterHeaders"},
        "payload": {"$ref": channels.COMPONENTS + "DeadLetterBody"},
    }

    schemas: channels.JsonObj = {}
    for tag, body in bodies.events.items():
        schemas[tag] = jsonschema.rewrite_refs(
            copy.deepcopy(body), channels.DEFS, channels.COMPONENTS
        )
    for name, body in bodies.structs.items():
        schemas[name] = jsonschema.rewrite_refs(
            copy.deepcopy(body), channels.DEFS, channels.COMPONENTS
        )
    schemas["EventHeaders"] = channels.headers_schema(
        "EventHeaders",
        "CloudEvents binary-mode headers (NATS binding) and JetStream headers of every event. "
        "Header names are case-insensitive; values are percent-encoded (bytes outside "
        'U+0021-U+007E, `"` and `%`) and may be double-quoted.',
        channels.event_headers(),
    )
    schemas["DeadLetterHeaders"] = channels.headers_schema(
        "DeadLetterHeaders", "Headers of a dead letter.", channels.dead_letter_headers()
    )
    schemas["DeadLetterBody"] = {
        "title": "DeadLetterBody",
        "description": (
            "The original message body, unchanged, cut at "
            f"{ev.MAX_EVENT_BYTES} bytes. It may be anything, since it did not decode."
        ),
    }

    parameters: channels.JsonObj = {
        name: {"description": text, "examples": examples}
        for name, (text, examples) in channels.PARAMETERS.items()
    }
    parameters["deadLetterCluster"] = {
        "description": channels.DEAD_LETTER_CLUSTER,
        "examples": ["east"],
    }

    return {
        "asyncapi": channels.ASYNCAPI_VERSION,
        "info": {
            "title": "mcsync event log",
            "version": channels.CONTRACT_VERSION,
            "description": (
                "The replicated event log of an mcsync clusterset on NATS JetStream: one stream "
                "`MCSYNC_<CLUSTERSET>` with subjects `mcsync.<clusterset>.>`. Each cluster "
                "writes only under its own `mcsync.<clusterset>.<cluster>.>`. Events carry "
                "whole state, so the last message on a subject is the current state of its key. "
                f"Needs nats-server >= {channels.MIN_NATS_SERVER}. Generated from the event types "
                "by `mcsync schema`; see events.md for the prose."
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
                    f"JetStream, version {channels.MIN_NATS_SERVER} or later, that holds the "
                    "stream."
                ),
            }
        },
        "channels": channel_docs,
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


def dump_yaml(doc: channels.JsonObj) -> str:
    return str(yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100))


def dump_json(schema: channels.JsonObj) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
