"""The follower reads header blocks itself: it must make of them what nats-py makes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.aio.client import Client as NATS

from engine import jetstream

# Header names: any ASCII but ':' and line breaks (clients write tokens of printable ASCII; the
# rest, control characters and whitespace included, is what a broken or hostile writer sends).
names = st.text(
    st.characters(max_codepoint=0x7F, exclude_characters=":\r\n"), min_size=0, max_size=20
)
values = st.text(st.characters(exclude_characters="\r\n", exclude_categories=["Cs"]), max_size=40)
padding = st.sampled_from(["", " ", "  ", "\t", "\x0b", "\x1c"])


async def _nats_py(block: bytes) -> dict[str, str] | None:
    return await NATS()._process_headers(block)


@given(
    lines=st.lists(st.tuples(padding, names, padding, values, padding), max_size=10),
    junk=st.lists(st.binary(max_size=12).filter(lambda b: b"\r\n" not in b), max_size=3),
)
async def test_header_blocks_parse_as_nats_py_parses_them(
    lines: list[tuple[str, str, str, str, str]], junk: list[bytes]
) -> None:
    raw = [f"{a}{n}{b}:{c}{v}{c}".encode() for a, n, b, v, c in lines] + junk
    block = b"NATS/1.0\r\n" + b"".join(line + b"\r\n" for line in raw) + b"\r\n"
    assert (jetstream.parse_headers(block) or None) == await _nats_py(block)


@pytest.mark.parametrize(
    "block",
    [
        b"NATS/1.0\r\n\r\n",
        b"NATS/1.0\r\nce-type: io.mcsync.export.upserted.v1\r\nce-id: x\r\n\r\n",
        b"NATS/1.0\r\nno colon here\r\nk:v\r\n\r\n",
        b"NATS/1.0\r\nsp ace: v\r\n\xff\xfe: v\r\nk: \xff\r\n\r\n",
        b"NATS/1.0\r\nk: one\r\nk: two\r\nK: three\r\n\r\n",
        b"NATS/1.0\r\n\x1cfoo: v\r\nk\x1c: v\r\n\x1d: v\r\n: empty name\r\n\r\n",
        b"NATS/1.0\r\nk\x00: v\r\n\x7fk: v\r\nk: \x1cv\x1c\r\n\r\n",
    ],
)
async def test_edge_cases_parse_as_nats_py_parses_them(block: bytes) -> None:
    assert (jetstream.parse_headers(block) or None) == await _nats_py(block)
