"""The ``vrshq`` command line: thin subcommands over the library, one-line errors."""

from __future__ import annotations

import argparse
import sys

from vrshq import __version__
from vrshq.errors import VrshqError, one_line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other error
        self.exit(2, f"vrshq: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The parser with every subcommand registered."""
    from vrshq.cli import (corrections, demo, download, evaluate, export, finetune, segment, serve,
                           studio, tiny_models, track, versions, worker)

    parser = _Parser(prog="vrshq", description="Text-prompted video object tracks for Label Studio.")
    parser.add_argument("--version", action="version", version=f"vrshq {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module in (track, segment, tiny_models, demo, download, corrections, export, serve, studio,
                   evaluate, finetune, versions, worker):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vrshq`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except VrshqError as exc:
        print(f"vrshq: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path the checks above did not cover: still one line, no traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"vrshq: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vrshq: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
