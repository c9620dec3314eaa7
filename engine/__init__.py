"""mcsync: an event-sourced sync engine for multi-cluster Kubernetes over NATS JetStream.

The tree is the architecture. Each room below may import only the rooms under it (import-linter
holds this, see ``.importlinter``):

* ``core/`` - the pure core: events, the subject grammar, the fold, the MCS, inventory and lease
  rules, the plan. Synchronous and deterministic; no I/O of any kind.
* ``contract/`` - the log's contract as documents (JSON Schemas, AsyncAPI), from the core's types.
* ``natsconfig/`` - nats-server permissions and configuration for a clusterset (pure text).
* ``observe/`` - logs, metrics and health endpoints.
* ``jetstream/`` - the log port: connections, the stream, the wire format, append, follow, replay.
* ``kube/`` - the Kubernetes port: the dict-typed client, resources, informers.
* ``local/`` - launchers of local nats-servers and control planes, for tests and demos.

The application sits at the top of the package: the command line (``cli``), running a cluster's
processes (``runner``), the local clusterset and demo (``localstack``, ``demo``), audit
(``audit``), cross-cluster leadership for Python programs and for commands (``leadership``,
``leaserun``), this cluster's identity (``identity``) and process tuning (``runtime``). The
publisher and subscriber shells live beside this package, in ``publishers`` and ``subscribers``.

Modules that moved when the rooms were made can still be imported by their old names (for
example ``engine.eventlog`` is ``engine.jetstream``, ``engine.fold`` is ``engine.core.fold``);
such an import warns, and ``docs/events.md`` lists the new names.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

__version__ = "0.1.0"

MOVED: dict[str, str] = {
    "engine.events": "engine.core.events",
    "engine.subjects": "engine.core.subjects",
    "engine.fold": "engine.core.fold",
    "engine.mcs": "engine.core.mcs",
    "engine.inventory": "engine.core.inventory",
    "engine.leases": "engine.core.leases",
    "engine.plan": "engine.core.plan",
    "engine.errors": "engine.core.errors",
    "engine.eventlog": "engine.jetstream",
    "engine.pipeline": "engine.jetstream.pipeline",
    "engine.delivery": "engine.jetstream.delivery",
    "engine.schema": "engine.contract",
    "engine.natsserver": "engine.local.natsserver",
    "engine.controlplane": "engine.local.controlplane",
    "engine.procs": "engine.local.procs",
    "engine.logs": "engine.observe.logs",
    "engine.metrics": "engine.observe.metrics",
    "engine.health": "engine.observe.health",
}
"""Old module name -> the module that took its place."""


class _Moved(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module name as the module that took its place, with a warning."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = MOVED[spec.name]
        warnings.warn(
            f"{spec.name} moved to {new}; import it from there", DeprecationWarning, stacklevel=2
        )
        return importlib.import_module(new)

    def exec_module(self, module: ModuleType) -> None:
        """The module is the new one, already executed."""


if not any(isinstance(f, _Moved) for f in sys.meta_path):
    sys.meta_path.append(_Moved())
