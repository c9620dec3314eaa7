"""ClusterProfiles as their consumers use them, on real apiservers: served at v1alpha2, valid at
both versions, and good for building a working client to the member.

The consumer here does what multicluster-runtime's cluster-inventory-api provider does through
cluster-inventory-api's ``pkg/access`` (inventory-and-leases.md §6.2): it engages a profile once
``ControlPlaneHealthy`` is ``True``; it takes the first provider name of its provider file that
the profile lists in ``status.accessProviders``; it points a client at that provider's
``server`` with its ``certificate-authority-data``; and it runs that provider's exec credential
plugin the way client-go does with ``provideClusterInfo: true`` and ``interactiveMode: Never``:
``KUBERNETES_EXEC_INFO`` holds an ExecCredential whose ``spec.cluster`` is the profile's cluster,
with the ``client.authentication.k8s.io/exec`` extension as ``config``. The plugin is the one
mcsync ships, ``mcsync credentials``, run as a process; the token it hands out is a real
ServiceAccount token of the member, which the member's apiserver checks.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from engine import jetstream, kube
from engine.core import events as ev
from engine.core import inventory, subjects
from engine.core.errors import ConfigError
from publishers.membership import ReporterSettings
from subscribers.subscriber import SubscriberSettings
from tests.conftest import ClusterSet
from tests.integration.conftest import Members, condition, eventually

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_namespaces")]

NS = "mcsync-system"
LEASE = 3.0
FAST_SUBSCRIBER = SubscriberSettings(lease_seconds=LEASE, tick_seconds=0.2)
PROFILES_V1ALPHA2 = kube.Resource(
    "multicluster.x-k8s.io", "v1alpha2", "clusterprofiles", "ClusterProfile"
)
CONFIG_MAPS = kube.Resource("", "v1", "configmaps", "ConfigMap")
SERVICE_ACCOUNTS = kube.Resource("", "v1", "serviceaccounts", "ServiceAccount")
ROLES = kube.Resource("rbac.authorization.k8s.io", "v1", "roles", "Role")
ROLE_BINDINGS = kube.Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding")
EXEC_V1 = "client.authentication.k8s.io/v1"


def provider_file(path: Path, token_dir: Path) -> Path:
    """A consumer's provider file, in pkg/access's format: a provider this profile does not
    offer first, then mcsync's plugin."""
    config = {
        "providers": [
            {
                "name": "secretreader",
                "execConfig": {
                    "apiVersion": EXEC_V1,
                    "command": "/nonexistent/secretreader-plugin",
                    "args": None,
                    "env": None,
                    "provideClusterInfo": True,
                },
            },
            {
                "name": "mcsync",
                "execConfig": {
                    "apiVersion": EXEC_V1,
                    "command": sys.executable,
                    "args": ["-m", "engine", "credentials"],
                    "env": [{"name": "MCSYNC_TOKEN_DIR", "value": str(token_dir)}],
                    "provideClusterInfo": True,
                    "interactiveMode": "Never",
                },
            },
        ]
    }
    path.write_text(json.dumps(config))
    return path


def is_ready(profile: kube.Obj) -> bool:
    """multicluster-runtime's default readiness: ControlPlaneHealthy is True."""
    c = condition(profile, "ControlPlaneHealthy")
    return c is not None and c["status"] == "True"


def pick(profile: kube.Obj, providers: list[dict[str, Any]]) -> tuple[dict[str, Any], kube.Obj]:
    """The first configured provider the profile offers, and the profile's entry for it."""
    offered = {a["name"]: a for a in profile.get("status", {}).get("accessProviders", [])}
    for p in providers:
        if p["name"] in offered:
            return p, offered[p["name"]]
    raise AssertionError(f"no configured provider in {sorted(offered)}")


async def run_exec_plugin(exec_config: dict[str, Any], cluster: kube.Obj) -> dict[str, Any]:
    """Run the plugin as client-go does; its ExecCredential status (or raise with its stderr)."""
    spec_cluster: dict[str, Any] = {"server": cluster["server"]}
    if "certificate-authority-data" in cluster:
        spec_cluster["certificate-authority-data"] = cluster["certificate-authority-data"]
    for ext in cluster.get("extensions", []):
        if ext["name"] == "client.authentication.k8s.io/exec" and exec_config["provideClusterInfo"]:
            spec_cluster["config"] = ext["extension"]
    info = {
        "apiVersion": exec_config["apiVersion"],
        "kind": "ExecCredential",
        "spec": {"cluster": spec_cluster, "interactive": False},
    }
    env = dict(os.environ)
    env.pop("MCSYNC_TOKEN_DIR", None)
    env.pop("MCSYNC_TOKEN_FILE", None)
    env.update({e["name"]: e["value"] for e in exec_config.get("env") or []})
    env["KUBERNETES_EXEC_INFO"] = json.dumps(info)
    proc = await asyncio.create_subprocess_exec(
        exec_config["command"],
        *(exec_config.get("args") or []),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    if proc.returncode != 0:
        raise PluginFailed(err.decode())
    cred = json.loads(out)
    assert cred["apiVersion"] == exec_config["apiVersion"]
    assert cred["kind"] == "ExecCredential"
    status: dict[str, Any] = cred["status"]
    return status


class PluginFailed(Exception):
    pass


async def client_from_profile(
    profile: kube.Obj, providers_path: Path, workdir: Path
) -> tuple[kube.Kube, client.ApiClient]:
    """A client for the member the profile describes, built the way pkg/access builds one."""
    providers = json.loads(providers_path.read_text())["providers"]
    configured, offered = pick(profile, providers)
    cluster = offered["cluster"]
    status = await run_exec_plugin(configured["execConfig"], cluster)
    cfg = client.Configuration()
    cfg.host = cluster["server"]
    ca = workdir / f"{profile['metadata']['name']}-ca.crt"
    ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
    cfg.ssl_ca_cert = str(ca)
    cfg.api_key = {"BearerToken": f"Bearer {status['token']}"}
    api = client.ApiClient(configuration=cfg)
    return kube.Kube(api, field_manager="profile-consumer"), api


async def service_account_token(k: kube.Kube, namespace: str, name: str) -> str:
    """A ServiceAccount in the member that may read ConfigMaps of ``namespace`` only, and a
    token for it (TokenRequest)."""
    await k.create(SERVICE_ACCOUNTS, {"metadata": {"name": name, "namespace": namespace}})
    await k.create(
        ROLES,
        {
            "metadata": {"name": name, "namespace": namespace},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
        },
    )
    await k.create(
        ROLE_BINDINGS,
        {
            "metadata": {"name": name, "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    )
    review = await k.request(
        "POST",
        SERVICE_ACCOUNTS.path(namespace, name, "token"),
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
    )
    token: str = review["status"]["token"]
    return token


async def advertising_members(members: Members) -> None:
    """cluster-3's publisher advertises its real API server and CA; every cluster subscribes."""
    cs = members.cs
    c3 = cs["cluster-3"].cluster
    ca = base64.b64encode(c3.ca_file.read_bytes()).decode()
    settings = ReporterSettings(
        heartbeat_interval=0.5, lease=LEASE, api_server_url=c3.server, api_server_ca_data=ca
    )
    await members.start(
        "cluster-3", reporter_settings=settings, subscriber_settings=FAST_SUBSCRIBER
    )
    for name in ("cluster-1", "cluster-2"):
        await members.start(
            name,
            reporter_settings=ReporterSettings(heartbeat_interval=0.5, lease=LEASE),
            subscriber_settings=FAST_SUBSCRIBER,
        )


async def ready_profile(cs: ClusterSet, where: str, member: str) -> kube.Obj:
    """The member's profile in ``where``, read at v1alpha2, once a consumer would engage it."""

    async def probe() -> kube.Obj | None:
        p = await cs[where].kube.get(PROFILES_V1ALPHA2, NS, member)
        if p and is_ready(p) and p["status"].get("accessProviders"):
            return p
        return None

    return await eventually(probe, timeout=30)


async def test_a_consumer_builds_a_working_client_from_a_profile_with_the_mcsync_plugin(
    members: Members, namespace: str, tmp_path: Path
) -> None:
    cs = members.cs
    k3 = cs["cluster-3"].kube
    await k3.create(
        CONFIG_MAPS, {"metadata": {"name": "only-in-cluster-3", "namespace": namespace}}
    )
    token = await service_account_token(k3, namespace, "inventory-consumer")
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    (tokens / "cluster-3").write_text(token + "\n")
    providers = provider_file(tmp_path / "clusterprofile-provider-file.json", tokens)
    await advertising_members(members)

    for where in ("cluster-1", "cluster-2", "cluster-3"):
        profile = await ready_profile(cs, where, "cluster-3")
        assert profile["apiVersion"] == "multicluster.x-k8s.io/v1alpha2"
        labels = profile["metadata"]["labels"]
        assert labels[inventory.LABEL_INVENTORY_MEMBER_ID] == "cluster-3"
        assert labels[inventory.LABEL_CLUSTER_MANAGER] == profile["spec"]["clusterManager"]["name"]
        k, api = await client_from_profile(profile, providers, tmp_path)
        try:
            # The member's own API, as the ServiceAccount: its ConfigMap is there...
            items, _ = await k.list(CONFIG_MAPS, namespace)
            assert [i["metadata"]["name"] for i in items] == ["only-in-cluster-3"]
            who = await k.request(
                "POST",
                "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
            )
            username = who["status"]["userInfo"]["username"]
            assert username == f"system:serviceaccount:{namespace}:inventory-consumer"
            # ...and nothing beyond what the member granted it.
            with pytest.raises(kube.KubeError) as denied:
                await k.list(CONFIG_MAPS, "kube-system")
            assert denied.value.status == 403
        finally:
            await api.close()


async def test_without_a_token_for_the_member_the_plugin_fails_and_says_which_file(
    members: Members, tmp_path: Path
) -> None:
    cs = members.cs
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    (tokens / "cluster-1").write_text("a-token-of-another-member\n")
    providers = provider_file(tmp_path / "providers.json", tokens)
    await advertising_members(members)
    profile = await ready_profile(cs, "cluster-1", "cluster-3")
    with pytest.raises(PluginFailed) as failed:
        await client_from_profile(profile, providers, tmp_path)
    message = str(failed.value)
    assert str(tokens / "cluster-3") in message
    assert "a-token-of-another-member" not in message


async def test_a_profile_mcsync_wrote_is_valid_at_both_versions(
    members: Members, namespace: str
) -> None:
    """Written afresh through each version (spec by create, status through /status, so no
    ratcheting spares an unchanged field), mcsync's profile is accepted and reads back the same."""
    cs = members.cs
    await advertising_members(members)
    written = await ready_profile(cs, "cluster-1", "cluster-3")
    k1 = cs["cluster-1"].kube
    for version in ("v1alpha1", "v1alpha2"):
        res = kube.Resource("multicluster.x-k8s.io", version, "clusterprofiles", "ClusterProfile")
        name = f"copy-{version}"
        body = {
            "apiVersion": res.api_version,
            "kind": "ClusterProfile",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": written["metadata"]["labels"],
            },
            "spec": written["spec"],
        }
        await k1.create(res, body)
        copy = await k1.request(
            "PATCH",
            res.path(namespace, name, "status"),
            body={"status": written["status"]},
            content_type="application/merge-patch+json",
        )
        assert copy["apiVersion"] == res.api_version
        assert copy["spec"] == written["spec"]
        assert copy["status"] == written["status"]
        assert copy["metadata"]["labels"] == written["metadata"]["labels"]


async def test_a_publisher_given_an_api_server_url_no_profile_could_carry_stops_at_once(
    members: Members,
) -> None:
    bad = ReporterSettings(heartbeat_interval=0.5, lease=LEASE, api_server_url="east:6443")
    m = members.new("cluster-3", reporter_settings=bad, subscribe=False)
    try:
        with pytest.raises(ConfigError, match="is not an http\\(s\\) URL with a host"):
            await m.start()
        assert m.publisher is None
    finally:
        await m.stop()


async def test_access_providers_v1alpha2_would_refuse_are_left_out_and_the_profile_still_written(
    members: Members,
) -> None:
    """Whatever a member's events advertise (here appended straight to the log, past any
    publisher check), its profile is written, without the providers the CRD would refuse."""
    cs = members.cs
    await members.start(
        "cluster-1",
        reporter_settings=ReporterSettings(heartbeat_interval=0.5, lease=LEASE),
        subscriber_settings=FAST_SUBSCRIBER,
    )
    advertised = (
        ev.AccessProvider("mcsync", "cluster-9.example.com:6443"),
        ev.AccessProvider("other", "https://cluster-9.example.com:6443", "not base64!"),
        *(ev.AccessProvider(f"p{i}", f"https://p{i}.cluster-9.example.com") for i in range(70)),
    )
    nc = await jetstream.connect(cs.nats.url)
    try:
        log = jetstream.EventLog(nc, members.clusterset_name)
        await log.append(
            jetstream.Append(
                subjects.cluster(members.clusterset_name, "cluster-9"),
                ev.ClusterJoined(
                    cluster="cluster-9",
                    clusterset=members.clusterset_name,
                    access_providers=advertised,
                ),
            )
        )
        await log.append(
            jetstream.Append(
                subjects.heartbeat(members.clusterset_name, "cluster-9"),
                ev.Heartbeat(cluster="cluster-9", instance="cluster-9-a"),
            )
        )

        async def written() -> kube.Obj | None:
            p = await cs["cluster-1"].kube.get(PROFILES_V1ALPHA2, NS, "cluster-9")
            return p if p and p.get("status", {}).get("accessProviders") else None

        profile = await eventually(written, timeout=30)
    finally:
        await jetstream.close(nc)
    kept = [a["name"] for a in profile["status"]["accessProviders"]]
    assert kept == [f"p{i}" for i in range(64)]
    refused = condition(profile, "mcsync.io/ValidAccessProviders")
    assert refused is not None
    assert (refused["status"], refused["reason"]) == ("False", "AccessProviderRefused")
    assert "'mcsync'" in refused["message"] and "'other'" in refused["message"]
    assert condition(profile, "Joined")["status"] == "True"  # type: ignore[index]
    assert profile["metadata"]["labels"][inventory.LABEL_INVENTORY_MEMBER_ID] == "cluster-9"


async def test_a_member_that_stops_advertising_loses_its_access_providers_everywhere(
    members: Members,
) -> None:
    cs = members.cs
    await advertising_members(members)
    await ready_profile(cs, "cluster-1", "cluster-3")
    await members.stop("cluster-3")
    await members.start(
        "cluster-3",
        reporter_settings=ReporterSettings(heartbeat_interval=0.5, lease=LEASE),
        subscriber_settings=FAST_SUBSCRIBER,
    )

    async def withdrawn() -> bool:
        for where in ("cluster-1", "cluster-2", "cluster-3"):
            p = await cs[where].kube.get(PROFILES_V1ALPHA2, NS, "cluster-3")
            if p is None or p.get("status", {}).get("accessProviders"):
                return False
        return True

    await eventually(withdrawn, timeout=30)
    # And then no more writes: a profile without providers is what is wanted.
    k1 = members.members["cluster-1"].k8s
    for _ in range(20):
        before = k1.writes
        await asyncio.sleep(1.5)
        if k1.writes == before:
            break
    else:
        raise AssertionError("cluster-1's subscriber kept writing")


async def test_an_access_provider_an_older_subscriber_wrote_and_none_wants_is_removed(
    members: Members,
) -> None:
    """Say an older mcsync wrote a provider that is refused now: its profile is otherwise up
    to date, and no provider at all is wanted, yet the stale one goes."""
    cs = members.cs
    await advertising_members(members)

    async def cluster_2_profile() -> kube.Obj | None:
        p = await cs["cluster-1"].kube.get(kube.CLUSTER_PROFILES, NS, "cluster-2")
        return p if p and is_ready(p) else None

    p = await eventually(cluster_2_profile, timeout=30)
    assert "accessProviders" not in p["status"]
    await members.stop("cluster-1")
    stale = [{"name": "mcsync", "cluster": {"server": "https://stale.example.com"}}]
    as_mcsync = kube.Kube(cs["cluster-1"].api, field_manager=kube.FIELD_MANAGER)
    written = await as_mcsync.apply(
        kube.CLUSTER_PROFILES,
        {
            "apiVersion": kube.CLUSTER_PROFILES.api_version,
            "kind": "ClusterProfile",
            "metadata": {"name": "cluster-2", "namespace": NS},
            "status": {**p["status"], "accessProviders": stale},
        },
        "status",
    )
    assert written["status"]["accessProviders"] == stale
    await members.start(
        "cluster-1",
        reporter_settings=ReporterSettings(heartbeat_interval=0.5, lease=LEASE),
        subscriber_settings=FAST_SUBSCRIBER,
    )

    async def removed() -> bool:
        got = await cs["cluster-1"].kube.get(kube.CLUSTER_PROFILES, NS, "cluster-2")
        return got is not None and "accessProviders" not in got.get("status", {})

    await eventually(removed, timeout=30)
