"""Provisioning of the clusterset's stream and its dead-letter stream.

The stream is the log: file storage, delete and purge denied, direct get, per-message TTL and a
duplicate window. Provisioning is idempotent (create, or bring the config up to date) and waits
for a forming JetStream cluster to elect its meta leader.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Final

import nats
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext, api
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from engine.core import events as ev
from engine.core import subjects
from engine.core.errors import ConfigError, TransientError
from engine.jetstream import connection
from engine.jetstream.layout import Route
from engine.natsconfig import access

NO_SUITABLE_PEERS: Final = 10005


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """How the clusterset's stream is provisioned."""

    replicas: int = 1
    """JetStream replicas (1, or 3/5 on a clustered server)."""
    max_age_seconds: float = 0
    """Drop events older than this (0 keeps history forever)."""
    duplicate_window_seconds: float = 120
    """How long JetStream remembers ``Nats-Msg-Id``s to drop re-published events."""
    max_msg_size: int = ev.MAX_EVENT_BYTES


def dead_letter_subject(clusterset: str, cluster: str) -> str:
    return f"mcsyncdlq.{clusterset}.{cluster}"


def dead_letter_stream(clusterset: str) -> str:
    return "MCSYNCDLQ_" + subjects.stream_name(clusterset).removeprefix("MCSYNC_")


async def ensure_stream(
    js: JetStreamContext,
    clusterset: str,
    settings: StreamSettings,
    leaf_sources: tuple[str, ...] = (),
) -> None:
    """Create the clusterset's stream (and its dead-letter stream) or bring their config up.

    ``leaf_sources`` names the clusters of the leaf layout: the log sources each one's outbox
    from that cluster's JetStream domain, its subjects mapped to the cluster's own log subjects
    (so a leaf can only ever land events under its own prefix).
    """
    main = _events(
        subjects.stream_name(clusterset),
        f"mcsync event log of clusterset {clusterset}",
        subjects.all_subjects(clusterset),
        settings,
    )
    main.duplicate_window = settings.duplicate_window_seconds
    main.sources = [_outbox_source(clusterset, c) for c in sorted(set(leaf_sources))] or None
    dlq = api.StreamConfig(
        name=dead_letter_stream(clusterset),
        description=f"mcsync messages of clusterset {clusterset} that did not decode",
        subjects=[f"mcsyncdlq.{clusterset}.>"],
        storage=api.StorageType.FILE,
        num_replicas=settings.replicas,
        max_age=7 * 24 * 3600,
        max_msgs=100_000,
    )
    if not leaf_sources:
        # Provisioning without naming the leaves (a publisher starting, say) keeps the sources
        # an administrator set up.
        # (No stream yet, or not ours to read: it is created as given.)
        with contextlib.suppress(Exception):
            main.sources = (await js.stream_info(subjects.stream_name(clusterset))).config.sources
    try:
        for cfg in (main, dlq):
            await _provision(js, cfg)
    except TransientError as exc:
        raise ConfigError(
            f"could not provision stream {main.name}: {exc}. If NATS permissions forbid this "
            "user to create streams, run `mcsync stream ensure` with the admin user and start "
            "with --no-create-stream."
        ) from exc


def _events(
    name: str, description: str, subject: str, settings: StreamSettings
) -> api.StreamConfig:
    """A stream of events (the log, or a leaf's outbox): file storage, delete and purge denied,
    direct get, per-message TTL."""
    return api.StreamConfig(
        name=name,
        description=description,
        subjects=[subject],
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType.FILE,
        num_replicas=settings.replicas,
        max_age=settings.max_age_seconds,
        max_msg_size=settings.max_msg_size,
        discard=api.DiscardPolicy.OLD,
        deny_delete=True,
        deny_purge=True,
        allow_direct=True,
        allow_msg_ttl=True,
    )


def _outbox_source(clusterset: str, cluster: str) -> api.StreamSource:
    subjects.check_label("cluster id", cluster)
    return api.StreamSource(
        name=access.outbox_stream(clusterset, cluster),
        external=api.ExternalStream(api=f"$JS.{cluster}.API"),
        subject_transforms=[
            api.SubjectTransform(
                src=access.outbox_subjects(clusterset, cluster),
                dest=subjects.cluster_subjects(clusterset, cluster),
            )
        ],
    )


def _mirror(
    route: Route, settings: StreamSettings, external: api.ExternalStream
) -> api.StreamConfig:
    return api.StreamConfig(
        name=route.read_stream,
        description=f"cluster {route.cluster}'s copy of the mcsync log of {route.clusterset}",
        storage=api.StorageType.FILE,
        num_replicas=settings.replicas,
        max_age=settings.max_age_seconds,
        max_msg_size=settings.max_msg_size,
        allow_direct=True,
        mirror=api.StreamSource(name=route.log_stream, external=external),
    )


async def ensure_mirror(js: JetStreamContext, route: Route, settings: StreamSettings) -> None:
    """The mirror layout: this cluster's mirror of the log, in its own account.

    The cluster's user may create and update exactly this stream (it is only a copy of what the
    cluster may read anyway); the log and everything else stay the administrator's.
    """
    if route.layout != "mirror" or route.cluster is None:
        raise ValueError("ensure_mirror is for the mirror layout")
    external = api.ExternalStream(
        api=access.LOG_API, deliver=access.mirror_deliver(route.clusterset, route.cluster)
    )
    try:
        await _provision(js, _mirror(route, settings, external))
    except TransientError as exc:
        raise ConfigError(f"could not provision the mirror {route.read_stream}: {exc}") from exc


async def ensure_leaf(
    js: JetStreamContext, route: Route, settings: StreamSettings, hub_domain: str
) -> None:
    """The leaf layout, on the cluster's leaf server: its outbox, its mirror of the log and its
    dead-letter stream (run with the leaf administrator's credentials)."""
    if route.layout != "leaf" or route.cluster is None:
        raise ValueError("ensure_leaf is for the leaf layout")
    subjects.check_label("JetStream domain", hub_domain)
    clusterset, cluster = route.clusterset, route.cluster
    outbox = _events(
        access.outbox_stream(clusterset, cluster),
        f"events of cluster {cluster} on their way to the log of {clusterset}",
        access.outbox_subjects(clusterset, cluster),
        settings,
    )
    dlq = api.StreamConfig(
        name=dead_letter_stream(clusterset),
        description=f"mcsync messages of clusterset {clusterset} that cluster {cluster} could "
        "not decode",
        subjects=[dead_letter_subject(clusterset, cluster)],
        storage=api.StorageType.FILE,
        num_replicas=settings.replicas,
        max_age=7 * 24 * 3600,
        max_msgs=100_000,
    )
    mirror = _mirror(route, settings, api.ExternalStream(api=f"$JS.{hub_domain}.API"))
    try:
        for cfg in (outbox, dlq, mirror):
            await _provision(js, cfg)
    except TransientError as exc:
        raise ConfigError(f"could not provision the leaf streams of {cluster}: {exc}") from exc


async def _provision(js: JetStreamContext, cfg: api.StreamConfig) -> None:
    """Create (or update) one stream; a forming JetStream cluster is waited for."""
    # A JetStream cluster that just started may not have elected its meta leader yet.
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(TransientError),
        stop=stop_after_delay(30),
        wait=wait_exponential_jitter(multiplier=0.1, max=2.0, jitter=0.1),
        reraise=True,
    ):
        with attempt:
            try:
                await js.add_stream(cfg)
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code == NO_SUITABLE_PEERS:  # a forming cluster: not yet
                    raise TransientError(f"provisioning {cfg.name}: {exc}") from exc
                if exc.err_code != 10058:  # name in use with another config: update it
                    raise
                await js.update_stream(cfg)
            except Exception as exc:
                if connection.is_transient(exc):
                    raise TransientError(f"provisioning {cfg.name} failed: {exc!r}") from exc
                raise


# --- encoding ------------------------------------------------------------------------------
