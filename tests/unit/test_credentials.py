"""``mcsync credentials``, the exec credential plugin for ClusterProfile consumers: which file it
reads for which member, what it prints, and that a token never leaks into an error."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from engine import credentials
from engine.core.errors import ConfigError

V1 = "client.authentication.k8s.io/v1"
V1BETA1 = "client.authentication.k8s.io/v1beta1"


def exec_info(cluster_name: str | None = "east-1", api_version: str = V1) -> dict[str, str]:
    """The environment client-go gives a plugin run with provideClusterInfo: true."""
    cluster: dict[str, object] = {"server": "https://10.0.0.1:6443"}
    if cluster_name is not None:
        cluster["config"] = {"clusterName": cluster_name}
    info = {
        "apiVersion": api_version,
        "kind": "ExecCredential",
        "spec": {"interactive": False, "cluster": cluster},
    }
    return {"KUBERNETES_EXEC_INFO": json.dumps(info)}


def run(
    environ: dict[str, str], token_file: Path | None = None, token_dir: Path | None = None
) -> dict[str, object]:
    out = io.StringIO()
    credentials.run(token_file, token_dir, environ, out)
    text = out.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1
    printed: dict[str, object] = json.loads(text)
    return printed


@pytest.fixture
def tokens(tmp_path: Path) -> Path:
    d = tmp_path / "tokens"
    d.mkdir()
    (d / "east-1").write_text("token-of-east\n")
    (d / "west-2").write_text("token-of-west")
    return d


def test_the_token_of_the_member_the_profile_names_is_printed(tokens: Path) -> None:
    assert run(exec_info("east-1"), token_dir=tokens) == {
        "apiVersion": V1,
        "kind": "ExecCredential",
        "status": {"token": "token-of-east"},
    }
    assert run(exec_info("west-2"), token_dir=tokens)["status"] == {"token": "token-of-west"}


def test_the_answer_is_in_the_api_version_the_client_asked_for(tokens: Path) -> None:
    assert run(exec_info(api_version=V1BETA1), token_dir=tokens)["apiVersion"] == V1BETA1
    assert run(exec_info(api_version="example/v9"), token_dir=tokens)["apiVersion"] == V1


def test_one_token_file_serves_every_member(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("shared\n")
    assert run(exec_info("east-1"), token_file=f)["status"] == {"token": "shared"}
    assert run({}, token_file=f)["status"] == {"token": "shared"}


def test_without_cluster_info_a_token_dir_cannot_choose_and_says_what_to_set(
    tokens: Path,
) -> None:
    with pytest.raises(ConfigError, match="provideClusterInfo: true"):
        run(exec_info(None), token_dir=tokens)
    with pytest.raises(ConfigError, match="provideClusterInfo: true"):
        run({}, token_dir=tokens)


def test_no_token_source_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="--token-dir"):
        run(exec_info())


@pytest.mark.parametrize("name", ["../east-1", "/etc/passwd", "east-1/../../x", ".", "", "E"])
def test_a_cluster_name_that_is_not_a_cluster_id_never_becomes_a_path(
    tokens: Path, name: str
) -> None:
    with pytest.raises(ConfigError, match="not a cluster id"):
        run(exec_info(name), token_dir=tokens)


def test_a_member_without_a_token_file_is_an_error_naming_the_file(tokens: Path) -> None:
    with pytest.raises(ConfigError, match="north-3") as excinfo:
        run(exec_info("north-3"), token_dir=tokens)
    assert "token-of" not in str(excinfo.value)


@pytest.mark.parametrize("content", [b"", b"\n  \n", b"two tokens\n", b"\xff\xfe"])
def test_a_file_that_does_not_hold_one_token_is_refused_without_echoing_it(
    tmp_path: Path, content: bytes
) -> None:
    f = tmp_path / "token"
    f.write_bytes(content)
    with pytest.raises(ConfigError) as excinfo:
        run({}, token_file=f)
    assert "two" not in str(excinfo.value) and "tokens\n" not in str(excinfo.value)
    assert str(f) in str(excinfo.value)


def test_a_huge_file_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_bytes(b"x" * (credentials.MAX_TOKEN_BYTES + 1))
    with pytest.raises(ConfigError, match="larger than"):
        run({}, token_file=f)


def test_exec_info_that_is_not_json_is_an_error(tokens: Path) -> None:
    with pytest.raises(ConfigError, match="KUBERNETES_EXEC_INFO"):
        run({"KUBERNETES_EXEC_INFO": "{nope"}, token_dir=tokens)
    with pytest.raises(ConfigError, match="KUBERNETES_EXEC_INFO"):
        run({"KUBERNETES_EXEC_INFO": "[1]"}, token_dir=tokens)


def test_the_token_is_read_again_at_every_call(tokens: Path) -> None:
    assert run(exec_info(), token_dir=tokens)["status"] == {"token": "token-of-east"}
    (tokens / "east-1").write_text("rotated")
    assert run(exec_info(), token_dir=tokens)["status"] == {"token": "rotated"}
