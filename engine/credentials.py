"""``mcsync credentials``: an exec credential plugin for whoever consumes mcsync's ClusterProfiles.

A ClusterProfile never holds a secret (KEP-4322): it says where a member's API server is and
which kind of credential to use, and the consumer runs an exec credential plugin (KEP-541) for
the credential itself. multicluster-runtime's cluster-inventory-api provider (like Kueue and Argo
CD) does it through cluster-inventory-api's ``pkg/access``: it takes the first provider name of
its own configuration that the profile lists in ``status.accessProviders``, and runs that
provider's command with ``KUBERNETES_EXEC_INFO`` in its environment. With
``provideClusterInfo: true`` that ExecCredential's ``spec.cluster.config`` is the profile's
``client.authentication.k8s.io/exec`` extension, where mcsync writes
``{"clusterName": "<cluster id>"}``.

This plugin answers with a bearer token read from a file: with ``--token-dir``, the file named
after that cluster id (a Secret with one key per member, mounted as a directory, is exactly
that); with ``--token-file``, one file for every member. The file is read at every call, so a
rotated token is used from the next call on. The token goes to stdout in the ExecCredential and
nowhere else: errors name files, never their contents.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, TextIO

from engine.core import subjects
from engine.core.errors import ConfigError

EXEC_INFO_ENV: Final = "KUBERNETES_EXEC_INFO"
API_VERSIONS: Final = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
MAX_TOKEN_BYTES: Final = 64 * 1024


def exec_info(environ: Mapping[str, str]) -> dict[str, Any]:
    """The ExecCredential the client passed in ``KUBERNETES_EXEC_INFO``, or ``{}``."""
    raw = environ.get(EXEC_INFO_ENV)
    if not raw:
        return {}
    try:
        info = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"{EXEC_INFO_ENV} is not JSON: {exc}") from None
    if not isinstance(info, dict):
        raise ConfigError(f"{EXEC_INFO_ENV} is not an ExecCredential object")
    return info


def cluster_name(info: Mapping[str, Any]) -> str | None:
    """The ``clusterName`` the profile's exec extension names, if the client passed it."""
    spec = info.get("spec")
    cluster = spec.get("cluster") if isinstance(spec, dict) else None
    config = cluster.get("config") if isinstance(cluster, dict) else None
    name = config.get("clusterName") if isinstance(config, dict) else None
    return name if isinstance(name, str) else None


def token_path(info: Mapping[str, Any], token_file: Path | None, token_dir: Path | None) -> Path:
    """Which file holds the token for this call."""
    name = cluster_name(info)
    if token_dir is not None and name is not None:
        # The name comes from a ClusterProfile: a DNS label, never a path.
        if not subjects.is_dns_label(name):
            raise ConfigError(f"clusterName {name[:80]!r} is not a cluster id (a DNS label)")
        return token_dir / name
    if token_file is not None:
        return token_file
    if token_dir is not None:
        raise ConfigError(
            "no clusterName in the ExecCredential's spec.cluster.config: set "
            "provideClusterInfo: true in the exec configuration, and read a profile whose "
            "access provider has the client.authentication.k8s.io/exec extension"
        )
    raise ConfigError("give --token-dir (one file per cluster id) or --token-file")


def read_token(path: Path) -> str:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_TOKEN_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the token file {str(path)!r}: {exc.strerror}") from None
    if len(data) > MAX_TOKEN_BYTES:
        raise ConfigError(f"the token file {str(path)!r} is larger than {MAX_TOKEN_BYTES} bytes")
    try:
        token = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"the token file {str(path)!r} is not ASCII text") from None
    if not token or any(c.isspace() for c in token):
        raise ConfigError(f"the token file {str(path)!r} does not hold one token")
    return token


def credential(info: Mapping[str, Any], token: str) -> dict[str, Any]:
    """The ExecCredential to print, in the API version the client asked for."""
    asked = info.get("apiVersion")
    api_version = asked if asked in API_VERSIONS else API_VERSIONS[0]
    return {"apiVersion": api_version, "kind": "ExecCredential", "status": {"token": token}}


def run(
    token_file: Path | None,
    token_dir: Path | None,
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
) -> None:
    """Print the ExecCredential for the cluster this call is about.

    Raises:
        ConfigError: no token for it (the message names the file, never a token).
    """
    info = exec_info(os.environ if environ is None else environ)
    token = read_token(token_path(info, token_file, token_dir))
    text = json.dumps(credential(info, token), separators=(",", ":"))
    if out is None:
        print(text, flush=True)
    else:
        out.write(text + "\n")
