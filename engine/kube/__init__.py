"""The Kubernetes port: a dict-typed client, the resources mcsync uses, and informers.

The package's names below are its surface (``from engine import kube`` then ``kube.Kube``); the
modules behind them may move.

* :mod:`.resources` - where each kind lives in the API, object keys;
* :mod:`.client` - get, list, server-side apply, delete and watch as raw JSON; API errors as
  :mod:`engine.core.errors` types; the CRDs mcsync needs;
* :mod:`.informer` - list, then watch with resume, with a cache and echo suppression of our own
  writes.
"""

# Before anything imports kubernetes_asyncio (its generated API and models stay unloaded
# unless someone asks for them; see lazy.py). Importing any module of this package runs this.
from engine.kube import lazy

lazy.install()

from engine.kube.client import (
    Gone,
    Kube,
    KubeError,
    KubeTransientError,
    NotFound,
    crd_documents,
    install_crds,
    load_client,
)
from engine.kube.informer import (
    Informer,
)
from engine.kube.resources import (
    CLUSTER_PROFILES,
    CLUSTER_PROPERTIES,
    CRDS,
    ENDPOINT_SLICES,
    FIELD_MANAGER,
    LEASES,
    NAMESPACES,
    SERVICE_EXPORTS,
    SERVICE_IMPORTS,
    SERVICES,
    Obj,
    ObjKey,
    Resource,
    key_of,
)

__all__ = [
    "CLUSTER_PROFILES",
    "CLUSTER_PROPERTIES",
    "CRDS",
    "ENDPOINT_SLICES",
    "FIELD_MANAGER",
    "LEASES",
    "NAMESPACES",
    "SERVICES",
    "SERVICE_EXPORTS",
    "SERVICE_IMPORTS",
    "Gone",
    "Informer",
    "Kube",
    "KubeError",
    "KubeTransientError",
    "NotFound",
    "Obj",
    "ObjKey",
    "Resource",
    "crd_documents",
    "install_crds",
    "key_of",
    "load_client",
]
