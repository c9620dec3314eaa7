"""The MCS merge, case by case from the spec (/work/shared/specs/mcs-api.md).

The first half replays, at the level of the merge, every API-level conformance test of spec §8
(tests 1-16; a few connectivity tests whose routing follows from the merged ports too). The
second half covers the rules of §2, §3 and §6 that conformance leaves out. The fixture mirrors
the conformance driver: Service ``hello`` with ports tcp/42/TCP and udp/42/UDP, ClientIP
affinity with a 10 s timeout, exported from cluster ``c0`` first and from ``c1`` a second later.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core import events as ev
from engine.core import mcs

NS = "mcs-conformance-x1"
NAME = "hello"
T0 = datetime(2026, 5, 1, 10, 0, 0, tzinfo=UTC)
REASON_PATTERN = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")

TCP42 = ev.Port(port=42, protocol="TCP", name="tcp")
UDP42 = ev.Port(port=42, protocol="UDP", name="udp")


def export(cluster: str, age: int = 0, **fields: Any) -> ev.ExportUpserted:
    """The conformance fixture's export from ``cluster``, created ``age`` seconds after T0."""
    base: dict[str, Any] = {
        "cluster": cluster,
        "namespace": NS,
        "name": NAME,
        "uid": f"uid-{cluster}",
        "created": T0 + timedelta(seconds=age),
        "ports": (TCP42, UDP42),
        "session_affinity": "ClientIP",
        "session_affinity_timeout": 10,
        "internal_traffic_policy": "Cluster",
        "traffic_distribution": "PreferClose",
        "ip_families": ("IPv4",),
        "exported_labels": {"dummy-label": "true"},
        "exported_annotations": {"dummy-annotation": "true"},
    }
    base.update(fields)
    return ev.ExportUpserted(**base)


def view(*exports: ev.ExportUpserted, admitted: set[str] | None = None) -> mcs.ServiceView:
    return mcs.view(NS, NAME, {e.cluster: e for e in exports}, admitted)


def conditions(v: mcs.ServiceView, cluster: str) -> dict[str, mcs.Condition]:
    return {c.type: c for c in v.export_conditions[cluster]}


def conflict(v: mcs.ServiceView, cluster: str) -> mcs.Condition:
    return conditions(v, cluster)["Conflict"]


def spec_of(v: mcs.ServiceView) -> mcs.ImportSpec:
    assert v.spec is not None, "expected a ServiceImport"
    return v.spec


def by_name(ports: tuple[ev.Port, ...]) -> list[tuple[str, str, int, str | None]]:
    """Ports as conformance compares them: sorted by name, case-insensitive, appProtocol kept."""
    return sorted(
        ((p.name, p.protocol, p.port, p.app_protocol) for p in ports),
        key=lambda t: t[0].lower(),
    )


# --- conformance §8, at the level of the merge --------------------------------------------


@pytest.mark.parametrize("service_type", ["ClusterSetIP", "Headless"])
def test_1_import_exists_while_at_least_one_export_remains(service_type: str) -> None:
    c0, c1 = export("c0", 0, service_type=service_type), export("c1", 1, service_type=service_type)
    assert view(c0, c1).spec is not None
    assert spec_of(view(c1)).type == service_type  # c0 unexported, c1 remains
    assert spec_of(view(c0)).type == service_type  # c1 unexported, c0 remains
    assert view().spec is None  # both gone: no import anywhere


def test_2_only_exported_labels_and_annotations_reach_the_import() -> None:
    spec = spec_of(view(export("c0")))
    assert dict(spec.labels) == {"dummy-label": "true"}
    assert dict(spec.annotations) == {"dummy-annotation": "true"}
    assert "dummy-svc" not in spec.labels
    assert "dummy-svcexport" not in spec.labels


def test_3_conflicting_labels_and_annotations_take_the_oldest_whole_map() -> None:
    v = view(
        export("c0", 0),
        export(
            "c1",
            1,
            exported_labels={"dummy-label2": "true"},
            exported_annotations={"dummy-annotation2": "true"},
        ),
    )
    spec = spec_of(v)
    assert dict(spec.labels) == {"dummy-label": "true"}
    assert dict(spec.annotations) == {"dummy-annotation": "true"}
    assert v.conflict_reasons == ("LabelsConflict", "AnnotationsConflict")
    for cluster in ("c0", "c1"):
        assert conflict(v, cluster).status == "True"
        assert conflict(v, cluster).reason == "LabelsConflict,AnnotationsConflict"


def test_3_labels_are_never_unioned_even_when_one_map_contains_the_other() -> None:
    v = view(
        export("c0", 0),
        export("c1", 1, exported_labels={"dummy-label": "true", "extra": "x"}),
    )
    assert dict(spec_of(v).labels) == {"dummy-label": "true"}
    assert v.conflict_reasons == ("LabelsConflict",)


def test_4_a_clusterip_export_is_valid_and_imported_as_clustersetip() -> None:
    v = view(export("c0"))
    assert spec_of(v).type == "ClusterSetIP"
    assert conditions(v, "c0")["Valid"] == mcs.Condition(
        "Valid", "True", "Valid", conditions(v, "c0")["Valid"].message
    )
    assert v.clusters == ("c0",)
    assert view().spec is None  # unexport: the import goes


def test_5_session_affinity_and_its_config_are_copied() -> None:
    spec = spec_of(view(export("c0")))
    assert spec.session_affinity == "ClientIP"
    assert spec.session_affinity_timeout == 10


def test_6_internal_traffic_policy_is_copied() -> None:
    assert spec_of(view(export("c0"))).internal_traffic_policy == "Cluster"


def test_7_traffic_distribution_is_copied() -> None:
    assert spec_of(view(export("c0"))).traffic_distribution == "PreferClose"


@pytest.mark.parametrize("families", [("IPv4",), ("IPv6",), ("IPv4", "IPv6"), ("IPv6", "IPv4")])
def test_8_the_import_has_the_exported_ip_families_in_order(families: tuple[str, ...]) -> None:
    # The VIPs themselves are allocated per importing cluster (derived Service), not merged;
    # the merge gives the families the IPs must follow.
    assert spec_of(view(export("c0", ip_families=families))).ip_families == families


def test_8_an_export_without_ip_families_still_gives_the_import_one() -> None:
    assert spec_of(view(export("c0", ip_families=()))).ip_families == ("IPv4",)


def test_9_the_ports_match_the_exported_service_with_app_protocol() -> None:
    ports = (
        ev.Port(port=42, protocol="UDP", name="udp"),
        ev.Port(port=42, protocol="TCP", name="tcp", app_protocol="kubernetes.io/h2c"),
    )
    spec = spec_of(view(export("c0", ports=ports)))
    assert by_name(spec.ports) == [
        ("tcp", "TCP", 42, "kubernetes.io/h2c"),
        ("udp", "UDP", 42, None),
    ]


def test_10_a_clean_union_of_ports_still_raises_port_conflict_on_both() -> None:
    stcp = ev.Port(port=142, protocol="SCTP", name="stcp")
    v = view(export("c0", 0), export("c1", 1, ports=(TCP42, stcp)))
    assert by_name(spec_of(v).ports) == [
        ("stcp", "SCTP", 142, None),
        ("tcp", "TCP", 42, None),
        ("udp", "UDP", 42, None),
    ]
    assert v.conflict_reasons == ("PortConflict",)
    for cluster in ("c0", "c1"):
        assert conflict(v, cluster).status == "True"
        assert conflict(v, cluster).reason == "PortConflict"


def test_11_same_port_name_with_another_number_keeps_the_oldest_ports() -> None:
    v = view(export("c0", 0), export("c1", 1, ports=(ev.Port(port=43, name="tcp"),)))
    assert by_name(spec_of(v).ports) == [("tcp", "TCP", 42, None), ("udp", "UDP", 42, None)]
    for cluster in ("c0", "c1"):
        assert conflict(v, cluster).status == "True"
        assert "PortConflict" in conflict(v, cluster).reason.split(",")


def test_12_a_headless_export_gives_a_headless_import_that_goes_with_the_export() -> None:
    v = view(export("c0", service_type="Headless"))
    assert spec_of(v).type == "Headless"
    assert view().spec is None


def test_13_a_headless_import_has_ip_families_but_nothing_to_allocate() -> None:
    spec = spec_of(view(export("c0", service_type="Headless", ip_families=("IPv4", "IPv6"))))
    assert spec.type == "Headless"
    assert spec.ip_families == ("IPv4", "IPv6")  # the EndpointSlice/DNS tests wait on these
    assert not hasattr(spec, "ips")  # IPs are never part of the merge


def test_14_an_externalname_export_is_invalid_and_gives_no_import() -> None:
    v = view(export("c0", validity="InvalidServiceType", ports=()))
    assert v.spec is None
    assert v.clusters == ()
    valid = conditions(v, "c0")["Valid"]
    assert (valid.status, valid.reason) == ("False", "InvalidServiceType")
    assert "ExternalName" in valid.message


def test_15_conflicting_headlessness_keeps_the_oldest_type_and_conflicts_on_both() -> None:
    v = view(export("c0", 0), export("c1", 1, service_type="Headless"))
    assert spec_of(v).type == "ClusterSetIP"
    assert v.conflict_reasons == ("TypeConflict",)
    for cluster in ("c0", "c1"):
        assert (conflict(v, cluster).status, conflict(v, cluster).reason) == (
            "True",
            "TypeConflict",
        )


def test_16_every_exporting_cluster_is_a_slice_source_until_it_unexports() -> None:
    # MCS EndpointSlices are built per contributing cluster (source-cluster label).
    assert view(export("c0", 0), export("c1", 1)).clusters == ("c0", "c1")
    assert view(export("c1", 1)).clusters == ("c1",)


def test_19_a_service_without_a_local_export_never_contributes() -> None:
    # c1 has the Service but no ServiceExport, so its publisher sends no export event.
    v = view(export("c0"))
    assert v.clusters == ("c0",)
    assert set(v.export_conditions) == {"c0"}


def test_20_same_port_name_on_another_number_is_not_imported() -> None:
    # Port 42 is then served only by c0; c1's "tcp" (4242) is not part of the import.
    v = view(export("c0", 0), export("c1", 1, ports=(ev.Port(port=4242, name="tcp"),)))
    assert by_name(spec_of(v).ports) == [("tcp", "TCP", 42, None), ("udp", "UDP", 42, None)]
    assert v.conflict_reasons == ("PortConflict",)


def test_21_another_port_name_joins_the_union() -> None:
    v = view(export("c0", 0), export("c1", 1, ports=(ev.Port(port=4242, name="tcp2"),)))
    assert by_name(spec_of(v).ports) == [
        ("tcp", "TCP", 42, None),
        ("tcp2", "TCP", 4242, None),
        ("udp", "UDP", 42, None),
    ]
    assert v.conflict_reasons == ("PortConflict",)


# --- §3 precedence and stability ----------------------------------------------------------


def test_oldest_export_wins_type_conflict_whatever_the_cluster_ids() -> None:
    v = view(export("zz", 0), export("aa", 1, service_type="Headless"))
    assert v.winner == "zz"
    assert spec_of(v).type == "ClusterSetIP"


@pytest.mark.parametrize("order", [("c0", "c1", "c2"), ("c2", "c1", "c0"), ("c1", "c2", "c0")])
def test_equal_creation_timestamps_go_to_the_lowest_cluster_id(order: tuple[str, ...]) -> None:
    types = {"c0": "Headless", "c1": "ClusterSetIP", "c2": "ClusterSetIP"}
    exports = {c: export(c, 0, service_type=types[c]) for c in order}
    v = mcs.view(NS, NAME, exports)
    assert v.winner == "c0"
    assert spec_of(v).type == "Headless"
    assert v.conflict_reasons == ("TypeConflict",)


def test_precedence_compares_instants_not_offsets() -> None:
    # 11:00+02:00 is 09:00Z: older than c0's 10:00Z, so c1 wins although it reads later.
    c1_created = datetime(2026, 5, 1, 11, 0, tzinfo=timezone(timedelta(hours=2)))
    v = view(export("c0", 0), export("c1", created=c1_created, service_type="Headless"))
    assert v.winner == "c1"
    assert spec_of(v).type == "Headless"


def test_a_newer_disagreeing_export_never_changes_the_import() -> None:
    before = spec_of(view(export("c0", 0)))
    after = view(
        export("c0", 0),
        export(
            "c1",
            5,
            service_type="Headless",
            ports=(ev.Port(port=42, name="tcp", protocol="UDP"),),
            session_affinity="None",
            session_affinity_timeout=None,
            internal_traffic_policy="Local",
            traffic_distribution=None,
            ip_families=("IPv6",),
            exported_labels={},
            exported_annotations={},
        ),
    )
    assert spec_of(after) == before
    assert after.winner == "c0"


def test_withdrawing_the_oldest_export_hands_over_to_the_next_oldest() -> None:
    # The documented stability rule: no first-observed memory, the live oldest always wins.
    c0 = export("c0", 0)
    c1 = export("c1", 1, service_type="Headless", exported_labels={"from": "c1"})
    c2 = export("c2", 2, exported_labels={"from": "c2"})
    assert view(c0, c1, c2).winner == "c0"
    after = view(c1, c2)
    assert after.winner == "c1"
    assert spec_of(after).type == "Headless"
    assert dict(spec_of(after).labels) == {"from": "c1"}
    assert after.conflict_reasons == ("TypeConflict", "LabelsConflict")
    # and when the withdrawn export comes back with its old timestamp, it wins again
    assert view(c0, c1, c2).winner == "c0"


def test_a_re_created_export_is_younger_and_loses_its_precedence() -> None:
    again = export("c0", 60, uid="uid-c0-again")
    v = view(again, export("c1", 1, service_type="Headless"))
    assert v.winner == "c1"
    assert spec_of(v).type == "Headless"


@settings(max_examples=60, deadline=None)
@given(st.permutations(["c0", "c1", "c2", "c3"]), st.lists(st.integers(0, 3), min_size=4))
def test_the_view_does_not_depend_on_the_order_exports_are_given(
    order: list[str], ages: list[int]
) -> None:
    exports = [
        export(c, ages[i], service_type="Headless" if i % 2 else "ClusterSetIP")
        for i, c in enumerate(["c0", "c1", "c2", "c3"])
    ]
    forward = mcs.view(NS, NAME, {e.cluster: e for e in exports})
    shuffled = mcs.view(
        NS, NAME, {e.cluster: e for e in sorted(exports, key=lambda e: order.index(e.cluster))}
    )
    assert forward == shuffled


# --- §3 ports -----------------------------------------------------------------------------


def test_identical_ports_in_another_order_are_no_conflict() -> None:
    v = view(export("c0", 0), export("c1", 1, ports=(UDP42, TCP42)))
    assert v.conflict_reasons == ()
    assert conflict(v, "c1") == mcs.Condition(
        "Conflict", "False", "NoConflicts", conflict(v, "c1").message
    )


def test_another_app_protocol_is_a_port_conflict_and_the_oldest_is_kept() -> None:
    v = view(
        export("c0", 0),
        export("c1", 1, ports=(ev.Port(port=42, name="tcp", app_protocol="http"), UDP42)),
    )
    assert v.conflict_reasons == ("PortConflict",)
    assert by_name(spec_of(v).ports) == [("tcp", "TCP", 42, None), ("udp", "UDP", 42, None)]


def test_same_protocol_and_port_under_another_name_is_not_imported_twice() -> None:
    v = view(export("c0", 0), export("c1", 1, ports=(ev.Port(port=42, name="web"),)))
    assert by_name(spec_of(v).ports) == [("tcp", "TCP", 42, None), ("udp", "UDP", 42, None)]
    assert v.conflict_reasons == ("PortConflict",)


def test_same_port_number_on_another_protocol_is_a_distinct_port() -> None:
    v = view(
        export("c0", 0, ports=(TCP42,)),
        export("c1", 1, ports=(TCP42, ev.Port(port=42, protocol="SCTP", name="sctp"))),
    )
    assert by_name(spec_of(v).ports) == [("sctp", "SCTP", 42, None), ("tcp", "TCP", 42, None)]


def test_the_empty_port_name_counts_as_a_name() -> None:
    v = view(
        export("c0", 0, ports=(ev.Port(port=80),)),
        export("c1", 1, ports=(ev.Port(port=8080),)),
    )
    assert by_name(spec_of(v).ports) == [("", "TCP", 80, None)]
    assert v.conflict_reasons == ("PortConflict",)


def test_an_unnamed_port_joins_a_union_of_named_ports() -> None:
    v = view(export("c0", 0), export("c1", 1, ports=(TCP42, ev.Port(port=8080))))
    assert by_name(spec_of(v).ports) == [
        ("", "TCP", 8080, None),
        ("tcp", "TCP", 42, None),
        ("udp", "UDP", 42, None),
    ]


def test_union_ports_puts_the_oldest_exports_ports_first() -> None:
    v = view(
        export("c1", 1, ports=(ev.Port(port=2, name="b"),)),
        export("c0", 0, ports=(ev.Port(port=1, name="a"),)),
    )
    assert [p.name for p in spec_of(v).ports] == ["a", "b"]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.lists(
            st.builds(
                ev.Port,
                port=st.integers(1, 5),
                protocol=st.sampled_from(["TCP", "UDP"]),
                name=st.sampled_from(["", "a", "b", "c"]),
            ),
            max_size=4,
        ),
        min_size=1,
        max_size=4,
    )
)
def test_merged_ports_never_repeat_a_name_or_a_protocol_and_port(
    port_lists: list[list[ev.Port]],
) -> None:
    exports = [export(f"c{i}", i, ports=tuple(p)) for i, p in enumerate(port_lists)]
    spec = spec_of(view(*exports))
    names = [p.name for p in spec.ports]
    numbers = [(p.protocol, p.port) for p in spec.ports]
    assert len(names) == len(set(names))
    assert len(numbers) == len(set(numbers))
    assert set(spec.ports) <= {p for ports in port_lists for p in ports}

    def key(ports: list[ev.Port]) -> list[tuple[str, str, int, str | None]]:
        return sorted((p.name, p.protocol, p.port, p.app_protocol) for p in ports)

    differ = any(key(p) != key(port_lists[0]) for p in port_lists)
    assert ("PortConflict" in view(*exports).conflict_reasons) == differ


# --- §3 every other property, one reason each ---------------------------------------------

ONE_FIELD_CONFLICTS = [
    ("ports", (TCP42,), "PortConflict"),
    ("service_type", "Headless", "TypeConflict"),
    ("session_affinity", "None", "SessionAffinityConflict"),
    ("session_affinity_timeout", 30, "SessionAffinityConfigConflict"),
    ("exported_labels", {"dummy-label": "false"}, "LabelsConflict"),
    ("exported_annotations", {}, "AnnotationsConflict"),
    ("internal_traffic_policy", "Local", "InternalTrafficPolicyConflict"),
    ("traffic_distribution", None, "TrafficDistributionConflict"),
    ("ip_families", ("IPv6",), "IPFamilyConflict"),
]


@pytest.mark.parametrize(("field", "value", "reason"), ONE_FIELD_CONFLICTS)
def test_each_property_is_taken_from_the_oldest_with_its_own_reason(
    field: str, value: object, reason: str
) -> None:
    oldest = export("c0", 0)
    v = view(oldest, export("c1", 1, **{field: value}))
    assert v.conflict_reasons == (reason,)
    assert spec_of(v) == spec_of(view(oldest))
    for cluster in ("c0", "c1"):
        assert conflict(v, cluster).reason == reason
        assert conflict(v, cluster).status == "True"


def test_every_reason_in_the_enum_has_a_case() -> None:
    assert [r for _, _, r in ONE_FIELD_CONFLICTS] == list(mcs.REASON_ORDER)


def test_several_conflicts_join_their_reasons_in_api_order_without_spaces() -> None:
    v = view(export("c0", 0), export("c1", 1, **{f: val for f, val, _ in ONE_FIELD_CONFLICTS}))
    reason = conflict(v, "c0").reason
    assert reason == ",".join(mcs.REASON_ORDER)
    assert " " not in reason
    assert REASON_PATTERN.match(reason)
    assert v.conflict_reasons == mcs.REASON_ORDER


def test_reasons_follow_api_order_whatever_cluster_brings_them() -> None:
    v = view(
        export("c0", 0),
        export("c1", 1, ip_families=("IPv6",)),
        export("c2", 2, ports=(TCP42,)),
    )
    assert conflict(v, "c0").reason == "PortConflict,IPFamilyConflict"


def test_the_conflict_condition_is_the_same_on_every_contributing_export() -> None:
    v = view(export("c0", 0), export("c1", 1), export("c2", 2, service_type="Headless"))
    assert conflict(v, "c0") == conflict(v, "c1") == conflict(v, "c2")
    assert conflict(v, "c1").status == "True"  # c1 agrees with the winner, but is part of it


# --- §2 conditions and their messages ----------------------------------------------------


def test_the_conflict_message_names_the_fields_the_winner_and_why() -> None:
    v = view(
        export("c0", 0),
        export("c1", 1, service_type="Headless"),
        export("c2", 2, traffic_distribution=None),
        export("c3", 3),
    )
    message = conflict(v, "c3").message
    assert "type" in message
    assert "trafficDistribution" in message
    assert '"c0"' in message
    assert "oldest" in message
    assert "2026-05-01T10:00:00Z" in message
    assert "2/4" in message


def test_the_conflict_message_gives_the_winners_creation_time_in_utc() -> None:
    created = datetime(2026, 5, 1, 12, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    v = view(export("c0", created=created), export("c1", 1, service_type="Headless"))
    assert "2026-05-01T10:00:00Z" in conflict(v, "c1").message


def test_a_port_conflict_message_explains_the_union() -> None:
    v = view(export("c0", 0), export("c1", 1, ports=(TCP42,)))
    assert "ports" in conflict(v, "c0").message
    assert "union" in conflict(v, "c0").message


def test_agreeing_exports_are_valid_ready_and_without_conflict() -> None:
    v = view(export("c0", 0), export("c1", 1))
    for cluster in ("c0", "c1"):
        got = conditions(v, cluster)
        assert list(got) == ["Valid", "Ready", "Conflict"]
        assert (got["Valid"].status, got["Valid"].reason) == ("True", "Valid")
        assert (got["Ready"].status, got["Ready"].reason) == ("True", "Exported")
        assert (got["Conflict"].status, got["Conflict"].reason) == ("False", "NoConflicts")


def scenario_views() -> list[mcs.ServiceView]:
    everything = {f: val for f, val, _ in ONE_FIELD_CONFLICTS}
    return [
        view(),
        view(export("c0")),
        view(export("c0", 0), export("c1", 1, **everything)),
        view(export("c0", validity="NoService", ports=())),
        view(export("c0", validity="InvalidServiceType", ports=())),
        view(export("c0", 0), export("c1", 1), admitted={"c1"}),
        view(export("c0", 0), admitted=set()),
        view(export("c0", 0), export("c1", 1, validity="NoService")),
    ]


@pytest.mark.parametrize("v", scenario_views())
def test_every_condition_fits_the_crd(v: mcs.ServiceView) -> None:
    for conds in v.export_conditions.values():
        assert [c.type for c in conds] == ["Valid", "Ready", "Conflict"]
        for c in conds:
            assert REASON_PATTERN.match(c.reason), c
            assert 1 <= len(c.reason) <= 1024
            assert len(c.message) <= 32768
            assert c.status in ("True", "False", "Unknown")


# --- §6 lifecycle: invalid exports, staleness --------------------------------------------


def test_no_service_makes_the_export_invalid_and_contributes_nothing() -> None:
    v = view(export("c0", 0, validity="NoService", ports=()), export("c1", 1))
    assert v.clusters == ("c1",)
    assert v.winner == "c1"
    got = conditions(v, "c0")
    assert (got["Valid"].status, got["Valid"].reason) == ("False", "NoService")
    assert NAME in got["Valid"].message and NS in got["Valid"].message
    assert (got["Ready"].status, got["Ready"].reason) == ("False", "Failed")
    assert (got["Conflict"].status, got["Conflict"].reason) == ("False", "NoConflicts")
    # an invalid export's (empty) ports are no port conflict for the others
    assert v.conflict_reasons == ()


def test_no_service_on_the_only_exporter_removes_the_import() -> None:
    v = view(export("c0", validity="NoService", ports=()))
    assert v.spec is None
    assert v.winner is None
    assert conditions(v, "c0")["Valid"].reason == "NoService"


def test_an_invalid_oldest_export_does_not_win() -> None:
    v = view(
        export("c0", 0, validity="InvalidServiceType", ports=()),
        export("c1", 1, service_type="Headless"),
    )
    assert v.winner == "c1"
    assert spec_of(v).type == "Headless"


def test_a_stale_cluster_keeps_defining_the_import_but_contributes_no_endpoints() -> None:
    v = view(export("c0", 0), export("c1", 1, service_type="Headless"), admitted={"c1"})
    assert v.clusters == ("c1",)
    # The silent oldest export keeps precedence: a short silence does not flip the import.
    assert v.winner == "c0"
    assert spec_of(v).type == "ClusterSetIP"
    assert v.conflict_reasons == ("TypeConflict",)
    got = conditions(v, "c0")
    assert (got["Valid"].status, got["Valid"].reason) == ("True", "Valid")
    assert (got["Ready"].status, got["Ready"].reason) == ("False", "Pending")
    assert "heartbeat" in got["Ready"].message
    assert got["Conflict"].status == "True"


def test_the_import_stays_without_endpoints_when_no_exporter_is_admitted() -> None:
    v = view(export("c0", 0), export("c1", 1), admitted=set())
    assert v.spec is not None
    assert v.clusters == ()
    assert {conditions(v, c)["Ready"].reason for c in ("c0", "c1")} == {"Pending"}


def test_a_cluster_that_is_not_a_member_does_not_define_the_import() -> None:
    v = mcs.view(NS, NAME, {"c0": export("c0", 0), "c1": export("c1", 1)}, members={"c1"})
    assert v.winner == "c1" and v.clusters == ("c1",)
    got = conditions(v, "c0")
    assert (got["Ready"].status, got["Ready"].reason) == ("False", "Failed")
    assert "member" in got["Ready"].message
    assert mcs.view(NS, NAME, {"c0": export("c0", 0)}, members=set()).spec is None


def test_admitting_everyone_is_the_same_as_no_staleness_policy() -> None:
    c0, c1 = export("c0", 0), export("c1", 1, service_type="Headless")
    assert view(c0, c1, admitted={"c0", "c1"}) == view(c0, c1)


def test_status_clusters_lists_the_contributors_sorted() -> None:
    v = view(
        export("c2", 0), export("c0", 1), export("c1", 2), export("c3", 3, validity="NoService")
    )
    assert v.clusters == ("c0", "c1", "c2")
    assert set(v.export_conditions) == {"c0", "c1", "c2", "c3"}


def test_the_view_names_its_service() -> None:
    v = view(export("c0"))
    assert (v.namespace, v.name) == (NS, NAME)
