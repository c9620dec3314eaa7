"""mcsync loads kubernetes-asyncio without its generated API and models, transparently."""

from __future__ import annotations

import subprocess
import sys

PROBE = r"""
import sys
import engine.kube  # what every mcsync process imports
generated = ("kubernetes_asyncio.client.api.", "kubernetes_asyncio.client.models.")
heavy = [m for m in sys.modules if m.startswith(generated)]
assert heavy == [], heavy[:5]
from kubernetes_asyncio.client import ApiClient, Configuration, rest  # what mcsync uses
# Code that wants the whole package still gets it.
from kubernetes_asyncio import client
assert client.CoreV1Api.__name__ == "CoreV1Api"
assert client.V1Pod.__name__ == "V1Pod"
import kubernetes_asyncio
assert kubernetes_asyncio.__version__
print("ok")
"""


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )


def test_the_generated_api_and_models_are_not_imported_until_someone_asks() -> None:
    out = run(PROBE)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_a_package_imported_before_mcsync_is_left_alone() -> None:
    out = run(
        "from kubernetes_asyncio import client\n"
        "import engine.kube, sys\n"
        "assert 'kubernetes_asyncio.client.api.core_v1_api' in sys.modules\n"
        "assert client.CoreV1Api\n"
        "print('ok')\n"
    )
    assert out.returncode == 0, out.stderr
