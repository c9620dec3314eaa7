"""``python -m engine`` is the ``mcsync`` command."""

from engine.cli import main

main()
