"""compose.yaml's one-shot steps, run outside docker against real servers.

There is no container runtime here, so the stack itself cannot start; what can go wrong in it
(credentials, token kubeconfigs, RBAC, NATS permissions) is exercised anyway. Each named volume
of compose.yaml becomes a directory; every step runs the command compose.yaml gives it, as the
``mcsync`` command, with its container paths mapped onto those directories. k3s is replaced by two
of the session's kube-apiservers (east = cluster-1, west = cluster-2): its admin kubeconfig goes
where k3s writes it, and what compose.yaml mounts into k3s's manifests folder (the cluster's
identity, and the ServiceAccounts, RBAC and admission policy of deploy/kustomize/base) is
applied to them; the CRDs are there already. The NATS server is a real nats-server running
deploy/compose/nats.conf, which includes the hashes the credentials step wrote. Then each
cluster's publisher and subscriber run with exactly the credentials their compose services
mount, and an export travels each way with no request refused by the API server or by NATS.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath

import pytest
import structlog.testing
import yaml

from engine import identity, kube, natsconfig, runner
from engine.local.natsserver import NatsServer
from tests.conftest import ClusterSet
from tests.integration.conftest import eventually, get_import, service, service_export
from tests.integration.test_inventory import FAST
from tests.integration.test_rbac import KINDS
from tests.unit.test_compose import MANIFESTS, mounts
from tests.unit.test_deploy import ROOT, compose

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_namespaces")]

K3S = {"east": "cluster-1", "west": "cluster-2"}
NATS_CONF = ROOT / "deploy" / "compose" / "nats.conf"


@dataclasses.dataclass
class Volumes:
    """compose.yaml's named volumes as directories, and each container's view of them.

    A service's container is a directory whose mount points are symbolic links to the volume
    directories (and to the repository's files for bind mounts), so that any of its container
    paths, mount point or not, maps to a host path.
    """

    root: Path

    def container(self, name: str) -> Path:
        top = self.root / "containers" / name
        for target, source in mounts(compose()["services"][name]).items():
            link = top / target.relative_to("/")
            if link.is_symlink():
                continue
            if source.startswith("."):
                real = ROOT / source
            else:
                real = self.root / "volumes" / source
                real.mkdir(parents=True, exist_ok=True)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(real)
        return top

    def volume(self, name: str) -> Path:
        return self.root / "volumes" / name

    def path(self, name: str, container_path: str) -> Path:
        return self.container(name) / PurePosixPath(container_path).relative_to("/")

    def command(self, name: str, replace: dict[str, str]) -> list[str]:
        """The service's command with its container paths mapped and ``replace`` applied."""
        args = []
        for given in compose()["services"][name]["command"]:
            arg = replace.get(given, given)
            if arg.startswith("--owner=") and os.geteuid() != 0:
                continue  # only root may give files away
            head, sep, value = arg.rpartition("=")
            mapped = sep and value.startswith("/")
            args.append(f"{head}={self.path(name, value)}" if mapped else arg)
        return args


def mcsync(args: list[str], env: dict[str, str] | None = None) -> str:
    """Run ``mcsync`` as the image's entrypoint would; its output, for the failure message."""
    done = subprocess.run(
        [sys.executable, "-m", "engine", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout + done.stderr


@dataclasses.dataclass
class ComposeNats(NatsServer):
    """nats-server running deploy/compose/nats.conf; only its addresses and store are moved."""

    auth_dir: Path | None = None

    def _config(self) -> str:
        assert self.store_dir is not None and self.auth_dir is not None
        text = NATS_CONF.read_text()
        for old, new in (
            ('listen: "0.0.0.0:4222"', f'listen: "127.0.0.1:{self.port}"'),
            ('http: "0.0.0.0:8222"', f'http: "127.0.0.1:{self._monitor_port}"'),
            ('store_dir: "/data/jetstream"', f'store_dir: "{self.store_dir / "js"}"'),
        ):
            assert text.count(old) == 1, old
            text = text.replace(old, new)
        # The include is relative to the config (written into the store directory): put the
        # credentials step's hash volume where compose.yaml mounts it next to the config.
        (include,) = [ln.split('"')[1] for ln in text.splitlines() if ln.startswith("include ")]
        link = self.store_dir / Path(include).parent
        if not link.exists():
            link.symlink_to(self.auth_dir, target_is_directory=True)
        return text


@pytest.fixture
async def nats_with_steps(tmp_path: Path) -> AsyncIterator[tuple[ComposeNats, Volumes]]:
    """The credentials step, the NATS server on its hashes, and the stream step as admin."""
    volumes = Volumes(tmp_path)
    mcsync(volumes.command("credentials", {}))
    # compose.yaml mounts the config and the hash volume side by side in the nats container;
    # the server here reads its config from its store directory, so the same sits there.
    nats = volumes.container("nats")
    server = ComposeNats(
        store_dir=tmp_path / "nats",
        name="compose-nats",
        auth_dir=(nats / "etc/nats" / natsconfig.COMPOSE_INCLUDE).resolve().parent,
    )
    async with server:
        stream = compose()["services"]["stream"]
        env = dict(stream["environment"])
        env["MCSYNC_NATS_URL"] = server.url
        env["MCSYNC_NATS_PASSWORD_FILE"] = str(
            volumes.path("stream", env["MCSYNC_NATS_PASSWORD_FILE"])
        )
        out = mcsync(stream["command"], env)
        assert natsconfig.stream(natsconfig.COMPOSE_CLUSTERSET) in out
        yield server, volumes


async def k3s_steps(cs: ClusterSet, volumes: Volumes, cluster: str) -> None:
    """What k3s-<cluster> and kubeconfigs-<cluster> do, on a real kube-apiserver."""
    services = compose()["services"]
    handle = cs[K3S[cluster]]
    k3s = services[f"k3s-{cluster}"]
    # k3s applies its manifests folder: the cluster's identity, the ServiceAccounts, RBAC and
    # admission policy (the CRDs are installed on the session's apiservers already).
    kinds = {
        **KINDS,
        "Namespace": kube.NAMESPACES,
        "ClusterProperty": kube.CLUSTER_PROPERTIES,
    }
    for target, source in mounts(k3s).items():
        if target.parent == MANIFESTS and not source.startswith("./deploy/crds/"):
            for doc in yaml.safe_load_all((ROOT / source).read_text()):
                if doc:
                    await handle.kube.apply(kinds[doc["kind"]], doc)
    # k3s writes its admin kubeconfig into its output volume ...
    admin = volumes.path(f"k3s-{cluster}", k3s["environment"]["K3S_KUBECONFIG_OUTPUT"])
    shutil.copyfile(handle.kubeconfig, admin)
    # ... which the kubeconfigs step alone reads.
    server = f"--server=https://k3s-{cluster}:6443"
    mcsync(volumes.command(f"kubeconfigs-{cluster}", {server: f"--server={handle.cluster.server}"}))


def member(
    cs: ClusterSet, server: NatsServer, volumes: Volumes, cluster: str, component: str
) -> runner.Member:
    """The member of compose service <component>-<cluster>, with its mounted credentials."""
    name = f"{component}-{cluster}"
    svc = compose()["services"][name]
    env = svc["environment"]
    (kubeconfig,) = [a.split("=", 1)[1] for a in svc["command"] if a.startswith("--kubeconfig=")]
    password = volumes.path(name, env["MCSYNC_NATS_PASSWORD_FILE"]).read_text().strip()
    return runner.Member(
        cluster=cluster,
        clusterset=env["MCSYNC_CLUSTERSET"],
        kubeconfig=volumes.path(name, kubeconfig),
        nats_url=server.url,
        nats_user=env["MCSYNC_NATS_USER"],
        nats_password=password,
        log_layout=env["MCSYNC_LOG_LAYOUT"],
        create_stream="--no-create-stream" not in svc["command"],
        publish=component == "publisher",
        subscribe=component == "subscriber",
        **FAST,  # type: ignore[arg-type]
    )


async def test_the_compose_steps_give_each_process_credentials_that_work_and_suffice(
    clusterset: ClusterSet, namespace: str, nats_with_steps: tuple[ComposeNats, Volumes]
) -> None:
    cs = clusterset
    server, volumes = nats_with_steps
    # The clusters' identities are the test's for its duration (put back afterwards).
    before = {
        (c, name): await cs[c].kube.get(kube.CLUSTER_PROPERTIES, None, name)
        for c in K3S.values()
        for name in (identity.CLUSTER_ID_PROPERTY, identity.CLUSTERSET_PROPERTY)
    }
    for cluster in K3S:
        await k3s_steps(cs, volumes, cluster)
    # Each token kubeconfig is a ServiceAccount's, never the admin's.
    for cluster in K3S:
        for component in ("publisher", "subscriber"):
            path = volumes.volume(f"kube-{cluster}-{component}") / "kubeconfig"
            assert path.stat().st_mode & 0o077 == 0
            review = await kube_whoami(path)
            assert review == f"system:serviceaccount:mcsync-system:mcsync-{component}"
    running: list[runner.Member] = []
    try:
        with structlog.testing.capture_logs() as logs:
            for cluster in K3S:
                for component in ("publisher", "subscriber"):
                    m = member(cs, server, volumes, cluster, component)
                    await m.start()
                    running.append(m)
                    await m.wait_ready(60)
            for source, target in (("east", "west"), ("west", "east")):
                k = cs[K3S[source]].kube
                await k.create(kube.SERVICES, service(namespace, f"from-{source}"))
                await k.create(kube.SERVICE_EXPORTS, service_export(namespace, f"from-{source}"))
                name = f"from-{source}"
                await eventually(
                    functools.partial(get_import, cs, K3S[target], namespace, name), timeout=30
                )
            await asyncio.sleep(1.0)  # a few heartbeats and reconciles more
        for m in running:
            assert not m.problems, (m.cluster, m.problems)
    finally:
        for m in running:
            await m.stop()
        for cluster in K3S.values():
            for name in K3S:
                await cs[cluster].kube.delete(kube.CLUSTER_PROFILES, "mcsync-system", name)
        for (cluster, name), obj in before.items():
            if obj is None:
                await cs[cluster].kube.delete(kube.CLUSTER_PROPERTIES, None, name)
            else:
                spec = {"spec": obj["spec"], "metadata": {"name": name}}
                await cs[cluster].kube.apply(
                    kube.CLUSTER_PROPERTIES,
                    {"apiVersion": obj["apiVersion"], "kind": obj["kind"], **spec},
                )
    refused = [
        e
        for e in logs
        if any(
            word in repr(e)
            for word in (
                "API error 401",
                "API error 403",
                "Forbidden",
                "forbidden",
                "Unauthorized",
                "Permissions Violation",
                "permission",
            )
        )
    ]
    assert not refused, refused[:5]
    assert "Permissions Violation" not in server.log_path.read_text()
    for password in volumes.root.glob("volumes/nats-*/password"):
        assert password.read_text().strip() not in repr(logs)


async def kube_whoami(kubeconfig: Path) -> str:
    """Who the API server takes this kubeconfig for (a SelfSubjectReview)."""
    api = await kube.load_client(kubeconfig)
    try:
        review = await kube.Kube(api).request(
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
    finally:
        await api.close()
    return str(review["status"]["userInfo"]["username"])
