"""An export folder replaced whole: refuse a folder that is not ours, swap the finished one in.

Shared by the training-set export (``vrshq corrections export``) and the dataset export
(``vrshq export``): each builds its export in a temporary folder beside ``out``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


@contextmanager
def staged_export(out: Path, manifest_name: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    """A temporary folder beside ``out`` and a manifest dict to fill: on success the manifest is
    written into the folder and the folder replaces ``out``; on any error it is removed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    manifest: dict[str, Any] = {}
    try:
        yield tmp, manifest
        (tmp / manifest_name).write_text(json.dumps(manifest, indent=2) + "\n")
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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


__all__ = ["check_out", "replace_folder", "staged_export"]
