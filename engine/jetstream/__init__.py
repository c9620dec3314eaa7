"""The log port: everything mcsync does with NATS JetStream.

The package's names below are its surface: the rest of mcsync, and third-party tools, use the log
through them (``from engine import jetstream`` then ``jetstream.EventLog``); the modules behind
them may move.

* :mod:`.connection` - connections that reconnect forever; which failures are transient;
* :mod:`.layout` - where a cluster reads the log and where its appends land (hub, mirror, leaf);
* :mod:`.streams` - provisioning of the clusterset's stream and its dead-letter stream;
* :mod:`.wire` - one message on the wire: CloudEvents headers and the strict decoder;
* :mod:`.eventlog` - acked appends (single and pipelined), reading a subject's head, replay;
* :mod:`.follower` - following the log, last event per subject first;
* :mod:`.pipeline` and :mod:`.delivery` - the fast paths under bulk appends and following, which
  reach into nats-py's internals (hence its pinned minor version).
"""

from engine.jetstream.connection import Tls, close, connect, is_transient
from engine.jetstream.eventlog import Append, EventLog, Replayed
from engine.jetstream.follower import Follower
from engine.jetstream.layout import LAYOUTS, Layout, Route
from engine.jetstream.streams import (
    StreamSettings,
    dead_letter_stream,
    dead_letter_subject,
    ensure_leaf,
    ensure_mirror,
    ensure_stream,
)
from engine.jetstream.wire import (
    CE_SPECVERSION,
    CE_TYPE_PREFIX,
    decode_message,
    headers_for,
    parse_headers,
)

__all__ = [
    "CE_SPECVERSION",
    "CE_TYPE_PREFIX",
    "LAYOUTS",
    "Append",
    "EventLog",
    "Follower",
    "Layout",
    "Replayed",
    "Route",
    "StreamSettings",
    "Tls",
    "close",
    "connect",
    "dead_letter_stream",
    "dead_letter_subject",
    "decode_message",
    "ensure_leaf",
    "ensure_mirror",
    "ensure_stream",
    "headers_for",
    "is_transient",
    "parse_headers",
]
