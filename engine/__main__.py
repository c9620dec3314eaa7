"""``python -m engine`` is the ``mcsync`` command.

The long-running commands (publisher, subscriber, member) start through ``engine/serve.py``,
without the interactive CLI's toolkit (typer, click, pydantic, rich); everything else, and
``--help`` of any command, goes to the Typer CLI in ``engine/cli.py``.
"""

from __future__ import annotations

import sys


def main() -> None:
    """The ``mcsync`` entry point."""
    from engine import serve

    argv = sys.argv[1:]
    if argv and argv[0] in serve.COMMANDS and not {"--help", "-h"} & set(argv[1:]):
        serve.main(argv[0], argv[1:])
    from engine import cli

    cli.main()


if __name__ == "__main__":
    main()
