"""Kubernetes glue shared by publishers and subscribers.

A thin, dict-typed layer over kubernetes-asyncio's ``ApiClient`` (its transport and auth) that
speaks raw JSON: get, list, server-side apply, delete and watch with resume, for any resource
described by a :class:`Resource`. Raw dicts are decoded with msgspec; kubernetes-asyncio's model
classes are not used on the hot path. API errors become :mod:`engine.errors` types with the
original exception chained: 429, 5xx and connection failures are transient, the rest permanent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import aiohttp
import msgspec
import yaml
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from engine import logs
from engine.errors import PermanentError, TransientError

Obj = dict[str, Any]
FIELD_MANAGER: Final = "mcsync"


@dataclass(frozen=True, slots=True)
class Resource:
    """Where a kind lives in the API."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, namespace: str | None = None, name: str | None = None, sub: str | None = None
    ) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{quote(namespace)}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{quote(name)}"
        if sub is not None:
            base += f"/{sub}"
        return base


NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
SERVICES = Resource("", "v1", "services", "Service")
ENDPOINT_SLICES = Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice")
SERVICE_EXPORTS = Resource("multicluster.x-k8s.io", "v1beta1", "serviceexports", "ServiceExport")
SERVICE_IMPORTS = Resource("multicluster.x-k8s.io", "v1beta1", "serviceimports", "ServiceImport")
CLUSTER_PROFILES = Resource(
    "multicluster.x-k8s.io", "v1alpha1", "clusterprofiles", "ClusterProfile"
)
CLUSTER_PROPERTIES = Resource(
    "about.k8s.io", "v1beta1", "clusterproperties", "ClusterProperty", namespaced=False
)
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease")
CRDS = Resource(
    "apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False
)


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
        self, res: Resource, namespace: str | None = None, label_selector: str | None = None
    ) -> tuple[list[Obj], str]:
        """All objects (paged), and the list's resourceVersion to watch from."""
        items: list[Obj] = []
        cont = ""
        while True:
            q = [("limit", "500")]
            if label_selector:
                q.append(("labelSelector", label_selector))
            if cont:
                q.append(("continue", cont))
            page = await self.request("GET", res.path(namespace), q)
            for item in page.get("items", []):
                item.setdefault("apiVersion", res.api_version)
                item.setdefault("kind", res.kind)
                items.append(item)
            cont = page.get("metadata", {}).get("continue", "")
            if not cont:
                return items, str(page.get("metadata", {}).get("resourceVersion", ""))

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
    tree = Path(__file__).resolve().parent.parent / "deploy" / "crds"
    if tree.is_dir():
        files = sorted(tree.glob("*.yaml"))
        texts = [f.read_text() for f in files]
    else:  # pragma: no cover - installed wheel
        pkg = resources.files("engine") / "_crds"
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


# --- informers -----------------------------------------------------------------------------

ObjKey = tuple[str, str]


def key_of(obj: Obj) -> ObjKey:
    meta = obj.get("metadata", {})
    return (str(meta.get("namespace", "")), str(meta["name"]))


class Informer:
    """List, then watch with resume, keeping a cache of one resource's objects.

    ``on_change(old, new)`` runs for every add (old None), update and delete (new None),
    including those a relist discovers. A watch that ends is resumed from the last
    resourceVersion (bookmarks included); ``410 Gone`` relists; transient failures back off
    and retry forever. ``synced`` is set after the first list.
    """

    def __init__(
        self,
        kube: Kube,
        res: Resource,
        on_change: Callable[[Obj | None, Obj | None], None] | None = None,
        namespace: str | None = None,
        label_selector: str | None = None,
        watch_timeout: int = 240,
    ) -> None:
        self.kube = kube
        self.res = res
        self.on_change = on_change
        self.namespace = namespace
        self.label_selector = label_selector
        self.watch_timeout = watch_timeout
        self.cache: dict[ObjKey, Obj] = {}
        self.synced = asyncio.Event()
        self.relists = 0
        self._held: dict[ObjKey, list[tuple[Obj | None, Obj | None]]] = {}
        self._done: dict[ObjKey, int | str] = {}
        self._before: dict[ObjKey, Obj | None] = {}
        self._log = logs.get("mcsync.informer").bind(kind=res.kind)

    def get(self, namespace: str, name: str) -> Obj | None:
        return self.cache.get((namespace, name))

    @contextlib.contextmanager
    def writing(self, namespace: str, name: str) -> Iterator[None]:
        """Hold this object's watch events while we write or delete it.

        The watch event of our own write can arrive before the API's answer does. Held events
        that the write (:meth:`observe`) or delete (:meth:`forget`) made inside the block
        account for are dropped when it ends; anything newer, and everything when the write
        failed, is reported then."""
        k = (namespace, name)
        if k in self._held:  # inside another write of the same object: that one reports
            yield
            return
        self._held[k] = []
        self._before[k] = self.cache.get(k)
        try:
            yield
        finally:
            held = self._held.pop(k, [])
            done = self._done.pop(k, None)
            self._before.pop(k, None)
            for old, new in held:
                if new is None and done == _DELETED:
                    continue  # the echo of our delete
                if new is not None and isinstance(done, int) and int(_rv(new) or 0) <= done:
                    continue  # the echo of our write, or older
                if self.on_change:
                    self.on_change(old, new)

    def observe(self, obj: Obj) -> None:
        """Record an object we just wrote (the API's answer) before its watch event comes.

        The writer knows what it wrote, so ``on_change`` is not called, and the watch event
        of this same version is not reported either (see :meth:`writing` for the race where
        it comes first): only others' changes are."""
        obj.setdefault("apiVersion", self.res.api_version)
        obj.setdefault("kind", self.res.kind)
        k = key_of(obj)
        old = self.cache.get(k)
        if old is None or not _rv(old) or not _rv(obj) or int(_rv(obj)) >= int(_rv(old)):
            self.cache[k] = obj
        if k in self._held and _rv(obj):
            self._done[k] = int(_rv(obj))

    def forget(self, namespace: str, name: str) -> None:
        """Drop an object we just deleted; like :meth:`observe`, this is not reported.

        Inside :meth:`writing`, an object someone created again meanwhile (another uid) is
        kept."""
        k = (namespace, name)
        if k in self._held:
            self._done[k] = _DELETED
            current, before = self.cache.get(k), self._before.get(k)
            if current is not None and before is not None and _uid(current) != _uid(before):
                return
        self.cache.pop(k, None)

    async def apply(self, obj: Obj, subresource: str | None = None) -> Obj:
        """Server-side apply ``obj`` with this informer's client and record the API's answer.
        Like every write through the informer, it is not reported to ``on_change``, nor is its
        watch event (see :meth:`writing`)."""
        meta = obj["metadata"]
        with self.writing(str(meta.get("namespace", "")), meta["name"]):
            result = await self.kube.apply(self.res, obj, subresource=subresource)
            self.observe(result)
        return result

    async def delete(self, namespace: str, name: str) -> bool:
        """Delete an object with this informer's client and drop it from the cache, unreported;
        False if it was already gone."""
        with self.writing(namespace, name):
            existed = await self.kube.delete(self.res, namespace, name)
            self.forget(namespace, name)
        return existed

    def _report(self, k: ObjKey, old: Obj | None, new: Obj | None) -> None:
        held = self._held.get(k)
        if held is not None:
            held.append((old, new))
        elif self.on_change:
            self.on_change(old, new)

    def _set(self, obj: Obj) -> None:
        k = key_of(obj)
        old = self.cache.get(k)
        if old is not None and _rv(old) and _rv(obj) and int(_rv(obj)) <= int(_rv(old)):
            return  # an older version arriving late, or the version we hold (our own write)
        self.cache[k] = obj
        self._report(k, old, obj)

    async def _relist(self) -> str:
        items, rv = await self.kube.list(self.res, self.namespace, self.label_selector)
        fresh = {key_of(i): i for i in items}
        for k in [k for k in self.cache if k not in fresh]:
            gone = self.cache.pop(k)
            if self.on_change:
                self.on_change(gone, None)
        for obj in items:
            old = self.cache.get(key_of(obj))
            if old is None or _rv(old) != _rv(obj):
                self.cache[key_of(obj)] = obj
                if self.on_change:
                    self.on_change(old, obj)
        self.relists += 1
        return rv

    async def run(self) -> None:
        backoff = 0.2
        rv = ""
        while True:
            try:
                if not rv:
                    rv = await self._relist()
                    self.synced.set()
                async for etype, obj in self.kube.watch(
                    self.res, rv, self.namespace, self.label_selector, self.watch_timeout
                ):
                    rv = _rv(obj) or rv
                    if etype == "BOOKMARK":
                        continue
                    obj.setdefault("apiVersion", self.res.api_version)
                    obj.setdefault("kind", self.res.kind)
                    if etype == "DELETED":
                        k = key_of(obj)
                        old = self.cache.pop(k, None)
                        if old is not None:  # None: we deleted it
                            self._report(k, old, None)
                    else:
                        self._set(obj)
                backoff = 0.2
            except Gone:
                self._log.info("watch.gone_relisting")
                rv = ""
            except (TransientError, KubeError) as exc:
                self._log.warning("watch.failed", error=str(exc)[:300], retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                if isinstance(exc, KubeError):
                    rv = ""


_DELETED: Final = "deleted"


def _uid(obj: Obj) -> str:
    return str(obj.get("metadata", {}).get("uid", ""))


def _rv(obj: Obj) -> str:
    return str(obj.get("metadata", {}).get("resourceVersion", ""))
