"""Whether a model folder's anchor CLIP is the official one: the record ``vrshq download`` leaves.

``vrshq download`` writes ``clip/source.json`` beside the weights it fetched: the open_clip
model name and pretrained tag it asked for, the file's name, size and SHA-256. The weights are
*official* when that record names OpenAI's ViT-L/14-336 as open_clip serves it
(``ViT-L-14-336-quickgelu`` / ``openai``, the release's anchor) and the file the loader uses is
the recorded one, byte for byte (its SHA-256 is checked at load, a few seconds for 1.7 GB).
Folders made by ``vrshq tiny-models`` (random weights) or by hand have no record, so they never
count as official; a fine-tuned version copies its base's ``clip/`` folder, record included.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from vrshq.model.layout import ClipWeights

SOURCE_FILE = "source.json"
OFFICIAL_MODEL = "ViT-L-14-336-quickgelu"
OFFICIAL_PRETRAINED = "openai"


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file, read in 8 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def write_source(weights: Path, model: str, pretrained: str) -> Path:
    """Record where ``weights`` came from, in ``source.json`` beside it; returns the record's path."""
    weights = Path(weights)
    record = {"model": model, "pretrained": pretrained, "file": weights.name,
              "bytes": weights.stat().st_size, "sha256": sha256_file(weights)}
    path = weights.parent / SOURCE_FILE
    partial = path.with_suffix(".json.part")
    partial.write_text(json.dumps(record, indent=2) + "\n")
    partial.replace(path)
    return path


def read_source(clip_dir: Path) -> dict[str, Any] | None:
    """The download record of a ``clip/`` folder, or None when it has none (or it is unreadable)."""
    try:
        record = json.loads((Path(clip_dir) / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def is_official(clip: ClipWeights) -> bool:
    """Whether ``clip`` (the loader's choice in a model folder) is the official CLIP, recorded."""
    if clip.config is not None:
        return False  # a custom architecture (<name>.json + <name>.pt)
    record = read_source(clip.weights.parent)
    if record is None:
        return False
    if (record.get("model"), record.get("pretrained")) != (OFFICIAL_MODEL, OFFICIAL_PRETRAINED):
        return False
    try:
        size = clip.weights.stat().st_size
    except OSError:
        return False
    # The size first: a different file is told apart without reading 1.7 GB.
    if record.get("file") != clip.weights.name or record.get("bytes") != size:
        return False
    return record.get("sha256") == sha256_file(clip.weights)


__all__ = ["OFFICIAL_MODEL", "OFFICIAL_PRETRAINED", "SOURCE_FILE", "is_official", "read_source",
           "sha256_file", "write_source"]
