"""Command line: ``python -m echomimic_core <command> ...``.

Each command lives in ``echomimic_core/commands/<name>.py`` and exposes ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``; importing is deferred so that ``check``
works even when a heavy optional dependency is broken.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ("check", "generate", "demo")


def main(argv: list[str] | None = None, *, owns_process: bool = False) -> int:
    """Run one command; ``owns_process`` (set only by ``python -m echomimic_core``) lets the command tune the
    interpreter (``commands/process.py``), which an in-process caller such as a test never wants."""
    parser = argparse.ArgumentParser(prog="python -m echomimic_core", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"echomimic_core.commands.{name}")
        module.add_arguments(sub.add_parser(name, help=module.HELP, description=module.HELP))
    args = parser.parse_args(argv)
    args.owns_process = owns_process
    module = importlib.import_module(f"echomimic_core.commands.{args.command}")
    from .signals import Terminated, termination_as_exception

    with termination_as_exception():  # SIGTERM/SIGHUP clean up like Ctrl-C (no partial output file)
        try:
            return module.run(args)
        except Terminated as exc:
            print(f"{exc}; no output written", file=sys.stderr)
            return exc.exit_code


if __name__ == "__main__":
    code = main(owns_process=True)
    from .commands.process import freeze_before_exit

    freeze_before_exit()
    sys.exit(code)
