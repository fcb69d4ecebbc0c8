"""The ``hybridgym`` command line. Each subcommand lives in its own module and only wires
library calls; this module parses, dispatches and turns user errors into one line + exit 2."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from hybridgym.models import __version__
from hybridgym.scripts import demo, loop, systems

SUBCOMMANDS = (systems, demo, loop)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors: one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="hybridgym",
        description="Hybrid neural ODEs as Gymnasium environments, and controllers trained "
        "against them.",
    )
    parser.add_argument("--version", action="version", version=f"hybridgym {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hybridgym``; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as err:
        if os.environ.get("HYBRIDGYM_DEBUG"):
            raise
        print(f"hybridgym {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hybridgym {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
