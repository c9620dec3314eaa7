"""NATS over TLS with a private CA and mutual TLS, against a real nats-server.

The CA, the server certificate (for 127.0.0.1) and the client certificate are made with openssl
for each test run. What a user sees is tested through the command line too: with the right files
``mcsync stream ensure`` works; without the CA it fails at once with a clear message instead of
retrying forever.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine import jetstream
from engine.core import subjects
from engine.core.errors import ConfigError
from engine.local.natsserver import NatsServer
from tests.integration.conftest import export_event

pytestmark = pytest.mark.integration


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ca(d: Path, name: str) -> tuple[Path, Path]:
    key, crt = d / f"{name}.key", d / f"{name}.crt"
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key), cwd=d)
    _openssl(
        "req", "-x509", "-new", "-key", str(key), "-days", "2", "-subj", f"/CN={name}",
        "-out", str(crt), cwd=d,
    )  # fmt: skip
    return crt, key


def _leaf(d: Path, name: str, ca: tuple[Path, Path], ext: str) -> tuple[Path, Path]:
    key, csr, crt, extfile = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.crt", d / "ext"
    extfile.write_text(ext)
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key), cwd=d)
    _openssl("req", "-new", "-key", str(key), "-subj", f"/CN={name}", "-out", str(csr), cwd=d)
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
        "-CAcreateserial", "-days", "2", "-extfile", str(extfile), "-out", str(crt), cwd=d,
    )  # fmt: skip
    return crt, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = _ca(d, "ca")
    other, _ = _ca(d, "other-ca")
    server = _leaf(d, "server", ca, "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    client = _leaf(d, "client", ca, "extendedKeyUsage=clientAuth\n")
    return Pki(ca[0], server[0], server[1], client[0], client[1], other)


@pytest.fixture(scope="module")
async def tls_server(pki: Pki) -> AsyncIterator[NatsServer]:
    tls = (
        "tls {\n"
        f'  cert_file: "{pki.server_cert}"\n'
        f'  key_file: "{pki.server_key}"\n'
        f'  ca_file: "{pki.ca}"\n'
        "  verify: true\n"
        "}\n"
    )
    server = NatsServer(extra_config=tls)
    async with server:
        yield server


def tls_url(server: NatsServer) -> str:
    return f"tls://127.0.0.1:{server.port}"


async def test_mutual_tls_with_a_private_ca_carries_the_log(
    pki: Pki, tls_server: NatsServer
) -> None:
    tls = jetstream.Tls(pki.ca, pki.client_cert, pki.client_key)
    nc = await jetstream.connect(tls_url(tls_server), tls=tls)
    try:
        log = jetstream.EventLog(nc, "tlsset")
        await log.ensure()
        s = subjects.export("tlsset", "a", "ns", "web")
        seq = await log.append(jetstream.Append(s, export_event("a"), 0))
        got = await log.read_last(s)
        assert got is not None and got.seq == seq
    finally:
        await nc.close()


@pytest.mark.parametrize(
    "which",
    ["no CA (system roots)", "another CA", "no client certificate"],
)
async def test_a_tls_mistake_fails_at_once_with_a_clear_error(
    pki: Pki, tls_server: NatsServer, which: str
) -> None:
    tls = {
        "no CA (system roots)": jetstream.Tls(None, pki.client_cert, pki.client_key),
        "another CA": jetstream.Tls(pki.other_ca, pki.client_cert, pki.client_key),
        "no client certificate": jetstream.Tls(pki.ca),
    }[which]
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match="TLS with NATS failed"):
        async with asyncio.timeout(30):
            await jetstream.connect(tls_url(tls_server), tls=tls)
    assert time.monotonic() - t0 < 15


def test_a_half_given_client_certificate_is_a_configuration_error(pki: Pki) -> None:
    with pytest.raises(ConfigError, match="both"):
        jetstream.Tls(pki.ca, pki.client_cert, None).context()


def _stream_ensure(server: NatsServer, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", "stream", "ensure", "--nats-url", tls_url(server),
         "--clusterset", "tlscli", *extra],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


async def test_stream_ensure_takes_the_tls_files(pki: Pki, tls_server: NatsServer) -> None:
    ok = await asyncio.to_thread(
        _stream_ensure,
        tls_server,
        "--nats-ca-file", str(pki.ca),
        "--nats-cert-file", str(pki.client_cert),
        "--nats-key-file", str(pki.client_key),
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "MCSYNC_TLSCLI" in ok.stderr + ok.stdout

    bad = await asyncio.to_thread(_stream_ensure, tls_server)
    assert bad.returncode == 2, bad.stderr
    assert "--nats-ca-file" in bad.stderr
