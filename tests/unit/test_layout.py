"""The public names third parties import stay where the docs say, and old names still work."""

from __future__ import annotations

import importlib
import sys

import pytest

import engine
from engine import jetstream


def test_the_log_port_exposes_the_names_the_docs_use() -> None:
    assert set(jetstream.__all__) >= {
        "Append",
        "EventLog",
        "Follower",
        "StreamSettings",
        "close",
        "connect",
        "decode_message",
        "dead_letter_subject",
    }
    for name in jetstream.__all__:
        assert getattr(jetstream, name) is not None


@pytest.mark.parametrize("old", sorted(engine.MOVED))
def test_a_moved_module_still_imports_by_its_old_name_with_a_warning(old: str) -> None:
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(engine.MOVED[old])
    sys.modules.pop(old, None)


def test_the_documented_follower_example_imports() -> None:
    with pytest.warns(DeprecationWarning):
        from engine.eventlog import EventLog, Follower  # type: ignore[import-untyped]  # an alias mypy cannot see
    assert EventLog is jetstream.EventLog
    assert Follower is jetstream.Follower
