"""ClusterProfiles: every member of the clusterset, in every cluster (KEP-4322).

The subscriber keeps one ``ClusterProfile`` per member in a configurable namespace
(``mcsync-system`` by default), labelled ``x-k8s.io/cluster-manager=mcsync`` and
``multicluster.x-k8s.io/inventory-member-id=<cluster id>``, with the member's version, its
ClusterProperties name for name, ``ControlPlaneHealthy`` and ``Joined`` conditions, and
``accessProviders`` when the member's publisher advertises its API server (each naming the
member in the exec extension its consumers' credential plugins read). Objects are written at
``v1alpha1`` and are valid at ``v1alpha2`` (:mod:`engine.core.inventory`). A member that
leaves loses its profile everywhere. When the namespace does not exist, no profile is
written (and a warning says so) until it is created; nothing else waits for it.

Status is written only when something a consumer reads changes, so steady heartbeats cause no
API writes (the KEP asks for at most one update per 30 s per profile).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from engine import kube
from engine.core import fold, inventory, plan
from engine.core.errors import PermanentError, TransientError
from engine.observe import logs
from engine.observe.metrics import Metrics

log = logs.get("mcsync.profiles")


class ProfileSync:
    def __init__(
        self,
        k8s: kube.Kube,
        cluster: str,
        namespace: str,
        lease: timedelta,
        metrics: Metrics,
        on_change: Callable[[kube.Obj | None, kube.Obj | None], None],
    ) -> None:
        self.k8s = k8s
        self.cluster = cluster
        self.namespace = namespace
        self.lease = lease
        self.metrics = metrics
        self.informer = kube.Informer(
            k8s,
            kube.CLUSTER_PROFILES,
            on_change,
            namespace=namespace,
            label_selector=f"{inventory.LABEL_CLUSTER_MANAGER}={inventory.CLUSTER_MANAGER}",
        )
        self._warned_namespace = False
        self._log = log.bind(cluster=cluster, namespace=namespace)

    async def reconcile(
        self,
        state: fold.ClusterSetState,
        now: datetime,
        namespace_exists: bool,
        since: datetime | None = None,
    ) -> None:
        """Make the profiles match the members at ``now``."""
        if not namespace_exists:
            if not self._warned_namespace:
                self._log.warning(
                    "profiles.namespace_missing",
                    hint=f"create namespace {self.namespace!r} to get ClusterProfiles",
                )
                self._warned_namespace = True
            return
        self._warned_namespace = False
        desired = {
            c: inventory.profile(c, rec, self.namespace, now, self.lease, since)
            for c, rec in inventory.members(state).items()
        }
        stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for name, obj in sorted(desired.items()):
            observed = self.informer.get(self.namespace, name)
            spec_obj = {k: v for k, v in obj.items() if k != "status"}
            if not _spec_current(spec_obj, observed):
                observed = await self._apply(spec_obj, None) or observed
            status = dict(obj["status"])
            seen = ((observed or {}).get("status") or {}).get("conditions")
            status["conditions"] = plan.with_transition_times(status["conditions"], seen, stamp)
            status_obj = {**spec_obj, "status": status}
            status_obj.pop("spec", None)
            if (
                observed is None
                or not plan.covers(observed.get("status"), status)
                or _withdrawn_access(observed, status, self.k8s.field_manager)
            ):
                await self._apply(status_obj, "status")
        for (ns, name), _ in list(self.informer.cache.items()):
            if ns == self.namespace and name not in desired:
                try:
                    await self.informer.delete(ns, name)
                except PermanentError as exc:
                    self._log.error("profile.delete_refused", name=name, error=str(exc)[:200])
                    continue
                self.metrics.writes.labels(self.cluster, "ClusterProfile", "delete").inc()

    async def _apply(self, obj: dict[str, Any], sub: str | None) -> kube.Obj | None:
        try:
            result = await self.informer.apply(obj, subresource=sub)
        except TransientError:
            raise
        except PermanentError as exc:
            self.metrics.errors.labels(self.cluster, "apply:ClusterProfile", "false").inc()
            self._log.error(
                "profile.apply_refused", name=obj["metadata"]["name"], error=str(exc)[:300]
            )
            return None
        self.metrics.writes.labels(self.cluster, "ClusterProfile", "apply").inc()
        return result


def _spec_current(desired: dict[str, Any], observed: kube.Obj | None) -> bool:
    if observed is None:
        return False
    labels = observed.get("metadata", {}).get("labels") or {}
    want = desired["metadata"]["labels"]
    if any(labels.get(k) != v for k, v in want.items()):
        return False
    return plan.covers(observed.get("spec"), desired["spec"])


def _withdrawn_access(observed: kube.Obj, status: dict[str, Any], manager: str) -> bool:
    """Whether the profile still lists an access provider we wrote and no longer want.

    ``covers`` cannot see it when none is wanted any more (say a profile written by an older
    mcsync holds one that is refused now): the desired status then has no ``accessProviders``
    at all. Server-side apply removes the entries our field manager owns once we apply without
    them; entries another manager owns are none of our business.
    """
    wanted = {a["name"] for a in status.get("accessProviders", [])}
    for entry in observed.get("metadata", {}).get("managedFields") or []:
        if entry.get("manager") != manager or entry.get("subresource") != "status":
            continue
        owned = ((entry.get("fieldsV1") or {}).get("f:status") or {}).get("f:accessProviders")
        for key in owned or {}:
            if not key.startswith("k:"):
                continue
            try:
                name = json.loads(key[2:]).get("name")
            except (ValueError, AttributeError):
                continue
            if name not in wanted:
                return True
    return False
