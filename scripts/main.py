"""The ``hybridgym`` command line. Each subcommand lives in its own module and only wires
library calls; this module parses, dispatches and turns user errors into one line + exit 2.

Start-up time: the subcommand modules import nothing heavy at module level (torch,
stable-baselines3, matplotlib and hybridgym's own packages are imported inside their ``run``
functions), so ``hybridgym --help`` and every ``hybridgym SUBCOMMAND --help`` answer without
loading torch, and a subcommand loads only what it uses.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from hybridgym.scripts import (
    collect,
    compare,
    demo,
    distill,
    evaluate,
    fit,
    loop,
    plot,
    systems,
    train,
)

SUBCOMMANDS = (systems, demo, loop, collect, fit, distill, train, evaluate, compare, plot)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors: one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


class _Version(argparse.Action):
    """``--version``: reads the version only when asked (``hybridgym.models`` imports torch)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS) -> None:
        super().__init__(
            option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="show the version"
        )

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        from hybridgym.models import __version__

        print(f"hybridgym {__version__}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="hybridgym",
        description="Hybrid neural ODEs as Gymnasium environments, and controllers trained "
        "against them.",
    )
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hybridgym``; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (ValueError, TypeError, OSError) as err:  # OSError: files, folders, full disks
        if os.environ.get("HYBRIDGYM_DEBUG"):
            raise
        print(f"hybridgym {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hybridgym {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
