"""``--progress/--no-progress`` and the bars of the long commands: drawn on a terminal only, by default."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tqdm import tqdm


def add_progress_option(parser: argparse.ArgumentParser) -> None:
    """--progress / --no-progress, default None: bars only when stderr is a terminal."""
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bars on stderr (default: only when stderr is a terminal)")


def wants_bars(args: argparse.Namespace) -> bool:
    """Whether to draw bars: --progress or --no-progress, else whether stderr is a terminal."""
    chosen = getattr(args, "progress", None)
    if chosen is not None:
        return bool(chosen)
    # One explicit rule rather than tqdm's disable=None, so the bars of other libraries that
    # a command switches (huggingface_hub's, in download) follow the same decision.
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def progress_bar(args: argparse.Namespace, desc: str, unit: str, total: int | None = None, **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr, or a disabled one (same methods, draws nothing) per :func:`wants_bars`.

    Make it after the arguments and inputs are checked, so an error is never preceded by a bar.
    """
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not wants_bars(args),
                **kwargs)


class DoneOfTotal:
    """A ``progress(done, total)`` callback whose bar is made at the first report.

    The first report comes once the work has started, so the inputs were accepted: an error
    found before it is printed alone, with no empty bar above it. Use it as a context manager.
    """

    def __init__(self, args: argparse.Namespace, desc: str, unit: str) -> None:
        self.args, self.desc, self.unit = args, desc, unit
        self.bar: tqdm | None = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = progress_bar(self.args, self.desc, self.unit, total)
        self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        """Close the bar, if one was made."""
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> DoneOfTotal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
