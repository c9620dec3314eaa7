"""compose.yaml runs mcsync as production does: a NATS user per cluster, ServiceAccount tokens.

No container runtime here: compose.yaml is parsed and its wiring checked. Who mounts which
volume decides who holds which credential, so the tests follow every credential from the
one-shot step that writes it to the processes that read it; the NATS config is what
engine.natsconfig renders, and each cluster's user there may publish only its own subjects.
tests/integration/test_compose_steps.py runs the same steps against real servers.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
import shutil
import subprocess
import warnings
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from engine import natsconfig, setup
from engine.core.errors import ConfigError
from tests.unit.test_deploy import BASE, DEPLOY, ROOT, Obj, compose

CLUSTERS = natsconfig.COMPOSE_CLUSTERS
CLUSTERSET = natsconfig.COMPOSE_CLUSTERSET
COMPONENTS = ("publisher", "subscriber")
MANIFESTS = PurePosixPath("/var/lib/rancher/k3s/server/manifests")
NATS_CONF = DEPLOY / "compose" / "nats.conf"


# --- reading compose.yaml (shared with the integration test) ---------------------------------


def mounts(svc: Obj) -> dict[PurePosixPath, str]:
    """Container path -> source (a named volume, or a path relative to the repository)."""
    found = {}
    for volume in svc.get("volumes") or []:
        source, target, *_ = volume.split(":")
        found[PurePosixPath(target)] = source
    return found


def locate(svc: Obj, path: str) -> tuple[str, PurePosixPath]:
    """The source that holds a container path, and the path inside it."""
    p = PurePosixPath(path)
    for target, source in sorted(mounts(svc).items(), key=lambda m: -len(m[0].parts)):
        if p == target or target in p.parents:
            return source, p.relative_to(target)
    raise AssertionError(f"{path} is on no mount of {svc.get('command')}")


def flag(command: list[str], name: str) -> str:
    """The value of ``--name=value`` in a command."""
    (value,) = [a.split("=", 1)[1] for a in command if a.startswith(f"--{name}=")]
    return value


def readers(services: dict[str, Obj]) -> dict[str, set[str]]:
    """Named volume -> the services that mount it."""
    found: dict[str, set[str]] = {}
    for name, svc in services.items():
        for source in mounts(svc).values():
            if not source.startswith("."):
                found.setdefault(source, set()).add(name)
    return found


def mcsync_processes() -> list[tuple[str, str, str]]:
    return [(f"{comp}-{c}", c, comp) for c in CLUSTERS for comp in COMPONENTS]


# --- the NATS configuration --------------------------------------------------------------------


def test_the_compose_nats_config_is_what_natsconfig_renders() -> None:
    assert NATS_CONF.read_text() == natsconfig.compose_config(), (
        "deploy/compose/nats.conf is stale: write natsconfig.compose_config() to it"
    )


def test_the_compose_nats_config_holds_no_password_and_includes_the_generated_hashes() -> None:
    text = NATS_CONF.read_text()
    passwords = re.findall(r"(?m)^\s*password: (.*)$", text)
    users = ["admin", *CLUSTERS]
    assert passwords == [f"${natsconfig.password_variable_name(u)}" for u in users]
    assert "$2" not in text  # no bcrypt hash either
    services = compose()["services"]
    nats = services["nats"]
    (conf_target,) = [t for t, s in mounts(nats).items() if s == "./deploy/compose/nats.conf"]
    assert nats["command"] == ["--config", str(conf_target)]
    (include,) = re.findall(r'(?m)^include "(.+)"$', text)
    included = locate(nats, str(conf_target.parent / include))
    # ... is the file the credentials step writes, on the same volume.
    step = services["credentials"]
    assert locate(step, flag(step["command"], "hashes")) == included
    assert flag(step["command"], "users").split(",") == users


def _account_block(text: str, account: str) -> str:
    m = re.search(rf"(?ms)^  {account}: \{{\n(.*?)^  \}}$", text)
    assert m, account
    return m.group(1)


def _list(block: str, side: str, kind: str) -> list[str]:
    m = re.search(rf"(?ms){side}: \{{\s*\n(.*?)^\s*\}}", block)
    assert m, side
    inner = re.search(rf"(?ms){kind}: \[\n(.*?)^\s*\]", m.group(1))
    return re.findall(r'"([^"]+)",', inner.group(1)) if inner else []


def test_each_cluster_user_may_publish_only_its_own_subjects() -> None:
    text = NATS_CONF.read_text()
    log = natsconfig.stream(CLUSTERSET)
    for c in CLUSTERS:
        block = _account_block(text, natsconfig.cluster_account(c))
        assert re.findall(r'user: "([^"]+)"', block) == [c]
        mirror = natsconfig.mirror_stream(CLUSTERSET, c)
        allowed = _list(block, "publish", "allow")
        assert allowed
        for subject in allowed:
            own = subject.startswith(f"mcsync.{CLUSTERSET}.{c}.") or subject == (
                natsconfig.dead_letter_subject(CLUSTERSET, c)
            )
            own_mirror = subject.startswith(("$JS.API.", "$JS.FC.")) and (
                subject.split(".")[4 if subject.startswith("$JS.API.") else 2] == mirror
            )
            assert own or own_mirror, (c, subject)
        denied = _list(block, "publish", "deny")
        assert {f"$JS.API.STREAM.{op}.>" for op in ("DELETE", "PURGE")} <= set(denied)
        assert _list(block, "subscribe", "allow") == ["_INBOX.>"]
        # What the account imports from the log's account: its own subjects, and what its
        # mirror needs of the log (consumer creation, flow control), nothing of the others.
        imported = re.findall(r'subject: "([^"]+)"', block)
        for subject in imported:
            others = [o for o in CLUSTERS if o != c]
            assert not any(f".{o}" in subject for o in others), (c, subject)
            assert f".{c}" in subject or log in subject, (c, subject)
    # The log's account exports each cluster's subjects to that cluster's account alone.
    exports = re.findall(
        r'\{ (?:service|stream): "([^"]+)", accounts: \[([^\]]+)\] \}',
        _account_block(text, natsconfig.ACCOUNT),
    )
    for subject, accounts in exports:
        names = re.findall(r'"([^"]+)"', accounts)
        for c in CLUSTERS:
            if f".{CLUSTERSET}.{c}" in subject:
                assert names == [natsconfig.cluster_account(c)], subject


# --- who holds which credential ----------------------------------------------------------------


def test_the_admin_kubeconfig_reaches_no_mcsync_process() -> None:
    services = compose()["services"]
    who = readers(services)
    for c in CLUSTERS:
        assert who[f"k3s-{c}-output"] == {f"k3s-{c}", f"kubeconfigs-{c}"}
    for name, _, _ in mcsync_processes():
        assert not any("k3s" in source for source in mounts(services[name]).values()), name
        assert "KUBECONFIG" not in (services[name].get("environment") or {})


def test_each_process_mounts_only_its_own_credentials() -> None:
    services = compose()["services"]
    who = readers(services)
    assert who["nats-auth"] == {"credentials", "nats"}
    assert who["nats-admin"] == {"credentials", "stream"}
    for c in CLUSTERS:
        assert who[f"nats-{c}"] == {"credentials", f"publisher-{c}", f"subscriber-{c}"}
        for comp in COMPONENTS:
            assert who[f"kube-{c}-{comp}"] == {f"kubeconfigs-{c}", f"{comp}-{c}"}
    for name, c, comp in mcsync_processes():
        svc = services[name]
        assert set(mounts(svc).values()) == {f"kube-{c}-{comp}", f"nats-{c}"}, name
        assert all(v.endswith(":ro") for v in svc["volumes"]), name
        assert "user" not in svc, name  # the image's user, not root
        env = svc["environment"]
        assert env["MCSYNC_NATS_USER"] == c
        assert env["MCSYNC_LOG_LAYOUT"] == "mirror"  # what the hub's accounts are laid out for
        assert env["MCSYNC_CLUSTERSET"] == CLUSTERSET
        assert svc["command"][0] == comp
        assert "--no-create-stream" in svc["command"]  # the admin provisions the log


def test_each_process_reads_what_its_one_shot_step_wrote() -> None:
    services = compose()["services"]
    creds = services["credentials"]["command"]
    out = flag(creds, "out")
    for name, c, comp in mcsync_processes():
        svc = services[name]
        deps = svc["depends_on"]
        # NATS: the cluster's password, written by the credentials step.
        written = locate(services["credentials"], f"{out}/{c}/password")
        assert locate(svc, svc["environment"]["MCSYNC_NATS_PASSWORD_FILE"]) == written
        # Kubernetes: the component's token kubeconfig, written by kubeconfigs-<cluster>.
        step = services[f"kubeconfigs-{c}"]
        targets = dict(a.split("=", 1) for a in step["command"] if a.startswith("mcsync-"))
        written = locate(step, targets[f"mcsync-{comp}"])
        assert locate(svc, flag(svc["command"], "kubeconfig")) == written
        assert deps[f"kubeconfigs-{c}"]["condition"] == "service_completed_successfully"
        assert deps["stream"]["condition"] == "service_completed_successfully"
    stream = services["stream"]
    assert stream["command"][:2] == ["stream", "ensure"]
    assert stream["environment"]["MCSYNC_NATS_USER"] == "admin"
    assert locate(stream, stream["environment"]["MCSYNC_NATS_PASSWORD_FILE"]) == locate(
        services["credentials"], f"{out}/admin/password"
    )
    assert services["nats"]["depends_on"]["credentials"]["condition"] == (
        "service_completed_successfully"
    )


def test_k3s_applies_the_serviceaccounts_and_rbac_of_the_kustomize_base() -> None:
    services = compose()["services"]
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    # Everything of the base but the Deployments (compose runs the processes itself).
    wanted = {
        r
        for r in kustomization["resources"]
        if all(d.get("kind") != "Deployment" for d in yaml.safe_load_all((BASE / r).read_text()))
    }
    assert {"serviceaccounts.yaml", "rbac-publisher.yaml", "rbac-subscriber.yaml"} <= wanted
    accounts = {
        (d["metadata"]["namespace"], d["metadata"]["name"])
        for d in yaml.safe_load_all((BASE / "serviceaccounts.yaml").read_text())
    }
    for c in CLUSTERS:
        applied = {
            PurePosixPath(s).name
            for t, s in mounts(services[f"k3s-{c}"]).items()
            if t.parent == MANIFESTS and s.startswith("./deploy/kustomize/base/")
        }
        assert applied == wanted, c
        step = services[f"kubeconfigs-{c}"]["command"]
        ns = flag(step, "namespace")
        for comp in COMPONENTS:
            assert (ns, f"mcsync-{comp}") in accounts
        assert flag(step, "server") == f"https://k3s-{c}:6443"
        assert f"--tls-san=k3s-{c}" in services[f"k3s-{c}"]["command"]


def test_docker_compose_accepts_the_file() -> None:
    """`docker compose config` parses and resolves compose.yaml; without the compose plugin,
    Debian's docker-compose 1.29 does, given the project name by -p (it predates the top-level
    ``name`` of the Compose specification, the only part of the file it does not know)."""
    text = (ROOT / "compose.yaml").read_text()
    if shutil.which("docker") and _works(["docker", "compose", "version"]):
        command, stdin = ["docker", "compose", "-f", "-", "config", "-q"], text
    elif shutil.which("docker-compose") and _works(["docker-compose", "version"]):
        (name,) = re.findall(r"(?m)^name: (\S+)$", text)
        stdin = re.sub(r"(?m)^name: \S+\n", "", text)
        command = ["docker-compose", "-p", name, "-f", "-", "config", "-q"]
    else:  # ./dev test installs Debian's docker-compose: missing, it is a failure
        pytest.fail("neither the docker compose plugin nor docker-compose is installed")
    done = subprocess.run(
        command, input=stdin, capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr


def _works(command: list[str]) -> bool:
    return subprocess.run(command, capture_output=True, check=False).returncode == 0


# --- the one-shot steps' own rules (engine/setup.py) -------------------------------------------


def test_nats_credentials_keep_passwords_and_write_matching_hashes(tmp_path: Path) -> None:
    hashes = tmp_path / "nats" / "passwords.conf"
    files = setup.nats_credentials(tmp_path, ["admin", "east"], hashes)
    assert files == [tmp_path / "admin" / "password", tmp_path / "east" / "password"]
    first = [f.read_text() for f in files]
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in [*files, hashes])
    assert len(set(first)) == 2 and all(len(p.strip()) >= 40 for p in first)
    # A second run (the next `docker compose up`) keeps the passwords ...
    setup.nats_credentials(tmp_path, ["admin", "east"], hashes)
    assert [f.read_text() for f in files] == first
    # ... and writes one hash per user that matches that user's password.
    defined = dict(re.findall(r'(?m)^(MCSYNC_PASSWORD_\w+): "([^"]+)"$', hashes.read_text()))
    assert set(defined) == {"MCSYNC_PASSWORD_ADMIN", "MCSYNC_PASSWORD_EAST"}
    for user, password in zip(("ADMIN", "EAST"), first, strict=True):
        hashed = defined[f"MCSYNC_PASSWORD_{user}"]
        assert hashed.startswith("$2b$11$")
        assert natsconfig.bcrypt_password(hashed)  # the form the renderer accepts
        assert _crypt().crypt(password.strip(), hashed) == hashed
        assert password.strip() not in hashes.read_text()


def _crypt() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return importlib.import_module("crypt")


def test_nats_credentials_refuse_what_would_mix_readers(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must not share a directory"):
        setup.nats_credentials(tmp_path, ["nats"], tmp_path / "nats" / "passwords.conf")
    with pytest.raises(ConfigError, match="distinct"):
        setup.nats_credentials(tmp_path, ["east", "east"], tmp_path / "h" / "passwords.conf")
    with pytest.raises(ValueError, match="user name"):
        setup.nats_credentials(tmp_path, ["a b"], tmp_path / "h" / "passwords.conf")


def test_a_directory_it_may_not_write_is_a_clear_error(tmp_path: Path) -> None:
    locked = tmp_path / "volume"
    locked.mkdir()
    locked.chmod(0o555)  # like a fresh volume: not the step's user's to write
    tmp_path.chmod(0o755)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: as nobody when the test runs as root (root writes anywhere)
        status = 1
        try:
            os.close(read)
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            setup.write_secret(locked / "east" / "password", "x")
        except ConfigError as exc:
            os.write(write, str(exc).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write)
    with os.fdopen(read) as f:
        message = f.read()
    assert os.waitpid(pid, 0)[1] == 0, "no ConfigError"
    assert "Permission denied" in message
    assert "run this step as root with --owner" in message


def test_setup_arguments_are_checked() -> None:
    assert setup.Owner.parse("10001:10001") == setup.Owner(10001, 10001)
    assert setup.Owner.parse("10001") == setup.Owner(10001, 10001)
    with pytest.raises(ConfigError):
        setup.Owner.parse("mcsync")
    want = setup.TokenFor.parse("mcsync-publisher=/out/publisher/kubeconfig")
    assert want == setup.TokenFor("mcsync-publisher", Path("/out/publisher/kubeconfig"))
    for bad in ("mcsync-publisher", "Bad_Name=/x", "=/x", "mcsync-publisher="):
        with pytest.raises(ConfigError):
            setup.TokenFor.parse(bad)


def test_a_token_kubeconfig_holds_one_user_by_token_and_the_servers_ca() -> None:
    doc = yaml.safe_load(setup.kubeconfig("https://k3s-east:6443", "Q0E=", "east", "sa", "tok"))
    assert doc["clusters"] == [
        {"name": "east", "cluster": {"server": "https://k3s-east:6443",
                                      "certificate-authority-data": "Q0E="}}
    ]  # fmt: skip
    assert doc["users"] == [{"name": "sa", "user": {"token": "tok"}}]
    assert doc["contexts"][0]["context"] == {"cluster": "east", "user": "sa"}


def test_password_variables_and_includes_render_and_refuse_what_would_break_the_file() -> None:
    login = natsconfig.password_variable("MCSYNC_PASSWORD_EAST")
    assert (
        "password: $MCSYNC_PASSWORD_EAST"
        in natsconfig.render_user(natsconfig.admin_user("x", login))[2]
    )
    for bad in ("lower", "A B", "$X", "A\nB"):
        with pytest.raises(ValueError):
            natsconfig.password_variable(bad)
    hub = dataclasses.replace(natsconfig.compose_hub(), includes=('a"b',))
    with pytest.raises(ValueError, match="include path"):
        natsconfig.render_hub(hub)
