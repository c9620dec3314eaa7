"""The desired ClusterProfile of a member: valid at v1alpha1 and v1alpha2, consumable by
cluster-inventory-api's pkg/access (inventory-and-leases.md §1.3-§1.4, §6.3)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import kube
from engine.core import events as ev
from engine.core import fold, inventory
from subscribers import profiles

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LEASE = timedelta(seconds=30)
CA = "Q0E="


def record(*access: ev.AccessProvider) -> fold.ClusterRecord:
    return fold.ClusterRecord(
        info=ev.ClusterJoined(cluster="east-1", clusterset="prod", access_providers=access),
        last_heartbeat=ev.Heartbeat(cluster="east-1"),
        last_heartbeat_at=T0,
    )


def profile(*access: ev.AccessProvider) -> dict[str, Any]:
    return inventory.profile("east-1", record(*access), "inventory", T0, LEASE)


def conditions(p: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in p["status"]["conditions"]}


def test_mcsync_writes_profiles_at_the_version_the_subscriber_talks_to() -> None:
    assert kube.CLUSTER_PROFILES.api_version == inventory.PROFILE_API
    assert profile()["apiVersion"] == "multicluster.x-k8s.io/v1alpha1"


def test_a_profile_carries_the_inventory_member_id_label() -> None:
    labels = profile()["metadata"]["labels"]
    assert labels == {
        "x-k8s.io/cluster-manager": "mcsync",
        "multicluster.x-k8s.io/clusterset": "prod",
        "multicluster.x-k8s.io/inventory-member-id": "east-1",
    }


def test_the_cluster_manager_name_is_a_label_value() -> None:
    name = profile()["spec"]["clusterManager"]["name"]
    assert name == inventory.CLUSTER_MANAGER
    assert 1 <= len(name) <= 63 and name.isalnum()


def test_every_access_provider_names_its_cluster_for_the_exec_plugin() -> None:
    p = profile(ev.AccessProvider("mcsync", "https://10.0.0.1:6443", CA))
    assert p["status"]["accessProviders"] == [
        {
            "name": "mcsync",
            "cluster": {
                "server": "https://10.0.0.1:6443",
                "certificate-authority-data": CA,
                "extensions": [
                    {
                        "name": "client.authentication.k8s.io/exec",
                        "extension": {"clusterName": "east-1"},
                    }
                ],
            },
        }
    ]
    assert "mcsync.io/ValidAccessProviders" not in conditions(p)


def test_a_profile_without_advertised_access_has_no_access_providers() -> None:
    assert "accessProviders" not in profile()["status"]


@pytest.mark.parametrize(
    "server",
    [
        "https://api.example.com",
        "https://api.example.com:6443",
        "https://10.0.0.1:6443",
        "https://[fd00::1]:6443",
        "http://localhost:8080",
        "https://gateway.example.com/v1/projects/p/memberships/east-1",
    ],
)
def test_an_http_url_with_a_host_is_a_valid_server(server: str) -> None:
    assert inventory.valid_server(server)


@pytest.mark.parametrize(
    "server",
    [
        "",
        "api.example.com:6443",
        "https://",
        "https://:6443",
        "https://api.example.com:port",
        "https://api.example.com:99999",
        "https://api example.com",
        "https://api.exämple.com",
        "unix:///var/run/kube.sock",
        "ftp://api.example.com",
        "https://api.example.com/" + "x" * 2048,
    ],
)
def test_a_server_v1alpha2_could_refuse_is_left_out_and_said_so(server: str) -> None:
    assert not inventory.valid_server(server)
    p = profile(
        ev.AccessProvider("bad", server, CA), ev.AccessProvider("good", "https://a.example.com")
    )
    assert [a["name"] for a in p["status"]["accessProviders"]] == ["good"]
    c = conditions(p)["mcsync.io/ValidAccessProviders"]
    assert (c["status"], c["reason"]) == ("False", "AccessProviderRefused")
    assert "'bad'" in c["message"]
    # The other conditions are there as ever: one bad advertisement costs nothing else.
    assert conditions(p)["ControlPlaneHealthy"]["status"] == "True"


def test_ca_data_that_is_not_base64_is_refused() -> None:
    p = profile(ev.AccessProvider("mcsync", "https://a.example.com", "not base64!"))
    assert "accessProviders" not in p["status"]
    assert "base64" in conditions(p)["mcsync.io/ValidAccessProviders"]["message"]


def test_a_second_provider_of_one_name_is_refused() -> None:
    p = profile(
        ev.AccessProvider("mcsync", "https://a.example.com"),
        ev.AccessProvider("mcsync", "https://b.example.com"),
    )
    assert [a["cluster"]["server"] for a in p["status"]["accessProviders"]] == [
        "https://a.example.com"
    ]
    assert "second provider" in conditions(p)["mcsync.io/ValidAccessProviders"]["message"]


def test_at_most_64_providers_are_kept() -> None:
    many = [ev.AccessProvider(f"p{i}", f"https://h{i}.example.com") for i in range(70)]
    p = profile(*many)
    kept = p["status"]["accessProviders"]
    assert [a["name"] for a in kept] == [f"p{i}" for i in range(64)]
    assert "more than 64" in conditions(p)["mcsync.io/ValidAccessProviders"]["message"]


def test_the_refusal_message_stays_short() -> None:
    many = [ev.AccessProvider(f"p{i}-" + "x" * 200, "nope") for i in range(64)]
    message = conditions(profile(*many))["mcsync.io/ValidAccessProviders"]["message"]
    assert len(message) <= 2048


servers = st.one_of(
    st.sampled_from(["https://a.example.com:6443", "http://10.1.2.3", "https://[::1]"]),
    st.text(max_size=40),
)
providers = st.builds(
    ev.AccessProvider,
    name=st.text(max_size=300),
    server=servers,
    certificate_authority_data=st.one_of(st.none(), st.sampled_from([CA, "?", ""])),
)


@given(st.lists(providers, max_size=80))
def test_whatever_is_advertised_the_access_providers_are_valid_at_v1alpha2(
    advertised: list[ev.AccessProvider],
) -> None:
    kept, refused = inventory.access_providers("east-1", advertised)
    assert len(kept) + len(refused) == len(advertised)
    assert len(kept) <= 64
    names = [a["name"] for a in kept]
    assert len(set(names)) == len(names)
    for a in kept:
        assert 1 <= len(a["name"]) <= 253
        assert inventory.valid_server(a["cluster"]["server"])
        assert a["cluster"]["extensions"][0]["extension"] == {"clusterName": "east-1"}


def observed_with(manager: str, subresource: str | None, *keys: str) -> dict[str, Any]:
    """A profile whose managedFields say ``manager`` owns these accessProviders keys."""
    entry: dict[str, Any] = {
        "manager": manager,
        "operation": "Apply",
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:status": {"f:accessProviders": {k: {".": {}} for k in keys}}},
    }
    if subresource is not None:
        entry["subresource"] = subresource
    return {"metadata": {"managedFields": [entry]}}


WANTED = {"accessProviders": [{"name": "mcsync", "cluster": {"server": "https://a"}}]}


@pytest.mark.parametrize(
    ("observed", "status", "withdrawn"),
    [
        (observed_with("mcsync", "status", 'k:{"name":"mcsync"}'), {}, True),
        (observed_with("mcsync", "status", 'k:{"name":"old"}'), WANTED, True),
        (observed_with("mcsync", "status", 'k:{"name":"mcsync"}'), WANTED, False),
        (observed_with("someone-else", "status", 'k:{"name":"theirs"}'), {}, False),
        (observed_with("mcsync", None, 'k:{"name":"mcsync"}'), {}, False),
        (observed_with("mcsync", "status", "."), {}, False),
        (observed_with("mcsync", "status", "k:not json"), {}, False),
        (observed_with("mcsync", "status", "k:[1]"), {}, False),
        ({"metadata": {}}, {}, False),
    ],
    ids=[
        "ours-none-wanted",
        "ours-another-wanted",
        "ours-still-wanted",
        "another-managers",
        "not-the-status",
        "the-list-itself",
        "malformed-key",
        "key-not-an-object",
        "no-managed-fields",
    ],
)
def test_an_access_provider_is_withdrawn_only_if_we_own_it_and_no_longer_want_it(
    observed: dict[str, Any], status: dict[str, Any], withdrawn: bool
) -> None:
    assert profiles._withdrawn_access(observed, status, "mcsync") is withdrawn
