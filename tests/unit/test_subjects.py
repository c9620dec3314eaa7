"""The subject grammar: reversible escaping, parsing every builder, refusing foreign subjects.

Subjects are a public contract (DESIGN.md "The log: a public contract"): third-party tools
subscribe to them, and the fold trusts ``parse`` to say which cluster wrote a key and which key
it is. So one key must have exactly one subject, and anything else must be refused.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core import subjects

TOKEN = re.compile(r"^[A-Za-z0-9_~-]+$")

# Arbitrary text, with the characters NATS gives a meaning to (and our escape character) made
# common, plus unicode from every plane hypothesis likes to try.
names = st.lists(
    st.one_of(
        st.sampled_from([".", "*", ">", "~", " ", "\t", "/", "%", "~7E", "é", "ß", "漢", "🚀"]),
        st.characters(exclude_categories=["Cs"]),
    ),
    min_size=1,
    max_size=30,
).map("".join)
labels = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?\Z")

fast = settings(max_examples=200, deadline=None)


# --- escaping -----------------------------------------------------------------------------


@fast
@given(names)
def test_escape_round_trips_any_text(name: str) -> None:
    assert subjects.unescape(subjects.escape(name)) == name


@fast
@given(names)
def test_escaped_tokens_hold_only_safe_characters(name: str) -> None:
    assert TOKEN.match(subjects.escape(name))


@fast
@given(names, names)
def test_escape_is_injective(a: str, b: str) -> None:
    if a != b:
        assert subjects.escape(a) != subjects.escape(b)


@pytest.mark.parametrize(
    ("name", "token"),
    [
        ("checkout", "checkout"),
        ("web-v2_x", "web-v2_x"),
        ("web.v2", "web~2Ev2"),
        ("a*b>c", "a~2Ab~3Ec"),
        ("~", "~7E"),
        ("é", "~C3~A9"),
    ],
)
def test_escape_keeps_plain_names_readable_and_hex_escapes_the_rest(name: str, token: str) -> None:
    assert subjects.escape(name) == token
    assert subjects.unescape(token) == name


def test_an_empty_name_cannot_be_a_token() -> None:
    with pytest.raises(ValueError, match="empty"):
        subjects.escape("")


@pytest.mark.parametrize("token", ["~", "~4", "~zz", "~2e", "a~G0", "~FF"])
def test_unescape_refuses_malformed_escapes(token: str) -> None:
    # "~2e" is lower-case hex (escape never writes it); "~FF" is not UTF-8.
    with pytest.raises(ValueError):
        subjects.unescape(token)


# --- builders and parse -------------------------------------------------------------------


@fast
@given(labels, labels, names, names, names)
def test_parse_reverses_every_builder(
    clusterset: str, cluster: str, a: str, b: str, c: str
) -> None:
    cases: list[tuple[str, str, tuple[str, ...]]] = [
        (subjects.export(clusterset, cluster, a, b), "export", (a, b)),
        (subjects.endpoint_slice(clusterset, cluster, a, b, c), "slice", (a, b, c)),
        (subjects.cluster(clusterset, cluster), "cluster", ()),
        (subjects.sync(clusterset, cluster), "sync", ()),
        (subjects.heartbeat(clusterset, cluster), "heartbeat", ()),
        (subjects.lease(clusterset, cluster, a), "lease", (a,)),
    ]
    for subject, kind, parts in cases:
        parsed = subjects.parse(subject)
        assert parsed == subjects.Parsed(clusterset, cluster, kind, parts)  # type: ignore[arg-type]
        # Every token of every subject is a plain NATS token: no wildcard, no empty token.
        assert all(TOKEN.match(t) for t in subject.split("."))


def test_every_subject_of_a_cluster_is_below_its_publish_wildcard() -> None:
    prefix = subjects.cluster_subjects("prod", "east")[: -len(">")]
    for subject in [
        subjects.export("prod", "east", "shop", "cart"),
        subjects.endpoint_slice("prod", "east", "shop", "cart", "cart-x1"),
        subjects.cluster("prod", "east"),
        subjects.sync("prod", "east"),
        subjects.heartbeat("prod", "east"),
        subjects.lease("prod", "east", "leader"),
    ]:
        assert subject.startswith(prefix)
        assert subject.startswith(subjects.all_subjects("prod")[: -len(">")])


def test_the_lease_wildcard_covers_that_lease_in_every_cluster_and_nothing_else() -> None:
    wildcard = subjects.lease_any_cluster("prod", "db.primary")
    assert wildcard == "mcsync.prod.*.lease.db~2Eprimary"
    pattern = re.compile("^" + re.escape(wildcard).replace(r"\*", "[^.]+") + "$")
    assert pattern.match(subjects.lease("prod", "east", "db.primary"))
    assert pattern.match(subjects.lease("prod", "west", "db.primary"))
    assert not pattern.match(subjects.lease("prod", "east", "db"))


def test_the_grammar_reads_as_documented() -> None:
    assert subjects.export("prod", "east", "shop", "cart") == "mcsync.prod.east.export.shop.cart"
    assert (
        subjects.endpoint_slice("prod", "east", "shop", "cart", "cart-abc")
        == "mcsync.prod.east.slice.shop.cart.cart-abc"
    )
    assert subjects.cluster("prod", "east") == "mcsync.prod.east.cluster"
    assert subjects.sync("prod", "east") == "mcsync.prod.east.sync"
    assert subjects.heartbeat("prod", "east") == "mcsync.prod.east.heartbeat"
    assert subjects.lease("prod", "east", "leader") == "mcsync.prod.east.lease.leader"
    assert subjects.all_subjects("prod") == "mcsync.prod.>"
    assert subjects.cluster_subjects("prod", "east") == "mcsync.prod.east.>"
    assert subjects.stream_name("my-set") == "MCSYNC_MY_SET"


@pytest.mark.parametrize(
    "subject",
    [
        "",
        "mcsync",
        "mcsync.prod",
        "mcsync.prod.east",
        "other.prod.east.cluster",
        "MCSYNC.prod.east.cluster",
        "$JS.API.STREAM.INFO.MCSYNC_PROD",
        "mcsync.prod.east.unknown",
        "mcsync.prod.east.export.shop",  # too few name tokens
        "mcsync.prod.east.export.shop.cart.extra",  # too many
        "mcsync.prod.east.slice.shop.cart",
        "mcsync.prod.east.cluster.extra",
        "mcsync.prod.east.heartbeat.x",
        "mcsync.prod.east.sync.x",
        "mcsync.prod.east.lease",
        "mcsync.prod.east.lease.a.b",
        # wildcards are subscriptions, not keys
        "mcsync.prod.*.cluster",
        "mcsync.prod.>",
        "mcsync.*.east.cluster",
        "mcsync.prod.*.lease.leader",
        "mcsync.prod.east.export.shop.*",
        "mcsync.prod.east.export.>.cart",
        # empty tokens
        "mcsync.prod.east.export..cart",
        "mcsync..east.cluster",
        "mcsync.prod..cluster",
        # not DNS labels
        "mcsync.prod.East.cluster",
        "mcsync.prod.east_1.cluster",
        "mcsync.prod.-east.cluster",
        "mcsync.Prod.east.cluster",
        # malformed or non-canonical escapes: one key must have exactly one subject
        "mcsync.prod.east.export.shop.ca~",
        "mcsync.prod.east.export.shop.~63art",  # "cart" spelled with an escape
        "mcsync.prod.east.export.shop.~7e",  # lower-case hex
        "mcsync.prod.east.lease.~FF",  # not UTF-8
        "mcsync.prod.east.lease.é",  # raw non-ASCII where escape writes ~C3~A9
    ],
)
def test_parse_refuses_foreign_subjects(subject: str) -> None:
    with pytest.raises(ValueError):
        subjects.parse(subject)


@fast
@given(labels, labels, names, names)
def test_two_different_keys_never_share_a_subject(
    clusterset: str, cluster: str, a: str, b: str
) -> None:
    assert (
        subjects.export(clusterset, cluster, a, b) == subjects.export(clusterset, cluster, b, a)
    ) == (a == b)


# --- DNS labels ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["a", "0", "east", "cluster-1", "1cluster", "a" * 63, "a-b-c", "x9"]
)
def test_dns_labels_are_accepted(value: str) -> None:
    assert subjects.is_dns_label(value)
    assert subjects.check_label("cluster id", value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "a" * 64,
        "East",
        "-east",
        "east-",
        "east_1",
        "east.1",
        "east 1",
        "east\n",  # `$` alone would accept a trailing newline
        "*",
        ">",
        "é",
    ],
)
def test_other_values_are_not_dns_labels(value: str) -> None:
    assert not subjects.is_dns_label(value)
    with pytest.raises(ValueError, match="cluster id"):
        subjects.check_label("cluster id", value)


@fast
@given(st.text(max_size=70))
def test_dns_label_check_agrees_with_rfc_1123(value: str) -> None:
    expected = (
        0 < len(value) <= 63
        and all(ch in "abcdefghijklmnopqrstuvwxyz0123456789-" for ch in value)
        and value[0] != "-"
        and value[-1] != "-"
    )
    assert subjects.is_dns_label(value) == expected
