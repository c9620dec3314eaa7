"""A cache of one resource's objects kept current by list, then watch with resume."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Hashable, Iterator
from typing import Any, Final, Protocol

from engine.core.errors import TransientError
from engine.kube import client as kube_client
from engine.kube.resources import Obj, ObjKey, Resource, key_of
from engine.observe import logs


class Kept(Protocol):
    """What an informer made with ``keep`` caches instead of each object: anything that
    knows the object's resourceVersion (as a number) and a token of its uid."""

    @property
    def version(self) -> int: ...
    @property
    def uid(self) -> int: ...


Cached = Any
"""A cached value: the object itself, or what ``keep`` made of it (:class:`Kept`)."""
IndexKey = Callable[[Cached], Hashable | None]
_MISSING: Final = object()


class IndexedCache(dict[ObjKey, Cached]):
    """The informer's cache, with a secondary index kept current on every change.

    ``index_key(value)`` names the group a cached value belongs to (None: no group);
    :meth:`group` answers the keys of one group without looking at the others. Every way the
    informer (and anyone holding the cache) adds or drops a value goes through
    ``__setitem__``, ``__delitem__`` or ``pop``, so the index cannot drift from the cache (a
    value's group is computed again from the value when it leaves).
    """

    def __init__(self, index_key: IndexKey) -> None:
        super().__init__()
        self._index_key = index_key
        self._groups: dict[Hashable, set[ObjKey]] = {}

    def group(self, group: Hashable) -> frozenset[ObjKey]:
        return frozenset(self._groups.get(group, ()))

    def groups(self) -> list[Hashable]:
        """Every group that has a member."""
        return list(self._groups)

    def _unindex(self, k: ObjKey, old: Cached) -> None:
        g = self._index_key(old)
        if g is not None:
            members = self._groups.get(g)
            if members is not None:
                members.discard(k)
                if not members:
                    del self._groups[g]

    def __setitem__(self, k: ObjKey, value: Cached) -> None:
        old = dict.get(self, k, _MISSING)
        super().__setitem__(k, value)
        g = self._index_key(value)
        if old is not _MISSING:
            if self._index_key(old) == g:
                return
            self._unindex(k, old)
        if g is not None:
            self._groups.setdefault(g, set()).add(k)

    def __delitem__(self, k: ObjKey) -> None:
        old = dict.__getitem__(self, k)
        super().__delitem__(k)
        self._unindex(k, old)

    def pop(self, k: ObjKey, default: Any = _MISSING, /) -> Any:
        if k in self:
            old = super().pop(k)
            self._unindex(k, old)
            return old
        if default is _MISSING:
            raise KeyError(k)
        return default

    def clear(self) -> None:
        super().clear()
        self._groups.clear()


class Informer:
    """List, then watch with resume, keeping a cache of one resource's objects.

    ``on_change(old, new)`` runs for every add (old None), update and delete (new None),
    including those a relist discovers. ``keep(obj)``, if given, is what the cache holds
    instead of each object (a :class:`Kept`: for callers that need a digest of an object, not
    the object); ``on_change`` and :meth:`get` then see those, and ``index_key`` is given
    them. A watch that ends is resumed from the last
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
        keep: Callable[[Obj], Kept] | None = None,
    ) -> None:
        self.kube = kube
        self.res = res
        self.on_change = on_change
        self.namespace = namespace
        self.label_selector = label_selector
        self.watch_timeout = watch_timeout
        self.cache: dict[ObjKey, Cached] = IndexedCache(index_key) if index_key else {}
        self.keep = keep
        self.drop_managed_fields = drop_managed_fields
        """Cache objects without ``metadata.managedFields`` (for callers that never read it:
        for the objects mcsync writes it is about as large as the rest of the object)."""
        self.synced = asyncio.Event()
        self.relists = 0
        self._held: dict[ObjKey, list[tuple[Cached | None, Cached | None]]] = {}
        self._done: dict[ObjKey, int | str] = {}
        self._before: dict[ObjKey, Cached | None] = {}
        self._log = logs.get("mcsync.informer").bind(kind=res.kind)

    def get(self, namespace: str, name: str) -> Cached | None:
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
                if new is not None and isinstance(done, int) and _version(new) <= done:
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
        value = self._slim(obj)
        version = _version(value)
        old = self.cache.get(k)
        if old is None or not _version(old) or not version or version >= _version(old):
            self.cache[k] = value
        if k in self._held and version:
            self._done[k] = version

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

    def _slim(self, obj: Obj) -> Cached:
        """What the cache holds of ``obj``."""
        if self.keep is not None:
            return self.keep(obj)
        if self.drop_managed_fields:
            meta = obj.get("metadata")
            if isinstance(meta, dict):
                meta.pop("managedFields", None)
        return obj

    def _report(self, k: ObjKey, old: Cached | None, new: Cached | None) -> None:
        held = self._held.get(k)
        if held is not None:
            held.append((old, new))
        elif self.on_change:
            self.on_change(old, new)

    def _set(self, obj: Obj) -> None:
        k = key_of(obj)
        old = self.cache.get(k)
        version = _version(obj)
        if old is not None and _version(old) and version and version <= _version(old):
            return  # an older version arriving late, or the version we hold (our own write)
        value = self._slim(obj)
        self.cache[k] = value
        self._report(k, old, value)

    async def _relist(self) -> str:
        # What the cache will hold of each object, page by page: with ``keep``, the objects
        # of a large list are never held all at once.
        fresh: dict[ObjKey, Cached] = {}

        def take(items: list[Obj]) -> None:
            for obj in items:
                fresh[key_of(obj)] = self._slim(obj)

        rv = await self.kube.list_pages(self.res, take, self.namespace, self.label_selector)
        for k in [k for k in self.cache if k not in fresh]:
            gone = self.cache.pop(k)
            if self.on_change:
                self.on_change(gone, None)
        for k, value in fresh.items():
            old = self.cache.get(k)
            if old is None or _version(old) != _version(value):
                self.cache[k] = value
                if self.on_change:
                    self.on_change(old, value)
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


def _uid(value: Cached) -> object:
    if isinstance(value, dict):
        return str(value.get("metadata", {}).get("uid", ""))
    return value.uid


def _rv(obj: Obj) -> str:
    return str(obj.get("metadata", {}).get("resourceVersion", ""))


def _version(value: Cached) -> int:
    """A cached value's resourceVersion as a number (0: none)."""
    if isinstance(value, dict):
        rv = value.get("metadata", {}).get("resourceVersion")
        return int(rv) if rv else 0
    return int(value.version)
