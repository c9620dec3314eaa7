"""Deciding whether a status write is needed: conditions are a list-map keyed by ``type``."""

from __future__ import annotations

from typing import Any

import pytest

from engine.core import plan


def cond(ctype: str, status: str = "True", **extra: Any) -> dict[str, Any]:
    return {"type": ctype, "status": status, "reason": ctype, "message": "", **extra}


DESIRED = {"conditions": [cond("Valid"), cond("Ready"), cond("Conflict", "False")]}
STAMP = {"lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}


@pytest.mark.parametrize(
    ("observed", "current"),
    [
        pytest.param({"conditions": [{**c, **STAMP} for c in DESIRED["conditions"]]}, True,
                     id="same-with-server-fields"),
        pytest.param({"conditions": list(reversed(DESIRED["conditions"]))}, True,
                     id="other-order"),
        pytest.param({"conditions": [cond("example.com/Audited"), *DESIRED["conditions"]]}, True,
                     id="another-managers-condition"),
        pytest.param({"conditions": DESIRED["conditions"][:2]}, False, id="one-missing"),
        pytest.param({"conditions": [cond("Valid", "False"), *DESIRED["conditions"][1:]]}, False,
                     id="one-differs"),
        pytest.param({}, False, id="no-conditions"),
        pytest.param(None, False, id="no-status"),
    ],
)  # fmt: skip
def test_a_status_is_current_when_every_desired_condition_is_there_by_type(
    observed: Any, current: bool
) -> None:
    assert plan.status_covers(observed, DESIRED) is current


def test_other_status_fields_still_compare_whole() -> None:
    desired = {"clusters": [{"cluster": "a"}], "conditions": []}
    assert plan.status_covers({"clusters": [{"cluster": "a"}], "conditions": []}, desired)
    assert not plan.status_covers({"clusters": [{"cluster": "b"}], "conditions": []}, desired)
    assert not plan.status_covers({"conditions": []}, desired)
