"""The long-running commands start without the CLI toolkit, and parse exactly as the CLI does.

``engine/serve.py`` parses ``mcsync publisher|subscriber|member`` with argparse from the option
groups the Typer CLI declares its commands with; these tests hold the two parsers to the same
options, spellings, environment variables and values, and the server path to its promise of
not loading typer, click, pydantic or rich.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine import options, serve

ARGV = [
    "--nats-url=nats://hub:4222",
    "--nats-user=east",
    "--nats-password-file=/etc/mcsync/nats/password",
    "--no-create-stream",
    "--health-port=9090",
    "--log-format=json",
    "--staleness-lease=12.5",
    "--kubeconfig=/tmp/kc",
]
OWN = {
    "publisher": ["--heartbeat-interval=3", "--api-server-url=https://east:6443"],
    "subscriber": ["--staleness-policy=keep", "--quiet-seconds=0.1", "--lease-namespace=x"],
}
OWN["member"] = OWN["publisher"] + OWN["subscriber"]


def typer_command(name: str) -> Any:
    from typer.main import get_command

    from engine.cli import app

    return get_command(app).commands[name]  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(serve.COMMANDS))
def test_both_parsers_take_the_same_options(name: str) -> None:
    spec = serve.COMMANDS[name]
    ap = options.parser(name, spec.help, spec.groups)
    ours = {s for a in ap._actions for s in a.option_strings} - {"-h", "--help"}
    theirs = {o for p in typer_command(name).params for o in (*p.opts, *p.secondary_opts)}
    assert ours == theirs - {"--help"}


@pytest.mark.parametrize("name", sorted(serve.COMMANDS))
def test_both_parsers_read_the_same_values(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCSYNC_CLUSTERSET", "prod")  # an option given by its variable
    monkeypatch.delenv("KUBECONFIG", raising=False)
    argv = ARGV + OWN[name]
    spec = serve.COMMANDS[name]
    ours = options.parse(options.parser(name, spec.help, spec.groups), spec.groups, argv)

    command = typer_command(name)
    ctx = command.make_context(name, list(argv))
    params = dict(ctx.params)
    # The Typer command's callback receives the groups; rebuild them from its parsed values.
    theirs = [
        group(**{f.name: params[f.name] for f in dataclasses.fields(group)})
        for group in spec.groups
    ]
    assert ours == theirs
    member = ours[0]
    assert member.clusterset == "prod" and member.create_stream is False
    assert member.lease == 12.5 and member.kubeconfig == Path("/tmp/kc")


def test_a_switch_and_a_second_spelling_parse_as_in_the_cli() -> None:
    spec = serve.COMMANDS["publisher"]
    ap = options.parser("publisher", spec.help, spec.groups)
    member, *_ = options.parse(ap, spec.groups, ["--lease=7", "--create-stream"])
    assert member.lease == 7.0 and member.create_stream is True
    member, *_ = options.parse(ap, spec.groups, [])
    assert member == options.Member()


def test_the_server_path_loads_no_cli_toolkit() -> None:
    """What a pod's process imports to run: no typer, click, pydantic, rich or pygments."""
    code = (
        "import sys\n"
        "from engine import serve\n"
        "serve.without_rich()\n"
        "import engine.observe.logs, engine.observe.health, engine.runner, engine.identity\n"
        "import publishers.publisher, subscribers.subscriber\n"
        "from engine.observe import logs\n"
        "logs.configure('info', json=False)\n"
        "try:\n"
        "    raise ValueError('boom')\n"
        "except ValueError:\n"
        "    logs.get('t').exception('failed')\n"
        "heavy = ('typer', 'click', 'pydantic', 'rich', 'pygments')\n"
        "print(sorted(m for m in heavy if sys.modules.get(m)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert out.stdout.strip() == "[]"
    assert "ValueError: boom" in out.stderr  # tracebacks still render, without rich


def test_help_of_a_server_command_goes_to_the_cli() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "engine", "member", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert "--heartbeat-interval" in out.stdout and "--staleness-policy" in out.stdout


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--log-layout=bogus"], "--log-layout"),
        (["--quiet-seconds=2", "--max-delay-seconds=1"], "--quiet-seconds"),
        (["--staleness-policy=forget"], "--staleness-policy"),
    ],
)
def test_options_that_cannot_work_are_usage_errors_in_both_parsers(
    argv: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from typer.testing import CliRunner

    from engine.cli import app

    spec = serve.COMMANDS["member"]
    with pytest.raises(SystemExit) as exc:
        options.parse(options.parser("member", spec.help, spec.groups), spec.groups, argv)
    assert exc.value.code == 2
    assert option in capsys.readouterr().err
    result = CliRunner().invoke(app, ["member", *argv])
    assert result.exit_code == 2
    assert option in result.output
