"""A cache of one resource's objects kept current by list, then watch with resume."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Hashable, Iterator
from typing import Final, TypeVar, overload

from engine.core.errors import TransientError
from engine.kube import client as kube_client
from engine.kube.resources import Obj, ObjKey, Resource, key_of
from engine.observe import logs

IndexKey = Callable[[Obj], Hashable | None]
_T = TypeVar("_T")
_MISSING: Final = object()


class IndexedCache(dict[ObjKey, Obj]):
    """The informer's cache, with a secondary index kept current on every change.

    ``index_key(obj)`` names the group an object belongs to (None: no group); :meth:`group`
    answers the keys of one group without looking at the others. Every way the informer (and
    anyone holding the cache) adds or drops an object goes through ``__setitem__``,
    ``__delitem__`` or ``pop``, so the index cannot drift from the cache.
    """

    def __init__(self, index_key: IndexKey) -> None:
        super().__init__()
        self._index_key = index_key
        self._groups: dict[Hashable, set[ObjKey]] = {}
        self._group_of: dict[ObjKey, Hashable] = {}

    def group(self, group: Hashable) -> frozenset[ObjKey]:
        return frozenset(self._groups.get(group, ()))

    def _unindex(self, k: ObjKey) -> None:
        g = self._group_of.pop(k, None)
        if g is not None:
            members = self._groups[g]
            members.discard(k)
            if not members:
                del self._groups[g]

    def __setitem__(self, k: ObjKey, obj: Obj) -> None:
        super().__setitem__(k, obj)
        g = self._index_key(obj)
        if self._group_of.get(k) != g:
            self._unindex(k)
            if g is not None:
                self._group_of[k] = g
                self._groups.setdefault(g, set()).add(k)

    def __delitem__(self, k: ObjKey) -> None:
        super().__delitem__(k)
        self._unindex(k)

    @overload
    def pop(self, k: ObjKey, /) -> Obj: ...
    @overload
    def pop(self, k: ObjKey, default: Obj, /) -> Obj: ...
    @overload
    def pop(self, k: ObjKey, default: _T, /) -> Obj | _T: ...
    def pop(self, k: ObjKey, default: object = _MISSING, /) -> object:
        if k in self:
            obj = super().pop(k)
            self._unindex(k)
            return obj
        if default is _MISSING:
            raise KeyError(k)
        return default

    def clear(self) -> None:
        super().clear()
        self._groups.clear()
        self._group_of.clear()


class Informer:
    """List, then watch with resume, keeping a cache of one resource's objects.

    ``on_change(old, new)`` runs for every add (old None), update and delete (new None),
    including those a relist discovers. A watch that ends is resumed from the last
    resourceVersion (bookmarks included); ``410 Gone`` relists; transient failures back off
    and retry forever. ``synced`` is set after the first list.
    """

    def __init__(
        self,
        kube: kube_client.Kube,
        res: Resource,
        on_change: Callable[[Obj | None, Obj | None], None] | None = None,
        namespace: str | None = None,
        label_selector: str | None = None,
        watch_timeout: int = 240,
        index_key: IndexKey | None = None,
        drop_managed_fields: bool = False,
    ) -> None:
        self.kube = kube
        self.res = res
        self.on_change = on_change
        self.namespace = namespace
        self.label_selector = label_selector
        self.watch_timeout = watch_timeout
        self.cache: dict[ObjKey, Obj] = IndexedCache(index_key) if index_key else {}
        self.drop_managed_fields = drop_managed_fields
        """Cache objects without ``metadata.managedFields`` (for callers that never read it:
        for the objects mcsync writes it is about as large as the rest of the object)."""
        self.synced = asyncio.Event()
        self.relists = 0
        self._held: dict[ObjKey, list[tuple[Obj | None, Obj | None]]] = {}
        self._done: dict[ObjKey, int | str] = {}
        self._before: dict[ObjKey, Obj | None] = {}
        self._log = logs.get("mcsync.informer").bind(kind=res.kind)

    def get(self, namespace: str, name: str) -> Obj | None:
        return self.cache.get((namespace, name))

    def group(self, group: Hashable) -> frozenset[ObjKey]:
        """The keys of the cached objects whose ``index_key`` is ``group`` (an informer made
        without ``index_key`` has no groups): found without looking at the other objects."""
        if isinstance(self.cache, IndexedCache):
            return self.cache.group(group)
        return frozenset()

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
        self._slim(obj)
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

    def _slim(self, obj: Obj) -> None:
        if self.drop_managed_fields:
            meta = obj.get("metadata")
            if isinstance(meta, dict):
                meta.pop("managedFields", None)

    def _report(self, k: ObjKey, old: Obj | None, new: Obj | None) -> None:
        held = self._held.get(k)
        if held is not None:
            held.append((old, new))
        elif self.on_change:
            self.on_change(old, new)

    def _set(self, obj: Obj) -> None:
        self._slim(obj)
        k = key_of(obj)
        old = self.cache.get(k)
        if old is not None and _rv(old) and _rv(obj) and int(_rv(obj)) <= int(_rv(old)):
            return  # an older version arriving late, or the version we hold (our own write)
        self.cache[k] = obj
        self._report(k, old, obj)

    async def _relist(self) -> str:
        items, rv = await self.kube.list(self.res, self.namespace, self.label_selector)
        for i in items:
            self._slim(i)
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
            except kube_client.Gone:
                self._log.info("watch.gone_relisting")
                rv = ""
            except (TransientError, kube_client.KubeError) as exc:
                self._log.warning("watch.failed", error=str(exc)[:300], retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                if isinstance(exc, kube_client.KubeError):
                    rv = ""


_DELETED: Final = "deleted"


def _uid(obj: Obj) -> str:
    return str(obj.get("metadata", {}).get("uid", ""))


def _rv(obj: Obj) -> str:
    return str(obj.get("metadata", {}).get("resourceVersion", ""))
