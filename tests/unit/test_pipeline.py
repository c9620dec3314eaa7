"""The bulk append path builds the same bytes nats-py would send for the same message."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from nats.aio.client import Client as NATS

from engine import jetstream
from engine.core import events as ev
from engine.core import subjects
from engine.jetstream import pipeline, wire

T0 = datetime(2026, 1, 1, 12, 30, 15, 123456, tzinfo=UTC)


async def _nats_py_frame(subject: str, reply: str, body: bytes, headers: dict[str, str]) -> bytes:
    """What nats-py's own publish path queues for this message."""
    nc = NATS()
    sent: list[bytes] = []

    async def capture(cmd: bytes, priority: bool = False) -> None:
        sent.append(cmd)

    nc._send_command = capture  # type: ignore[method-assign]
    await nc._send_publish(subject, reply, body, len(body), headers)
    assert len(sent) == 1
    return sent[0]


APPENDS = [
    jetstream.Append(
        subjects.export("prod", "east", "shop", "cart"),
        ev.ExportUpserted(
            cluster="east", namespace="shop", name="cart", uid="u-1", created=T0, ports=()
        ),
        expected_last_seq=41,
    ),
    jetstream.Append(
        subjects.heartbeat("prod", "west"),
        ev.Heartbeat(cluster="west", instance="i-1"),
        ttl_seconds=30,
    ),
    jetstream.Append(
        subjects.lease("prod", "east", "leader"),
        ev.LeaseReleased(cluster="east", name="leader", holder="h", token=3),
        expected_last_seq=0,
        expected_subject=subjects.lease_any_cluster("prod", "leader"),
    ),
    # Unconditional: no expected sequence at all.
    jetstream.Append(
        subjects.sync("prod", "east"),
        ev.SnapshotComplete(cluster="east", epoch=7),
    ),
]


@pytest.mark.parametrize("a", APPENDS, ids=lambda a: type(a.event).__name__)
async def test_the_bulk_frame_is_what_nats_py_sends_for_the_same_headers(
    a: jetstream.Append,
) -> None:
    log = jetstream.EventLog(NATS(), "prod", clock=lambda: T0)
    body, headers = log._prepare(a, T0)
    subject, block, frame_body = log._frame(a, T0, wire.ce_time(T0))
    assert (subject, frame_body) == (a.subject, body)
    # The block is the dictionary's headers in order, as NATS header lines.
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    assert block == f"NATS/1.0\r\n{lines}\r\n".encode()
    reply = "_INBOX.abc.17"
    expected = await _nats_py_frame(a.subject, reply, body, headers)
    hlen = len(block)
    ours = b"HPUB %s %s %d %d\r\n%s%s\r\n" % (
        subject.encode(),
        reply.encode(),
        hlen,
        hlen + len(body),
        block,
        body,
    )
    assert ours == expected


def test_acks_decode_into_sequence_or_error() -> None:
    ok = pipeline._decode_ack(b'{"stream":"S","seq":12,"duplicate":true}')
    assert (ok.seq, ok.duplicate, ok.error) == (12, True, None)
    bad = pipeline._decode_ack(
        b'{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 3"}}'
    )
    assert bad.error == pipeline.ApiError(400, 10071, "wrong last sequence: 3")
