"""A delete the apiserver fails for a moment is retried with backoff, not at every drain."""

from __future__ import annotations

import time

from nats.aio.client import Client as NATS

from engine import jetstream
from engine.core import plan
from engine.core.errors import TransientError
from subscribers.subscriber import Subscriber, SubscriberSettings


class FlakyApi:
    """Stands in for the Kubernetes client: deletes fail ``failures`` times, then succeed."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts: list[float] = []

    async def delete(self, res: object, namespace: str | None, name: str) -> bool:
        self.attempts.append(time.monotonic())
        if len(self.attempts) <= self.failures:
            raise TransientError("503 from the apiserver")
        return True


def subscriber_with_a_stale_slice(api: FlakyApi, retry_for: float) -> Subscriber:
    sub = Subscriber(
        api,  # type: ignore[arg-type]
        jetstream.EventLog(NATS(), "t"),
        "cluster-1",
        settings=SubscriberSettings(retry_for=retry_for),
    )
    labels = {plan.LABEL_SERVICE_NAME: "web"}
    meta = {"namespace": "ns", "name": "web-old", "labels": labels}
    sub.slices.cache[("ns", "web-old")] = {"metadata": meta}
    return sub


async def test_a_delete_that_fails_for_a_moment_lands_after_growing_pauses() -> None:
    api = FlakyApi(failures=3)
    sub = subscriber_with_a_stale_slice(api, retry_for=30)
    await sub._prune(("ns", "web"), {})
    assert len(api.attempts) == 4
    pauses = [b - a for a, b in zip(api.attempts, api.attempts[1:], strict=False)]
    assert pauses[0] >= 0.05 and pauses[-1] > pauses[0]
    assert ("ns", "web-old") not in sub.slices.cache
    assert ("ns", "web") not in sub.dirty
    assert sub.metrics.writes.labels("cluster-1", "EndpointSlice", "delete")._value.get() == 1


async def test_a_delete_that_keeps_failing_is_given_up_for_now_and_the_service_marked() -> None:
    api = FlakyApi(failures=1_000)
    sub = subscriber_with_a_stale_slice(api, retry_for=0.6)
    t0 = time.monotonic()
    await sub._prune(("ns", "web"), {})
    assert 0.6 <= time.monotonic() - t0 < 10
    assert 2 <= len(api.attempts) <= 8  # backoff, not a tight loop
    assert ("ns", "web") in sub.dirty  # reconciled again later
