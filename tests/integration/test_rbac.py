"""The publisher and the subscriber run under exactly the RBAC and admission fence the
manifests grant.

cluster-1 gets the ServiceAccounts, ClusterRoles, Roles, bindings and the subscriber's
ValidatingAdmissionPolicy of ``deploy/kustomize/base`` on its real apiserver; its publisher and
subscriber then run with tokens of those ServiceAccounts (from the TokenRequest API), as they
would in pods. Exports must flow both ways with no request refused, and the attacks RBAC alone
allowed (rewriting or deleting Services and EndpointSlices mcsync does not own) are refused.
"""

from __future__ import annotations

import base64
import functools
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
import yaml

from engine import kube, runner
from engine.core import plan
from engine.kube import KubeError
from tests.conftest import ClusterSet
from tests.integration.conftest import (
    Members,
    endpoint_slice,
    eventually,
    get_import,
    hello_export,
    hello_service,
    mcs_slices,
    service,
    service_export,
)
from tests.integration.test_inventory import FAST

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_namespaces")]

BASE = Path(__file__).resolve().parents[2] / "deploy" / "kustomize" / "base"
NS = "mcsync-system"
RBAC = "rbac.authorization.k8s.io"
KINDS = {
    "ServiceAccount": kube.Resource("", "v1", "serviceaccounts", "ServiceAccount"),
    "ClusterRole": kube.Resource(RBAC, "v1", "clusterroles", "ClusterRole", namespaced=False),
    "ClusterRoleBinding": kube.Resource(
        RBAC, "v1", "clusterrolebindings", "ClusterRoleBinding", namespaced=False
    ),
    "Role": kube.Resource(RBAC, "v1", "roles", "Role"),
    "RoleBinding": kube.Resource(RBAC, "v1", "rolebindings", "RoleBinding"),
    "ValidatingAdmissionPolicy": kube.Resource(
        "admissionregistration.k8s.io",
        "v1",
        "validatingadmissionpolicies",
        "ValidatingAdmissionPolicy",
        namespaced=False,
    ),
    "ValidatingAdmissionPolicyBinding": kube.Resource(
        "admissionregistration.k8s.io",
        "v1",
        "validatingadmissionpolicybindings",
        "ValidatingAdmissionPolicyBinding",
        namespaced=False,
    ),
}


async def grant(k: kube.Kube) -> None:
    files = (
        "serviceaccounts.yaml",
        "rbac-publisher.yaml",
        "rbac-subscriber.yaml",
        "admission-subscriber.yaml",
    )
    for name in files:
        for doc in yaml.safe_load_all((BASE / name).read_text()):
            if doc:
                await k.apply(KINDS[doc["kind"]], doc)


async def token_kubeconfig(cs: ClusterSet, cluster: str, sa: str, out: Path) -> Path:
    """A kubeconfig that authenticates as ServiceAccount ``sa`` (a TokenRequest token)."""
    k = cs[cluster].kube
    resp: dict[str, Any] = await k.request(
        "POST",
        f"/api/v1/namespaces/{NS}/serviceaccounts/{sa}/token",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
              "spec": {"expirationSeconds": 3600}},
    )  # fmt: skip
    c = cs[cluster].cluster
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster,
                "cluster": {
                    "server": c.server,
                    "certificate-authority-data": base64.b64encode(c.ca_file.read_bytes()).decode(),
                },
            }
        ],
        "users": [{"name": sa, "user": {"token": resp["status"]["token"]}}],
        "contexts": [{"name": sa, "context": {"cluster": cluster, "user": sa}}],
        "current-context": sa,
    }
    path = out / f"{cluster}-{sa}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


async def test_publisher_and_subscriber_work_under_the_granted_rbac_alone(
    members: Members, namespace: str, tmp_path: Path
) -> None:
    cs = members.cs
    await grant(cs["cluster-1"].kube)
    pub_config = await token_kubeconfig(cs, "cluster-1", "mcsync-publisher", tmp_path)
    sub_config = await token_kubeconfig(cs, "cluster-1", "mcsync-subscriber", tmp_path)
    with structlog.testing.capture_logs() as logs:
        for name in ("cluster-2", "cluster-3"):
            await members.start(name, **FAST)
        for key, config, publish in (("pub", pub_config, True), ("sub", sub_config, False)):
            m = runner.Member(
                cluster="cluster-1",
                clusterset=members.clusterset_name,
                kubeconfig=config,
                nats_url=cs.nats.url,
                publish=publish,
                subscribe=not publish,
                **FAST,  # type: ignore[arg-type]
            )
            await m.start()
            await m.wait_ready(60)
            members.members[f"cluster-1-{key}"] = m

        # cluster-1's export reaches cluster-2 (its publisher reads under RBAC) ...
        await cs["cluster-1"].kube.create(kube.SERVICES, hello_service(namespace))
        await cs["cluster-1"].kube.create(kube.SERVICE_EXPORTS, hello_export(namespace))
        await eventually(lambda: get_import(cs, "cluster-2", namespace), timeout=30)

        async def valid() -> bool:
            exp = await cs["cluster-1"].kube.get(kube.SERVICE_EXPORTS, namespace, "hello")
            conds = ((exp or {}).get("status") or {}).get("conditions") or []
            return any(c["type"] == "Valid" and c["status"] == "True" for c in conds)

        await eventually(valid, timeout=30)
        # ... and cluster-2's export is materialized in cluster-1 by its fenced subscriber: the
        # derived Service and the EndpointSlices are created, then deleted when it goes.
        k2 = cs["cluster-2"].kube
        await k2.create(kube.SERVICES, service(namespace, "web"))
        await k2.create(kube.SERVICE_EXPORTS, service_export(namespace, "web"))
        await k2.create(
            kube.ENDPOINT_SLICES, endpoint_slice(namespace, "web", "web-1", ["10.2.0.1"])
        )
        await eventually(lambda: _slices(cs, namespace, "web", 1), timeout=30)
        await k2.delete(kube.SERVICE_EXPORTS, namespace, "web")
        await eventually(lambda: _slices(cs, namespace, "web", 0), timeout=30)

        async def derived_gone() -> bool:
            derived = plan.derived_name(namespace, "web")
            return await cs["cluster-1"].kube.get(kube.SERVICES, namespace, derived) is None

        await eventually(derived_gone, timeout=30)
    refused = [e for e in logs if "403" in repr(e) or "forbidden" in repr(e).lower()]
    assert refused == []


async def _slices(cs: ClusterSet, ns: str, name: str, count: int) -> bool:
    return len(await mcs_slices(cs, "cluster-1", ns, name)) == count


async def _as(
    k: kube.Kube, method: str, path: str, body: Any = None, apply: bool = False
) -> str | None:
    """Send one dry-run request; the refusal's message, or None when it was allowed."""
    query = [("dryRun", "All")]
    if apply:  # a server-side apply, as the subscriber writes
        query += [("fieldManager", "mcsync"), ("force", "true")]
    try:
        await k.request(
            method,
            path,
            query=query,
            body=body,
            content_type="application/apply-patch+yaml" if apply else "application/json",
        )
    except KubeError as exc:
        return f"{exc.status} {exc}"
    return None


def _svc(name: str, ns: str, labels: dict[str, str] | None = None) -> kube.Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
        "spec": {"ports": [{"port": 80}], "selector": {"app": "attacker"}},
    }


async def test_the_subscriber_cannot_touch_services_or_slices_it_does_not_own(
    members: Members, namespace: str, tmp_path: Path
) -> None:
    cs = members.cs
    admin = cs["cluster-1"].kube
    await grant(admin)
    # Objects that are not mcsync's: a Service in kube-system, an EndpointSlice in default.
    await admin.apply(kube.SERVICES, _svc("kube-dns", "kube-system"))
    foreign_slice = endpoint_slice("default", "kubernetes", "not-mcsync", ["10.0.0.9"])
    await admin.apply(kube.ENDPOINT_SLICES, foreign_slice)
    config = await token_kubeconfig(cs, "cluster-1", "mcsync-subscriber", tmp_path)
    api = await kube.load_client(config)
    sub = kube.Kube(api)
    owned = {plan.LABEL_MANAGED_BY: plan.MANAGED_BY}
    derived = plan.derived_name(namespace, "x")
    try:
        # The policy takes effect within a moment of its creation.
        create_unlabelled = functools.partial(
            _as, sub, "POST", f"/api/v1/namespaces/{namespace}/services", _svc("web", namespace)
        )
        await eventually(create_unlabelled, timeout=20)

        attacks = {
            "delete the kubernetes Service": await _as(
                sub, "DELETE", "/api/v1/namespaces/default/services/kubernetes"
            ),
            "re-point kube-dns": await _as(
                sub,
                "PATCH",
                "/api/v1/namespaces/kube-system/services/kube-dns",
                _svc("kube-dns", "kube-system", owned),
                apply=True,
            ),
            "create an unlabelled Service": await create_unlabelled(),
            "create a labelled Service that is not a derived one": await _as(
                sub,
                "POST",
                f"/api/v1/namespaces/{namespace}/services",
                _svc("web", namespace, owned),
            ),
            "delete an EndpointSlice it does not own": await _as(
                sub,
                "DELETE",
                "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/not-mcsync",
            ),
        }
        for attack, refusal in attacks.items():
            assert refusal is not None, f"allowed: {attack}"
            assert "mcsync subscriber may" in refusal, (attack, refusal)

        # Its own kind of object passes.
        allowed = await _as(
            sub, "POST", f"/api/v1/namespaces/{namespace}/services", _svc(derived, namespace, owned)
        )
        assert allowed is None
    finally:
        await api.close()
        await admin.delete(kube.ENDPOINT_SLICES, "default", "not-mcsync")
        await admin.delete(kube.SERVICES, "kube-system", "kube-dns")
