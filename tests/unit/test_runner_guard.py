"""Only configuration errors end a member, also when they come wrapped in exception groups."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from engine import runner
from engine.core.errors import ConfigError, TransientError


class Failing:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.runs = 0

    async def run(self) -> None:
        self.runs += 1
        raise self.exc


def member() -> runner.Member:
    return runner.Member(cluster="c1", clusterset="set", kubeconfig=None, nats_url="nats://x")


def test_a_config_error_is_found_inside_nested_groups() -> None:
    inner = ConfigError("cluster id changed")
    wrapped = ExceptionGroup("tasks", [ValueError("x"), ExceptionGroup("inner", [inner])])
    assert runner.config_error(wrapped) is inner
    assert runner.config_error(ExceptionGroup("tasks", [TransientError("away")])) is None
    assert runner.config_error(inner) is inner


async def test_a_wrapped_config_error_ends_the_component_instead_of_restarting_it() -> None:
    m = member()
    first = Failing(ExceptionGroup("tasks", [ConfigError("cluster id changed")]))
    made: list[Failing] = []

    def new() -> Any:
        made.append(Failing(RuntimeError("should not be started")))
        return made[-1]

    with pytest.raises(ConfigError, match="cluster id changed"):
        await asyncio.wait_for(m._guard("publisher", new, first), 5)  # type: ignore[arg-type]
    assert made == []


async def test_a_transient_failure_starts_a_fresh_component() -> None:
    m = member()
    first = Failing(ExceptionGroup("tasks", [TransientError("NATS away")]))
    later = Failing(ConfigError("then a real configuration error"))

    def new() -> Any:
        return later

    with pytest.raises(ConfigError):
        await asyncio.wait_for(m._guard("publisher", new, first), 10)  # type: ignore[arg-type]
    assert (first.runs, later.runs) == (1, 1)
    assert "publisher failed, restarting" in m.problems["publisher"]
