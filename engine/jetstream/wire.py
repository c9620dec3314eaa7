"""The wire format of one message of the log: CloudEvents binary-mode headers and a JSON body.

:func:`headers_for` writes the headers of an append; :func:`decode_message` is the strict reader:
anything that is not a valid mcsync event raises :class:`~engine.core.errors.DecodeError`.
:func:`parse_headers` reads a raw NATS header block faster than nats-py does.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Final
from urllib.parse import quote, unquote

import msgspec

from engine.core import events as ev
from engine.core import fold
from engine.core.errors import DecodeError
from engine.core.fold import Envelope

CE_SPECVERSION: Final = "1.0"
CE_TYPE_PREFIX: Final = "io.mcsync."


_CE_SAFE: Final = "".join(chr(c) for c in range(0x21, 0x7F) if c not in (0x22, 0x25))
_CE_PLAIN: Final = re.compile(r"[\x21\x23\x24\x26-\x7e]*")


def ce_encode(value: str) -> str:
    """Percent-encode a CloudEvents header value (NATS binding rules): bytes outside
    0x21-0x7E, ``"`` and ``%`` become upper-case ``%XX`` of their UTF-8 bytes."""
    if _CE_PLAIN.fullmatch(value):
        return value  # the common case: nothing to encode
    return quote(value, safe=_CE_SAFE)


def headers_for(
    event: ev.Event, subject: str, msg_id: str, now: datetime, clusterset: str
) -> dict[str, str]:
    return {
        "ce-specversion": CE_SPECVERSION,
        "ce-id": msg_id,
        "ce-source": ce_encode(f"/mcsync/{clusterset}/{event.cluster}"),
        "ce-type": CE_TYPE_PREFIX + ev.tag_of(type(event)),
        "ce-time": ce_time(now),
        "ce-datacontenttype": "application/json",
    }


def ce_time(now: datetime) -> str:
    return now.astimezone(UTC).isoformat().replace("+00:00", "Z")


_CE_TYPES: Final = {t: CE_TYPE_PREFIX + ev.tag_of(t) for t in ev.EVENT_TYPES}
_REQUIRED_HEADERS: Final = ("ce-specversion", "ce-id", "ce-type", "ce-source")


def _header(headers: dict[str, str], name: str) -> str | None:
    """A header by lower-case name; names are case-insensitive, ours are sent lower-case."""
    value = headers.get(name)
    if value is None:
        for k, v in headers.items():
            if k.lower() == name:
                return v
    return value


def parse_headers(block: bytes) -> dict[str, str]:
    """The headers of a NATS header block without inline status: a ``NATS/1.0`` line, then
    ``Name: value`` lines.

    Names and values are stripped of ASCII whitespace; a line without a colon, or a name that
    is not ASCII or has whitespace inside, is skipped; bytes that are not UTF-8 become U+FFFD.
    That is what nats-py makes of the same block, in less time (a test compares the two).
    """
    out: dict[str, str] = {}
    lines = block.decode("utf-8", "replace").split("\r\n")
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            name = name.strip(_OWS)
            if name.isascii() and (name.split() == [name] or not name):  # no whitespace at all
                out[name] = value.strip(_OWS)
    return out


_OWS: Final = " \t\n\r\x0b\x0c"  # what bytes.strip() strips


def decode_message(
    subject: str, seq: int, time: datetime, headers: dict[str, str] | None, data: bytes
) -> Envelope:
    """Decode one message of the log strictly; raise :class:`DecodeError` on anything odd."""
    if len(data) > ev.MAX_EVENT_BYTES:
        raise DecodeError(f"message of {len(data)} bytes exceeds {ev.MAX_EVENT_BYTES}")
    if not headers:
        raise DecodeError("message has no CloudEvents headers")
    spec = headers.get("ce-specversion")
    ce_type = headers.get("ce-type")
    if spec is None or ce_type is None or "ce-id" not in headers or "ce-source" not in headers:
        # Not as mcsync sends them: look the names up case-insensitively.
        found = [_header(headers, h) for h in _REQUIRED_HEADERS]
        for name, value in zip(_REQUIRED_HEADERS, found, strict=True):
            if value is None:
                raise DecodeError(f"message lacks the {name} header")
        spec, _, ce_type, _ = found
        assert spec is not None and ce_type is not None
    if spec != CE_SPECVERSION and spec.strip('"') != CE_SPECVERSION:
        raise DecodeError(f"unsupported CloudEvents specversion {spec!r}")
    try:
        event = ev.decode_sized(data)  # the size was checked above
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        tag = ev.unknown_tag(data)
        if tag is not None:
            raise DecodeError(
                f"event type {tag!r} is not known to this reader (a newer writer?)",
                "unknown-version",
            ) from exc
        raise DecodeError(f"body is not a valid event: {exc}") from exc
    if '"' in ce_type or "%" in ce_type:
        ce_type = unquote(ce_type.strip('"'), errors="strict")
    if ce_type != _CE_TYPES[type(event)]:
        raise DecodeError(f"ce-type {ce_type!r} does not match the body's type")
    why = fold.refusal(subject, event)
    if why is not None:
        raise DecodeError(f"refused: {why}", "refused")
    return Envelope(seq, subject, time, event)
