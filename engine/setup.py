"""``mcsync setup``: one-shot steps that give each process of a clusterset its own credentials.

compose.yaml runs them before anything else, and anyone can run them by hand:

* :func:`nats_credentials` - a random password per NATS user, each in a file of its own (the
  directory of one user's file is what that user's processes mount), and the file of bcrypt
  hashes that a configuration rendered with :func:`engine.natsconfig.password_variable` logins
  includes (deploy/compose/nats.conf). A password that exists is kept, so a second run changes
  nothing a running process relies on.
* :func:`token_kubeconfigs` - a kubeconfig per ServiceAccount holding a token from the
  TokenRequest API, made with an administrator's kubeconfig that only this step reads.

Secrets go to files (mode 0600) and nowhere else: messages name files, never their contents.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import os
import secrets
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from engine import kube, natsconfig
from engine.core import subjects
from engine.core.errors import ConfigError

PASSWORD_FILE: Final = "password"
BCRYPT_ROUNDS: Final = 1 << 11
"""Cost 11, the usual one; nats-server checks a hash at each login only."""


# --- files ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Owner:
    """Who the written files belong to (the user the reading processes run as)."""

    uid: int
    gid: int

    @classmethod
    def parse(cls, text: str) -> Owner:
        uid, sep, gid = text.partition(":")
        if not (uid.isdigit() and (not sep or gid.isdigit())):
            raise ConfigError(f"owner {text!r}: give UID:GID in digits, e.g. 10001:10001")
        return cls(int(uid), int(gid or uid))


def _own(path: Path, owner: Owner | None) -> None:
    if owner is not None:
        os.chown(path, owner.uid, owner.gid)


def _mkdir(path: Path, owner: Owner | None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    _own(path, owner)


def write_secret(path: Path, text: str, owner: Owner | None = None) -> None:
    """Write ``text`` to ``path`` readable by its owner only, replacing it in one step.

    Raises:
        ConfigError: the directory is not writable (a fresh container volume belongs to
            root: run the step as root, with ``--owner`` for the readers).
    """
    try:
        _write(path, text, owner)
    except PermissionError as exc:
        raise ConfigError(
            f"cannot write {path}: {exc.strerror}; a fresh volume belongs to root: run this "
            "step as root with --owner UID:GID of the processes that read it"
        ) from None


def _write(path: Path, text: str, owner: Owner | None) -> None:
    _mkdir(path.parent, owner)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    _own(tmp, owner)
    os.replace(tmp, path)


# --- NATS passwords ------------------------------------------------------------------------


def bcrypt(password: str) -> str:
    """The bcrypt hash of ``password`` (libcrypt through Python's ``crypt``).

    Raises:
        ConfigError: this Python has no ``crypt`` module or its libcrypt no bcrypt.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.11 and 3.12 warn at import
        try:
            crypt: Any = importlib.import_module("crypt")
        except ImportError:
            crypt = None
    if crypt is None or crypt.METHOD_BLOWFISH not in crypt.methods:
        raise ConfigError(
            "this Python cannot make bcrypt hashes (the crypt module is gone in 3.13, or the "
            "system libcrypt lacks bcrypt): run `mcsync setup nats-credentials` with Python "
            "3.11 or 3.12, e.g. the mcsync image"
        )
    hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=BCRYPT_ROUNDS))
    if not isinstance(hashed, str) or not hashed.startswith("$2"):
        raise ConfigError("libcrypt did not return a bcrypt hash")
    return hashed


def _password(path: Path, owner: Owner | None) -> str:
    """The password in ``path``; a new random one written there if there is none."""
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    new = secrets.token_urlsafe(32)
    write_secret(path, new + "\n", owner)
    return new


def nats_credentials(
    out: Path, users: Sequence[str], hashes: Path, owner: Owner | None = None
) -> list[Path]:
    """A password per user in ``out/<user>/password``, their hashes in ``hashes``.

    ``hashes`` defines one config variable per user
    (:func:`engine.natsconfig.password_variable_name`), the file a configuration with
    ``password_variable`` logins includes. Existing passwords are kept; the hashes are
    written afresh every time (a new salt, the same passwords).

    Returns:
        The password files, in the order of ``users``.
    """
    if not users or len(set(users)) != len(users):
        raise ConfigError(f"give distinct NATS user names, got {list(users)}")
    lines = [
        "# bcrypt hashes of the NATS users' passwords, written by `mcsync setup nats-credentials`.",
        "# Each user's clear password is only in that user's own password file.",
    ]
    files = []
    for user in users:
        variable = natsconfig.password_variable_name(user)
        path = out / user / PASSWORD_FILE
        if path.resolve().parent == hashes.resolve().parent:
            raise ConfigError(
                f"the hashes ({hashes}) must not share a directory with {user}'s password: "
                "each directory is mounted by one reader"
            )
        lines.append(f'{variable}: "{bcrypt(_password(path, owner))}"')
        files.append(path)
    write_secret(hashes, "\n".join(lines) + "\n", owner)
    return files


# --- Kubernetes tokens ---------------------------------------------------------------------


def _current_cluster(config: dict[str, Any]) -> dict[str, Any]:
    contexts = {c["name"]: c["context"] for c in config.get("contexts") or []}
    clusters = {c["name"]: c["cluster"] for c in config.get("clusters") or []}
    current = config.get("current-context")
    if current not in contexts or contexts[current].get("cluster") not in clusters:
        raise ConfigError("the admin kubeconfig has no current context with a cluster")
    cluster: dict[str, Any] = clusters[contexts[current]["cluster"]]
    return cluster


def _ca_data(cluster: dict[str, Any], base: Path) -> str | None:
    """The cluster's CA as base64 PEM (the form a kubeconfig embeds), if it names one."""
    if cluster.get("certificate-authority-data"):
        return str(cluster["certificate-authority-data"])
    if cluster.get("certificate-authority"):
        ca = Path(cluster["certificate-authority"])
        return base64.b64encode((base / ca if not ca.is_absolute() else ca).read_bytes()).decode()
    return None


def kubeconfig(server: str, ca_data: str | None, cluster: str, user: str, token: str) -> str:
    """A kubeconfig with one context: ``user`` by bearer token at ``server``."""
    entry: dict[str, Any] = {"server": server}
    if ca_data:
        entry["certificate-authority-data"] = ca_data
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": entry}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": cluster, "user": user}}],
        "current-context": user,
    }
    return yaml.safe_dump(doc, sort_keys=False)


@dataclass(frozen=True, slots=True)
class TokenFor:
    """A ServiceAccount and where its kubeconfig goes."""

    service_account: str
    path: Path

    @classmethod
    def parse(cls, text: str) -> TokenFor:
        name, sep, path = text.partition("=")
        if not sep or not path or not subjects.is_dns_label(name):
            raise ConfigError(f"{text!r}: give SERVICEACCOUNT=PATH, e.g. mcsync-publisher=/out/pub")
        return cls(name, Path(path))


async def _token(
    k: kube.Kube, namespace: str, service_account: str, seconds: int, wait: float
) -> str:
    """A TokenRequest token; waits for the ServiceAccount (k3s applies manifests late)."""
    path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token"
    body = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": seconds},
    }
    deadline = time.monotonic() + wait
    while True:
        try:
            resp = await k.request("POST", path, body=body)
        except (kube.NotFound, kube.KubeTransientError) as exc:
            if time.monotonic() >= deadline:
                raise ConfigError(
                    f"no token for ServiceAccount {namespace}/{service_account} after {wait:.0f}s: "
                    f"{exc}"
                ) from None
            await asyncio.sleep(2.0)
            continue
        token = (resp.get("status") or {}).get("token")
        if not isinstance(token, str) or not token:
            raise ConfigError(f"the TokenRequest for {service_account} returned no token")
        return token


async def token_kubeconfigs(
    admin_kubeconfig: Path,
    namespace: str,
    wanted: Iterable[TokenFor],
    server: str | None = None,
    expiration_seconds: int = 3600,
    wait: float = 300.0,
    owner: Owner | None = None,
) -> list[Path]:
    """Write a kubeconfig per ServiceAccount, each with a token of that account alone.

    Args:
        admin_kubeconfig: may request tokens (``serviceaccounts/token create``); read here only.
        server: the API server URL the kubeconfigs (and this step) use; the admin
            kubeconfig's when omitted (k3s writes 127.0.0.1, which other containers cannot use).
    """
    if expiration_seconds < 600:
        raise ConfigError("--expiration-seconds: the API server's minimum is 600")
    config = yaml.safe_load(await asyncio.to_thread(admin_kubeconfig.read_text))
    if not isinstance(config, dict):
        raise ConfigError(f"{admin_kubeconfig} is not a kubeconfig")
    cluster = _current_cluster(config)
    server = server or str(cluster["server"])
    ca_data = _ca_data(cluster, admin_kubeconfig.parent)
    api = await kube.load_client(admin_kubeconfig)
    api.configuration.host = server
    written = []
    try:
        k = kube.Kube(api)
        for want in wanted:
            token = await _token(k, namespace, want.service_account, expiration_seconds, wait)
            text = kubeconfig(server, ca_data, "cluster", want.service_account, token)
            write_secret(want.path, text, owner)
            written.append(want.path)
    finally:
        await api.close()
    return written
