"""The --out folder of ``vrshq track`` and ``vrshq segment``: one run's outputs, and only its own.

A run writes into a fresh folder next to --out and swaps it in at the end, so an earlier run's
masks never stay beside the new ``track.json`` and a failed run leaves the earlier outputs as
they were. An existing --out is replaced only when it is empty or an earlier output (nothing
but the names below, ``track.json`` among them); any other folder is refused before work starts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from vrshq.errors import VrshqError

OUTPUT_NAMES = frozenset({"masks", "track.json", "labelstudio.json", "keyframes.json"})


def check_out_folder(out: Path) -> None:
    """Refuse an --out that is a file, or a folder holding more than an earlier output."""
    if out.exists() and not out.is_dir():
        raise VrshqError(f"--out {out}: exists and is not a folder")
    if out.is_dir():
        if Path.cwd().resolve().is_relative_to(out.resolve()):
            raise VrshqError(f"--out {out}: the run replaces its --out whole, and this one holds the "
                             "current folder; name a folder inside it")
        names = {p.name for p in out.iterdir()}
        if names and not ("track.json" in names and names <= OUTPUT_NAMES):
            raise VrshqError(f"--out {out}: the folder is not empty and holds no earlier output of "
                             "vrshq track or segment (it is replaced by the new run); name a new or "
                             "empty folder")


@contextlib.contextmanager
def staged_out_folder(out: Path) -> Iterator[Path]:
    """A new folder beside ``out`` to write into; it replaces ``out`` when the block succeeds."""
    check_out_folder(out)  # again: the folder may have changed while the model ran
    out = Path(os.path.abspath(out))  # "a/.." has no name to put a sibling beside
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; outputs are ordinary folders
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(new: Path, out: Path) -> None:
    """Rename ``new`` to ``out``; an existing ``out`` is moved aside first and removed after."""
    if not out.exists():
        os.replace(new, out)
        return
    aside = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
    os.replace(out, aside / "out")
    try:
        os.replace(new, out)
    except BaseException:
        os.replace(aside / "out", out)  # put the earlier outputs back
        shutil.rmtree(aside, ignore_errors=True)
        raise
    shutil.rmtree(aside, ignore_errors=True)


__all__ = ["OUTPUT_NAMES", "check_out_folder", "staged_out_folder"]
