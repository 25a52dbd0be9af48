"""Export the log as JSON lines (``corrections.jsonl``, RLE masks included) + ``manifest.json``."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from vrshq.backend.corrections.record import utc_now
from vrshq.backend.corrections.store import CorrectionsLog, public_url
from vrshq.errors import VrshqError

EXPORT_FILENAME = "corrections.jsonl"
MANIFEST_FILENAME = "manifest.json"



def export_jsonl(log: CorrectionsLog, out_dir: str | os.PathLike) -> Path:
    """Write ``out_dir/corrections.jsonl`` (one correction per line) and ``manifest.json``.

    Each file is written to a temporary name and renamed, so a reader never sees half a file.
    Returns the path of ``corrections.jsonl``.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise VrshqError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    created_at = utc_now()
    count = 0
    last_id = None

    def lines() -> Iterator[str]:
        nonlocal count, last_id
        for c in log.iter():
            count += 1
            last_id = c.id
            yield json.dumps(c.to_json(), separators=(",", ":"), ensure_ascii=False) + "\n"

    path = write_atomic(out / EXPORT_FILENAME, lines())
    manifest = {
        "format": "vrshq-corrections-jsonl",
        "version": 1,
        "file": EXPORT_FILENAME,
        "count": count,
        "last_id": last_id,
        "created_at": created_at,
        "source": public_url(log.url),
    }
    write_atomic(out / MANIFEST_FILENAME, [json.dumps(manifest, indent=2) + "\n"])
    return path


def write_atomic(path: Path, chunks: Iterable[str]) -> Path:
    """Write text chunks to ``path`` via a synced temp file + rename: old or new file, never a mix."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for chunk in chunks:
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
