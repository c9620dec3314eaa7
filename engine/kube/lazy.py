"""kubernetes-asyncio without its generated API and model classes, unless someone asks for them.

mcsync speaks raw JSON to the API server and uses only the package's configuration loaders
(kubeconfig, in-cluster, exec credentials) and its ``ApiClient`` as a transport. But importing
any part of the package runs ``kubernetes_asyncio/__init__.py`` and ``client/__init__.py``,
which import every generated API and model class: about 1.6 s and 30 MiB for each process,
more than half of what an mcsync process costs to start and to keep (docs/performance.md).

:func:`install` puts lazy stand-ins for those three packages into ``sys.modules`` before
anything imports them. A stand-in has the package's path, so its submodules import as usual;
an attribute that names a submodule, or one of the few classes mcsync needs, is imported on its
own; any other attribute (``client.CoreV1Api``, ``kubernetes_asyncio.__version__``) runs the
real ``__init__`` into the stand-in first, so code that uses the full package still gets it.
When the package is already imported, nothing changes.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

_CLIENT_CLASSES = {
    "Configuration": ("configuration", "Configuration"),
    "ApiClient": ("api_client", "ApiClient"),
    "ApiException": ("exceptions", "ApiException"),
}


def _lazy_package(name: str, classes: dict[str, tuple[str, str]] | None = None) -> None:
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    loaded = False

    def __getattr__(attr: str) -> Any:
        nonlocal loaded
        if attr.startswith("__") and attr not in ("__version__", "__all__"):
            raise AttributeError(attr)  # tooling probing dunders must not load everything
        if classes and attr in classes:
            sub, cls = classes[attr]
            return getattr(importlib.import_module(f"{name}.{sub}"), cls)
        if importlib.util.find_spec(f"{name}.{attr}") is not None:
            return importlib.import_module(f"{name}.{attr}")
        if not loaded:
            loaded = True
            assert spec.loader is not None
            spec.loader.exec_module(module)  # the real __init__, into this module
            return getattr(module, attr)
        raise AttributeError(f"module {name!r} has no attribute {attr!r}")

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules[name] = module


def install() -> None:
    """Install the stand-ins (idempotent; a no-op once the real package is imported)."""
    _lazy_package("kubernetes_asyncio")
    _lazy_package("kubernetes_asyncio.client", _CLIENT_CLASSES)
    _lazy_package("kubernetes_asyncio.client.models")
