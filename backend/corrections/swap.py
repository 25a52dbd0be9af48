"""An export folder replaced whole: refuse a folder that is not ours, swap the finished one in.

Shared by the training-set export (``vrshq corrections export``) and the dataset export
(``vrshq export``): each builds its export in a temporary folder beside ``out``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from vrshq.errors import VrshqError


def check_out(out: Path, manifest: str, fmt: str, what: str) -> None:
    """Refuse an ``out`` that is a file, or a non-empty folder that is not a previous export.

    A previous export is recognised by its ``manifest`` file naming ``fmt``: only then may
    :func:`replace_folder` replace it (never a folder of someone's other files).
    """
    if out.exists() and not out.is_dir():
        raise VrshqError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not _is_previous_export(out, manifest, fmt):
        raise VrshqError(f"{out}: the folder is not empty and holds no previous {what}")


def _is_previous_export(out: Path, manifest: str, fmt: str) -> bool:
    try:
        return json.loads((out / manifest).read_text()).get("format") == fmt
    except (OSError, ValueError, AttributeError):
        return False


def replace_folder(tmp: Path, out: Path) -> None:
    """Move the finished export into place; a previous export is removed only after the swap."""
    os.chmod(tmp, 0o755)  # mkdtemp makes it private
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
        os.replace(out, old / "export")
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


__all__ = ["check_out", "replace_folder"]
