"""The materialized view of cross-cluster leases: a ``coordination.k8s.io/v1`` Lease per lease,
in every cluster, so local tools (kubectl, dashboards) see the global holder.

The view is not the lock: only the log decides who holds a lease (``engine.leadership``).
``holderIdentity``, ``leaseDurationSeconds``, ``acquireTime``, ``renewTime`` and
``leaseTransitions`` (= the fencing token) are copied from the log. ``renewTime`` is refreshed at
most every third of the lease duration, so steady renewals do not flood every API server.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timedelta
from typing import Any

from engine import kube
from engine.core import events as ev
from engine.core import fold, plan
from engine.core.errors import PermanentError
from engine.observe import logs
from engine.observe.metrics import Metrics

log = logs.get("mcsync.leaseview")
ANNOTATION_NAME = "mcsync.io/lease"
_INVALID = re.compile(r"[^a-z0-9.-]+")


def object_name(lease: str) -> str:
    """A valid object name for a lease name (a hash suffix keeps altered names unique)."""
    clean = _INVALID.sub("-", lease.lower()).strip("-.")[:200] or "lease"
    if clean != lease:
        clean += "-" + hashlib.sha256(lease.encode()).hexdigest()[:8]
    return clean


def _micro(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(t: str | None) -> datetime | None:
    if not t:
        return None
    return datetime.fromisoformat(t.replace("Z", "+00:00"))


def desired(rec: fold.LeaseRecord, namespace: str, observed: kube.Obj | None) -> kube.Obj:
    e = rec.event
    spec: dict[str, Any] = {"leaseTransitions": rec.transitions}
    if isinstance(e, ev.LeaseAcquired):
        ospec = (observed or {}).get("spec") or {}
        same_tenure = (
            ospec.get("holderIdentity") == e.holder and ospec.get("leaseTransitions") == e.token
        )
        spec["holderIdentity"] = e.holder
        spec["leaseDurationSeconds"] = max(1, round(e.duration_seconds))
        spec["acquireTime"] = (
            ospec.get("acquireTime")
            if same_tenure and ospec.get("acquireTime")
            else _micro(rec.time)
        )
        spec["renewTime"] = _micro(rec.time)
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": object_name(e.name),
            "namespace": namespace,
            "labels": {plan.LABEL_MANAGED_BY: plan.MANAGED_BY},
            "annotations": {ANNOTATION_NAME: e.name},
        },
        "spec": spec,
    }


class LeaseView:
    def __init__(
        self, k8s: kube.Kube, cluster: str, namespace: str, metrics: Metrics, on_change: Any
    ) -> None:
        self.k8s = k8s
        self.cluster = cluster
        self.namespace = namespace
        self.metrics = metrics
        self.informer = kube.Informer(
            k8s,
            kube.LEASES,
            on_change,
            namespace=namespace,
            label_selector=f"{plan.LABEL_MANAGED_BY}={plan.MANAGED_BY}",
        )

    def _fresh_enough(self, want: kube.Obj, have: kube.Obj | None) -> bool:
        if have is None:
            return False
        ws, hs = want["spec"], have.get("spec") or {}
        for k in ("holderIdentity", "leaseDurationSeconds", "leaseTransitions", "acquireTime"):
            if ws.get(k) != hs.get(k):
                return False
        if "renewTime" not in ws:
            return "renewTime" not in hs or hs.get("holderIdentity") is None
        w, h = _parse(ws["renewTime"]), _parse(hs.get("renewTime"))
        if w is None or h is None:
            return False
        throttle = timedelta(seconds=max(1, int(ws.get("leaseDurationSeconds", 15))) / 3)
        return w - h < throttle

    async def reconcile(self, state: fold.ClusterSetState, namespace_exists: bool) -> None:
        if not namespace_exists:
            return
        names = set()
        for name, rec in sorted(state.leases.items()):
            oname = object_name(name)
            names.add(oname)
            have = self.informer.get(self.namespace, oname)
            want = desired(rec, self.namespace, have)
            if self._fresh_enough(want, have):
                continue
            # A release drops holderIdentity and the times: server-side apply removes the fields
            # this manager stops setting.
            try:
                await self.informer.apply(want)
            except PermanentError as exc:
                log.error("lease_view.apply_refused", lease=name, error=str(exc)[:300])
                continue
            self.metrics.writes.labels(self.cluster, "Lease", "apply").inc()
        for (ns, oname), _ in list(self.informer.cache.items()):
            if ns == self.namespace and oname not in names:
                await self.informer.delete(ns, oname)
