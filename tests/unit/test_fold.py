"""Folding the log: determinism, order, redelivery, refusals and the lifecycle of keys.

Every subscriber folds the same log and must end with the same state, whatever the delivery
accidents (redelivery, a restart between two envelopes) and whatever the interleaving of keys
that the log does not order relative to each other. The histories generated here look like a
real log: a few clusters, services with names that need escaping, strictly increasing stream
sequences, subjects built with :mod:`engine.subjects` and events whose cluster is the subject's.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Hashable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core import events as ev
from engine.core import fold, inventory, mcs, subjects

SET = "prod"
CLUSTERS = ("east", "west", "north")
SERVICES = (("shop", "cart"), ("shop", "web.v2"), ("ops", "db*1"))
SLICES = ("cart-1", "x.y", "z")
LEASES = ("leader", "db.primary")
T0 = datetime(2026, 5, 1, 10, 0, 0, tzinfo=UTC)

ALL_KINDS = frozenset({"export", "slice", "cluster", "heartbeat", "sync", "lease"})

props = settings(max_examples=80, deadline=None)

# --- strategies ---------------------------------------------------------------------------

Step = tuple[str, ev.AnyEvent]


def _export_step(cluster: str) -> st.SearchStrategy[Step]:
    def build(key: tuple[str, str], upsert: bool, age: int, headless: bool, port: int) -> Step:
        ns, name = key
        subject = subjects.export(SET, cluster, ns, name)
        if not upsert:
            return subject, ev.ExportWithdrawn(cluster=cluster, namespace=ns, name=name)
        return subject, ev.ExportUpserted(
            cluster=cluster,
            namespace=ns,
            name=name,
            uid=f"{cluster}-{ns}-{name}",
            created=T0 + timedelta(seconds=age),
            service_type="Headless" if headless else "ClusterSetIP",
            ports=(ev.Port(port=port, name="http"),),
            exported_labels={"from": cluster},
        )

    return st.builds(
        build,
        st.sampled_from(SERVICES),
        st.booleans(),
        st.integers(0, 3),
        st.booleans(),
        st.sampled_from([80, 8080]),
    )


def _slice_step(cluster: str) -> st.SearchStrategy[Step]:
    def build(key: tuple[str, str], slice_name: str, upsert: bool, ips: list[str]) -> Step:
        ns, service = key
        subject = subjects.endpoint_slice(SET, cluster, ns, service, slice_name)
        if not upsert:
            return subject, ev.SliceRemoved(
                cluster=cluster, namespace=ns, service=service, name=slice_name
            )
        return subject, ev.SliceUpserted(
            cluster=cluster,
            namespace=ns,
            service=service,
            name=slice_name,
            address_type="IPv4",
            endpoints=tuple(ev.Endpoint(addresses=(ip,), ready=True) for ip in ips),
            ports=(ev.EndpointPort(port=8080, name="http"),),
        )

    return st.builds(
        build,
        st.sampled_from(SERVICES),
        st.sampled_from(SLICES),
        st.booleans(),
        st.lists(st.sampled_from(["10.0.0.1", "10.0.0.2", "10.0.0.3"]), max_size=2, unique=True),
    )


def _cluster_step(cluster: str, with_left: bool) -> st.SearchStrategy[Step]:
    subject = subjects.cluster(SET, cluster)
    choices = ["joined", "updated", "left"] if with_left else ["joined", "updated"]

    def build(what: str, version: str) -> Step:
        if what == "left":
            return subject, ev.ClusterLeft(cluster=cluster, clusterset=SET)
        kind = ev.ClusterJoined if what == "joined" else ev.ClusterUpdated
        return subject, kind(
            cluster=cluster,
            clusterset=SET,
            properties={"cluster.clusterset.k8s.io": cluster, "clusterset.k8s.io": SET},
            kubernetes_version=version,
        )

    return st.builds(build, st.sampled_from(choices), st.sampled_from(["v1.36.0", "v1.36.1"]))


def _heartbeat_step(cluster: str) -> st.SearchStrategy[Step]:
    return st.builds(
        lambda health: (
            subjects.heartbeat(SET, cluster),
            ev.Heartbeat(cluster=cluster, health=health),
        ),
        st.sampled_from(["Healthy", "Unhealthy"]),
    )


def _sync_step(cluster: str) -> st.SearchStrategy[Step]:
    return st.builds(
        lambda epoch: (
            subjects.sync(SET, cluster),
            ev.SnapshotComplete(cluster=cluster, epoch=epoch),
        ),
        st.integers(1, 3),
    )


def _lease_step(cluster: str) -> st.SearchStrategy[Step]:
    def build(name: str, what: str, token: int) -> Step:
        subject = subjects.lease(SET, cluster, name)
        holder = f"{cluster}-pod"
        if what == "released":
            return subject, ev.LeaseReleased(cluster=cluster, name=name, holder=holder, token=token)
        kind = ev.LeaseAcquired if what == "acquired" else ev.LeaseRenewed
        return subject, kind(
            cluster=cluster, name=name, holder=holder, duration_seconds=15.0, token=token
        )

    return st.builds(
        build,
        st.sampled_from(LEASES),
        st.sampled_from(["acquired", "renewed", "released"]),
        st.integers(1, 5),
    )


def steps(kinds: frozenset[str], with_left: bool) -> st.SearchStrategy[Step]:
    per_cluster: list[Callable[[str], st.SearchStrategy[Step]]] = []
    if "export" in kinds:
        per_cluster += [_export_step, _export_step]  # exports are the common case
    if "slice" in kinds:
        per_cluster.append(_slice_step)
    if "cluster" in kinds:
        per_cluster.append(lambda c: _cluster_step(c, with_left))
    if "heartbeat" in kinds:
        per_cluster.append(_heartbeat_step)
    if "sync" in kinds:
        per_cluster.append(_sync_step)
    if "lease" in kinds:
        per_cluster.append(_lease_step)
    return st.sampled_from(CLUSTERS).flatmap(
        lambda c: st.one_of(*(make(c) for make in per_cluster))
    )


@st.composite
def histories(
    draw: st.DrawFn,
    kinds: frozenset[str] = ALL_KINDS,
    *,
    with_left: bool = True,
    min_size: int = 0,
    max_size: int = 40,
) -> list[fold.Envelope]:
    """A log as a subscriber reads it: strictly increasing sequences (gaps are other streams'
    subjects the consumer filters out), storage times that follow the sequence."""
    picked = draw(st.lists(steps(kinds, with_left), min_size=min_size, max_size=max_size))
    seq = draw(st.integers(1, 5))
    envelopes: list[fold.Envelope] = []
    for subject, event in picked:
        envelopes.append(fold.Envelope(seq, subject, T0 + timedelta(seconds=seq), event))
        seq += draw(st.integers(1, 3))
    return envelopes


def order_domain_by_subject(env: fold.Envelope) -> Hashable:
    """The order the log guarantees per key. A lease is one sequence across every cluster's
    subject of it (the compare-and-set on the wildcard), so its domain is that wildcard."""
    parsed = subjects.parse(env.subject)
    if parsed.kind == "lease":
        return subjects.lease_any_cluster(parsed.clusterset, parsed.parts[0])
    return env.subject


def order_domain_by_cluster(env: fold.Envelope) -> Hashable:
    """One publisher writes all of a cluster's subjects in order (ClusterLeft included)."""
    parsed = subjects.parse(env.subject)
    if parsed.kind == "lease":
        return order_domain_by_subject(env)
    return parsed.cluster


def interleave(
    data: st.DataObject,
    history: list[fold.Envelope],
    domain: Callable[[fold.Envelope], Hashable],
) -> list[fold.Envelope]:
    """Any interleaving of ``history`` that keeps the order within each domain."""
    order = data.draw(st.permutations([domain(e) for e in history]))
    queues: dict[Hashable, deque[fold.Envelope]] = defaultdict(deque)
    for env in history:
        queues[domain(env)].append(env)
    return [queues[d].popleft() for d in order]


def folded(envelopes: list[fold.Envelope]) -> fold.ClusterSetState:
    return fold.fold(fold.ClusterSetState(), envelopes)


def last_per_subject(history: list[fold.Envelope]) -> list[fold.Envelope]:
    """What a JetStream consumer with ``DeliverPolicy.LAST_PER_SUBJECT`` delivers."""
    last: dict[str, fold.Envelope] = {}
    for env in history:
        last[env.subject] = env
    return sorted(last.values(), key=lambda e: e.seq)


# --- properties ---------------------------------------------------------------------------


@props
@given(histories())
def test_fold_is_deterministic(history: list[fold.Envelope]) -> None:
    a, b = folded(history), folded(list(history))
    assert a.snapshot() == b.snapshot()
    assert a.counters == b.counters
    assert a.position == b.position


@props
@given(histories(), st.data())
def test_any_interleaving_that_keeps_each_subjects_order_gives_the_same_snapshot(
    history: list[fold.Envelope], data: st.DataObject
) -> None:
    shuffled = interleave(data, history, order_domain_by_subject)
    assert folded(shuffled).snapshot() == folded(history).snapshot()


@props
@given(histories(), st.data())
def test_any_interleaving_that_keeps_each_clusters_order_gives_the_same_snapshot(
    history: list[fold.Envelope], data: st.DataObject
) -> None:
    # ClusterLeft is a membership flag on the cluster subject: each cluster's order is
    # enough, and so is each subject's (the property above now covers leaves too).
    shuffled = interleave(data, history, order_domain_by_cluster)
    assert folded(shuffled).snapshot() == folded(history).snapshot()


@props
@given(histories(), st.data())
def test_redelivered_envelopes_change_nothing(
    history: list[fold.Envelope], data: st.DataObject
) -> None:
    with_duplicates = list(history)
    duplicates = 0
    for env in history:
        if data.draw(st.booleans()):
            # redelivered any time after the original (JetStream redelivers, never earlier)
            at = data.draw(st.integers(with_duplicates.index(env) + 1, len(with_duplicates)))
            with_duplicates.insert(at, env)
            duplicates += 1
    once, twice = folded(history), folded(with_duplicates)
    assert twice.snapshot() == once.snapshot()
    assert twice.counters.redelivered == once.counters.redelivered + duplicates
    assert twice.counters.applied == once.counters.applied


@props
@given(histories())
def test_folding_the_whole_history_again_is_a_no_op(history: list[fold.Envelope]) -> None:
    state = folded(history)
    before = state.snapshot()
    assert not any(fold.apply(state, env) for env in history)
    assert state.snapshot() == before
    assert state.counters.redelivered == len(history)


@props
@given(histories(), st.data())
def test_folding_a_prefix_then_the_rest_equals_folding_the_whole(
    history: list[fold.Envelope], data: st.DataObject
) -> None:
    cut = data.draw(st.integers(0, len(history)))
    state = folded(history[:cut])
    fold.fold(state, history[cut:])
    whole = folded(history)
    assert state.snapshot() == whole.snapshot()
    assert state.counters == whole.counters
    assert state.position == whole.position == max((e.seq for e in history), default=0)


@props
@given(histories(ALL_KINDS))
def test_bootstrap_from_the_last_event_per_subject_equals_the_full_replay(
    history: list[fold.Envelope],
) -> None:
    # The catch-up promise of DESIGN.md: restart costs live keys, not history.
    assert folded(last_per_subject(history)).snapshot() == folded(history).snapshot()


@props
@given(histories(min_size=1), st.data())
def test_an_event_speaking_for_another_cluster_is_refused_and_counted(
    history: list[fold.Envelope], data: st.DataObject
) -> None:
    cut = data.draw(st.integers(0, len(history) - 1))
    state = folded(history[:cut])
    genuine = history[cut]
    impostor = data.draw(st.sampled_from([c for c in CLUSTERS if c != genuine.event.cluster]))
    forged = fold.Envelope(
        genuine.seq,
        genuine.subject,
        genuine.time,
        msgspec.structs.replace(genuine.event, cluster=impostor),
    )
    before, last_seq = state.snapshot(), dict(state.last_seq)
    refused = state.counters.refused
    assert fold.apply(state, forged) is False
    assert state.snapshot() == before
    assert state.last_seq == last_seq  # the refusal does not burn the sequence
    assert state.counters.refused == refused + 1
    # the genuine event at that sequence still applies
    assert fold.apply(state, genuine) is True


# --- refusals, by example -----------------------------------------------------------------

UPSERT = ev.ExportUpserted(cluster="east", namespace="shop", name="cart", uid="u", created=T0)
SLICE = ev.SliceUpserted(
    cluster="east", namespace="shop", service="cart", name="cart-1", address_type="IPv4"
)
LEASE = ev.LeaseAcquired(cluster="east", name="leader", holder="p", duration_seconds=15.0, token=1)

WRONG_SUBJECTS: list[tuple[str, Any]] = [
    (
        "export event on a slice subject",
        (subjects.endpoint_slice(SET, "east", "shop", "cart", "x"), UPSERT),
    ),
    ("export event on the cluster subject", (subjects.cluster(SET, "east"), UPSERT)),
    ("export event under another name", (subjects.export(SET, "east", "shop", "other"), UPSERT)),
    ("export event in another namespace", (subjects.export(SET, "east", "ops", "cart"), UPSERT)),
    (
        "withdrawal of another key",
        (
            subjects.export(SET, "east", "shop", "other"),
            ev.ExportWithdrawn(cluster="east", namespace="shop", name="cart"),
        ),
    ),
    ("slice event on an export subject", (subjects.export(SET, "east", "shop", "cart"), SLICE)),
    (
        "slice of another service",
        (subjects.endpoint_slice(SET, "east", "shop", "web", "cart-1"), SLICE),
    ),
    (
        "slice under another name",
        (subjects.endpoint_slice(SET, "east", "shop", "cart", "cart-2"), SLICE),
    ),
    (
        "heartbeat on the cluster subject",
        (subjects.cluster(SET, "east"), ev.Heartbeat(cluster="east")),
    ),
    ("heartbeat on the sync subject", (subjects.sync(SET, "east"), ev.Heartbeat(cluster="east"))),
    (
        "sync marker on the heartbeat subject",
        (subjects.heartbeat(SET, "east"), ev.SnapshotComplete(cluster="east", epoch=1)),
    ),
    (
        "cluster event on the heartbeat subject",
        (subjects.heartbeat(SET, "east"), ev.ClusterJoined(cluster="east", clusterset=SET)),
    ),
    (
        "leaving on the sync subject",
        (subjects.sync(SET, "east"), ev.ClusterLeft(cluster="east", clusterset=SET)),
    ),
    ("lease event on the cluster subject", (subjects.cluster(SET, "east"), LEASE)),
    ("lease event on another lease's subject", (subjects.lease(SET, "east", "other"), LEASE)),
    ("export event on a foreign subject", ("other.prod.east.export.shop.cart", UPSERT)),
    ("export event on a wildcard", ("mcsync.prod.east.export.shop.*", UPSERT)),
    ("export event on a non-canonical subject", ("mcsync.prod.east.export.shop.~63art", UPSERT)),
]


@pytest.mark.parametrize(
    ("subject", "event"), [case for _, case in WRONG_SUBJECTS], ids=[n for n, _ in WRONG_SUBJECTS]
)
def test_an_event_on_the_wrong_kind_of_subject_is_refused(subject: str, event: Any) -> None:
    state = fold.ClusterSetState()
    before = state.snapshot()
    assert fold.apply(state, fold.Envelope(1, subject, T0, event)) is False
    assert state.counters.refused == 1
    assert state.counters.applied == 0
    assert state.snapshot() == before
    assert state.last_seq == {}


def test_a_redelivery_with_the_same_sequence_is_counted_not_applied() -> None:
    state = fold.ClusterSetState()
    env = fold.Envelope(7, subjects.export(SET, "east", "shop", "cart"), T0, UPSERT)
    assert fold.apply(state, env) is True
    newer = msgspec.structs.replace(UPSERT, uid="other")
    assert fold.apply(state, fold.Envelope(7, env.subject, T0, newer)) is False
    assert fold.apply(state, fold.Envelope(3, env.subject, T0, newer)) is False
    assert state.exports[("shop", "cart")]["east"].uid == "u"
    assert state.counters == fold.Counters(applied=1, redelivered=2, refused=0)


def test_sequences_are_per_subject_so_an_older_sequence_on_another_subject_applies() -> None:
    state = fold.ClusterSetState()
    fold.apply(state, fold.Envelope(9, subjects.export(SET, "east", "shop", "cart"), T0, UPSERT))
    west = msgspec.structs.replace(UPSERT, cluster="west")
    assert fold.apply(
        state, fold.Envelope(4, subjects.export(SET, "west", "shop", "cart"), T0, west)
    )
    assert state.position == 9


# --- the lifecycle of keys ----------------------------------------------------------------


def _log(*items: tuple[str, ev.AnyEvent]) -> list[fold.Envelope]:
    return [
        fold.Envelope(i + 1, subject, T0 + timedelta(seconds=i), event)
        for i, (subject, event) in enumerate(items)
    ]


def _upsert(cluster: str, ns: str = "shop", name: str = "cart") -> tuple[str, ev.AnyEvent]:
    return subjects.export(SET, cluster, ns, name), msgspec.structs.replace(
        UPSERT, cluster=cluster, namespace=ns, name=name
    )


def _withdraw(cluster: str, ns: str = "shop", name: str = "cart") -> tuple[str, ev.AnyEvent]:
    return subjects.export(SET, cluster, ns, name), ev.ExportWithdrawn(
        cluster=cluster, namespace=ns, name=name
    )


def _slice(cluster: str, name: str = "cart-1") -> tuple[str, ev.AnyEvent]:
    return subjects.endpoint_slice(SET, cluster, "shop", "cart", name), msgspec.structs.replace(
        SLICE, cluster=cluster, name=name
    )


def _slice_removed(cluster: str, name: str = "cart-1") -> tuple[str, ev.AnyEvent]:
    return subjects.endpoint_slice(SET, cluster, "shop", "cart", name), ev.SliceRemoved(
        cluster=cluster, namespace="shop", service="cart", name=name
    )


def _joined(cluster: str, version: str = "v1.36.0") -> tuple[str, ev.AnyEvent]:
    return subjects.cluster(SET, cluster), ev.ClusterJoined(
        cluster=cluster, clusterset=SET, kubernetes_version=version
    )


def _left(cluster: str) -> tuple[str, ev.AnyEvent]:
    return subjects.cluster(SET, cluster), ev.ClusterLeft(cluster=cluster, clusterset=SET)


def test_withdrawing_the_last_export_removes_the_key() -> None:
    state = folded(_log(_upsert("east"), _upsert("west"), _withdraw("east")))
    assert set(state.exports[("shop", "cart")]) == {"west"}
    fold.fold(
        state, _log(_upsert("east"), _upsert("west"), _withdraw("east"), _withdraw("west"))[3:]
    )
    assert ("shop", "cart") not in state.exports


def test_withdrawing_an_export_that_never_was_changes_nothing_but_counts() -> None:
    state = folded(_log(_withdraw("east")))
    assert state.exports == {}
    assert state.counters.applied == 1


def test_removing_the_last_slice_removes_the_key() -> None:
    state = folded(
        _log(
            _slice("east"),
            _slice("east", "cart-2"),
            _slice_removed("east"),
            _slice_removed("east", "cart-2"),
        )
    )
    assert state.slices == {}


def test_removing_one_slice_keeps_the_others() -> None:
    state = folded(
        _log(_slice("east"), _slice("west"), _slice("east", "cart-2"), _slice_removed("east"))
    )
    assert set(state.slices[("shop", "cart")]) == {"east", "west"}
    assert set(state.slices[("shop", "cart")]["east"]) == {"cart-2"}


def test_cluster_left_marks_the_membership_and_keeps_the_keys_of_its_subjects() -> None:
    state = folded(
        _log(
            _joined("east"),
            _joined("west"),
            _upsert("east"),
            _upsert("west"),
            _slice("east"),
            _slice("west"),
            _left("east"),
        )
    )
    # The keys stay as their own subjects say (the publisher tombstones them before leaving)...
    assert set(state.exports[("shop", "cart")]) == {"east", "west"}
    assert state.clusters["east"].left is True
    assert state.clusters["west"].left is False
    # ...and the merge no longer sees the cluster that left (spec §6 item 62).
    now = T0 + timedelta(seconds=7)
    admitted = inventory.admitted(state, now, timedelta(days=1), "keep")
    assert admitted == {"west"}
    v = mcs.view("shop", "cart", state.exports[("shop", "cart")], admitted)
    assert v.clusters == ("west",)


def test_rejoining_after_leaving_makes_the_cluster_a_member_again() -> None:
    state = folded(_log(_joined("east"), _left("east"), _joined("east", "v1.36.1")))
    record = state.clusters["east"]
    assert record.left is False
    assert record.info is not None and record.info.kubernetes_version == "v1.36.1"


def test_an_update_replaces_the_cluster_info() -> None:
    update = (
        subjects.cluster(SET, "east"),
        ev.ClusterUpdated(cluster="east", clusterset=SET, kubernetes_version="v1.36.1"),
    )
    state = folded(_log(_joined("east"), update))
    assert isinstance(state.clusters["east"].info, ev.ClusterUpdated)


def test_heartbeats_and_sync_markers_are_kept_per_cluster() -> None:
    state = folded(
        _log(
            (subjects.heartbeat(SET, "east"), ev.Heartbeat(cluster="east")),
            (subjects.sync(SET, "east"), ev.SnapshotComplete(cluster="east", epoch=2)),
            (subjects.heartbeat(SET, "east"), ev.Heartbeat(cluster="east", health="Unhealthy")),
        )
    )
    record = state.clusters["east"]
    assert record.snapshot_epoch == 2
    assert record.last_heartbeat is not None and record.last_heartbeat.health == "Unhealthy"
    assert record.last_heartbeat_at == T0 + timedelta(seconds=2)  # storage time, not a clock


def test_a_lease_is_one_record_across_every_clusters_subject_of_it() -> None:
    released = ev.LeaseReleased(cluster="east", name="leader", holder="p", token=1)
    west = ev.LeaseAcquired(
        cluster="west", name="leader", holder="q", duration_seconds=15.0, token=2
    )
    state = folded(
        _log(
            (subjects.lease(SET, "east", "leader"), LEASE),
            (subjects.lease(SET, "east", "leader"), released),
            (subjects.lease(SET, "west", "leader"), west),
        )
    )
    record = state.leases["leader"]
    assert record.event == west
    assert (record.seq, record.transitions) == (3, 2)


# --- last-per-subject bootstrap equals the full replay ----------------------------------


def test_bootstrap_after_a_leave_and_a_rejoin_equals_the_full_replay() -> None:
    history = _log(_joined("east"), _upsert("east"), _left("east"), _joined("east"))
    assert folded(last_per_subject(history)).snapshot() == folded(history).snapshot()


def test_bootstrap_after_a_cluster_update_equals_the_full_replay() -> None:
    update = (
        subjects.cluster(SET, "east"),
        ev.ClusterUpdated(cluster="east", clusterset=SET, kubernetes_version="v1.36.1"),
    )
    history = _log(_joined("east"), update)
    assert folded(last_per_subject(history)).snapshot() == folded(history).snapshot()
