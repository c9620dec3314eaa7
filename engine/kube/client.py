"""A thin, dict-typed client over kubernetes-asyncio's ``ApiClient`` (its transport and auth).

It speaks raw JSON: get, list, server-side apply, delete and watch, for any resource described by
a :class:`~engine.kube.resources.Resource`. Raw dicts are decoded with msgspec; kubernetes-asyncio's
model classes are not used on the hot path. API errors become :mod:`engine.core.errors` types with
the original exception chained: 429, 5xx and connection failures are transient, the rest
permanent.
"""

from __future__ import annotations

import asyncio
import builtins
import os
from collections.abc import AsyncIterator, Callable, Iterable
from importlib import resources as package_files
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import yaml
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from engine.core.errors import PermanentError, TransientError
from engine.kube.resources import CRDS, FIELD_MANAGER, Obj, Resource


class KubeError(PermanentError):
    """The API refused a request for good (4xx other than 429)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(f"Kubernetes API error {status}: {message}")


class KubeTransientError(TransientError):
    """The API failed in a way worth retrying (429, 5xx, connection trouble)."""


class NotFound(KubeError):
    pass


class Gone(KubeError):
    """The resourceVersion a watch resumed from is too old: relist."""


def _error(status: int, body: bytes | str) -> Exception:
    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    try:
        message = str(msgspec.json.decode(text).get("message", text))
    except (msgspec.DecodeError, AttributeError):
        message = text[:500]
    if status == 404:
        return NotFound(status, message)
    if status == 410:
        return Gone(status, message)
    if status == 429 or status >= 500 or status == 0:
        return KubeTransientError(f"Kubernetes API error {status}: {message}")
    return KubeError(status, message)


async def load_client(
    kubeconfig: str | Path | None = None, context: str | None = None
) -> client.ApiClient:
    """An ApiClient from a kubeconfig file, else the in-cluster service account."""
    cfg = client.Configuration()
    if kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ:
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    else:
        await config.load_kube_config(
            config_file=str(kubeconfig) if kubeconfig else None,
            context=context,
            client_configuration=cfg,
        )
    return client.ApiClient(configuration=cfg)


class Kube:
    """Raw-JSON access to one cluster's API."""

    def __init__(self, api: client.ApiClient, field_manager: str = FIELD_MANAGER) -> None:
        self.api = api
        self.field_manager = field_manager
        self.writes = 0

    async def request(
        self,
        method: str,
        path: str,
        query: Iterable[tuple[str, str]] = (),
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | aiohttp.ClientTimeout | None = 30.0,
    ) -> Obj:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            resp = await self.api.call_api(
                path,
                method,
                query_params=list(query),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=timeout,
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise KubeTransientError(f"Kubernetes API unreachable: {exc!r}") from exc
        except ApiException as exc:
            raise _error(exc.status or 0, exc.body or exc.reason or "") from exc
        try:
            data = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubeTransientError(f"Kubernetes API read failed: {exc!r}") from exc
        finally:
            resp.release()
        if not 200 <= resp.status <= 299:
            raise _error(resp.status, data)
        result: Obj = msgspec.json.decode(data) if data else {}
        return result

    async def probe(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        """GET a non-JSON endpoint such as ``/readyz``; (status, body); status 0 if unreachable."""
        try:
            resp = await self.api.call_api(
                path,
                "GET",
                header_params={"Accept": "*/*"},
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=timeout,
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return 0, repr(exc)
        except ApiException as exc:
            return int(exc.status or 0), str(exc.reason or "")
        try:
            return resp.status, (await resp.text())[:500]
        except (aiohttp.ClientError, TimeoutError) as exc:
            return 0, repr(exc)
        finally:
            resp.release()

    async def get(self, res: Resource, namespace: str | None, name: str) -> Obj | None:
        try:
            return await self.request("GET", res.path(namespace, name))
        except NotFound:
            return None

    async def list(
        self,
        res: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> tuple[list[Obj], str]:
        """All objects (paged), and the list's resourceVersion to watch from."""
        items: list[Obj] = []
        rv = await self.list_pages(res, items.extend, namespace, label_selector)
        return items, rv

    async def list_pages(
        self,
        res: Resource,
        take: Callable[[builtins.list[Obj]], object],
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> str:
        """List in pages of 500, handing each page's objects to ``take`` as it arrives (so a
        caller that keeps less than the objects never holds them all); the list's
        resourceVersion to watch from."""
        cont = ""
        while True:
            q = [("limit", "500")]
            if label_selector:
                q.append(("labelSelector", label_selector))
            if cont:
                q.append(("continue", cont))
            page = await self.request("GET", res.path(namespace), q)
            items = page.get("items") or []
            for item in items:
                item.setdefault("apiVersion", res.api_version)
                item.setdefault("kind", res.kind)
            take(items)
            cont = page.get("metadata", {}).get("continue", "")
            if not cont:
                return str(page.get("metadata", {}).get("resourceVersion", ""))

    async def apply(self, res: Resource, obj: Obj, subresource: str | None = None) -> Obj:
        """Server-side apply ``obj`` (forcing ownership) under this client's field manager."""
        meta = obj["metadata"]
        self.writes += 1
        return await self.request(
            "PATCH",
            res.path(meta.get("namespace"), meta["name"], subresource),
            [("fieldManager", self.field_manager), ("force", "true")],
            body=obj,
            content_type="application/apply-patch+yaml",
        )

    async def create(self, res: Resource, obj: Obj) -> Obj:
        self.writes += 1
        return await self.request("POST", res.path(obj["metadata"].get("namespace")), body=obj)

    async def delete(self, res: Resource, namespace: str | None, name: str) -> bool:
        """Delete; False if it was already gone."""
        self.writes += 1
        try:
            await self.request("DELETE", res.path(namespace, name))
        except NotFound:
            return False
        return True

    async def watch(
        self,
        res: Resource,
        resource_version: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[tuple[str, Obj]]:
        """Stream ``(type, object)`` from ``resource_version``; BOOKMARKs included.

        Ends when the server closes the watch; raises :class:`Gone` when the version is too old.
        """
        q = [
            ("watch", "true"),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout_seconds)),
        ]
        if label_selector:
            q.append(("labelSelector", label_selector))
        try:
            resp = await self.api.call_api(
                res.path(namespace),
                "GET",
                query_params=q,
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=10, sock_read=timeout_seconds + 30
                ),
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise KubeTransientError(f"watch failed to start: {exc!r}") from exc
        except ApiException as exc:
            raise _error(exc.status or 0, exc.body or "") from exc
        try:
            if resp.status != 200:
                raise _error(resp.status, await resp.read())
            while True:
                try:
                    line = await resp.content.readline()
                except (aiohttp.ClientError, TimeoutError) as exc:
                    raise KubeTransientError(f"watch broke: {exc!r}") from exc
                if not line:
                    return
                event = msgspec.json.decode(line)
                etype = event.get("type", "")
                obj = event.get("object", {})
                if etype == "ERROR":
                    raise _error(int(obj.get("code", 500)), msgspec.json.encode(obj))
                yield etype, obj
        finally:
            resp.release()


# --- CRDs ----------------------------------------------------------------------------------


def crd_documents() -> list[Obj]:
    """The CRDs mcsync needs, from the installed package (or the source tree)."""
    tree = Path(__file__).resolve().parents[2] / "deploy" / "crds"
    if tree.is_dir():
        files = sorted(tree.glob("*.yaml"))
        texts = [f.read_text() for f in files]
    else:  # pragma: no cover - installed wheel
        pkg = package_files.files("engine") / "_crds"
        texts = [
            p.read_text()
            for p in sorted(pkg.iterdir(), key=lambda p: p.name)
            if p.name.endswith(".yaml")
        ]
    docs: list[Obj] = []
    for text in texts:
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


async def install_crds(kube: Kube, timeout: float = 60.0) -> None:
    """Apply every CRD and wait until each is Established."""
    docs = crd_documents()
    for doc in docs:
        await kube.apply(CRDS, doc)
    deadline = asyncio.get_running_loop().time() + timeout
    for doc in docs:
        name = doc["metadata"]["name"]
        while True:
            crd = await kube.get(CRDS, None, name)
            conds = ((crd or {}).get("status") or {}).get("conditions") or []
            if any(c["type"] == "Established" and c["status"] == "True" for c in conds):
                break
            if asyncio.get_running_loop().time() > deadline:
                raise TransientError(f"CRD {name} not established after {timeout}s")
            await asyncio.sleep(0.1)
