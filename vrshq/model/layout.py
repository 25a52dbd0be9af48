"""The VRS-HQ model folder: what must be in it, checked before anything loads.

A model folder (``vrshq download DIR`` or ``vrshq tiny-models DIR``) holds three parts::

    DIR/vrshq/  the released checkpoint as on the Hub (SitongGong/VRS-HQ): config.json,
                tokenizer.model (+ tokenizer_config.json, added_tokens.json), and the weights:
                pytorch_model-0000N-of-0000M.bin + pytorch_model.bin.index.json, or
                model.safetensors[.index.json], or pytorch_model.bin
    DIR/sam2/   sam2_hiera_large.pt (SAM 2.0, 072824), only read when the checkpoint holds no
                model.visual_model.* weights
    DIR/clip/   the anchor CLIP: open_clip's copy of OpenAI's ViT-L/14-336
                (open_clip_model.safetensors or open_clip_pytorch_model.bin), or a custom
                open_clip model as <name>.json + <name>.pt; `vrshq download` adds
                source.json, its record of the official weights (vrshq.model.clip_source)

A part that is missing is one error naming it and this layout: the loader never falls back to a
download (only ``vrshq download`` touches the network).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from vrshq.errors import ModelError

SAM2_PREFIX = "model.visual_model."
SAM2_FILES = ("sam2_hiera_large.pt", "model.pt")
CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
LAYOUT = ("expected DIR/vrshq/ (config.json, tokenizer.model, weights), "
          "DIR/sam2/sam2_hiera_large.pt and DIR/clip/ (open_clip ViT-L-14-336 OpenAI weights); "
          "`vrshq download DIR` makes it")


@dataclass(frozen=True)
class ClipWeights:
    """The anchor CLIP's files: a weights file, and a config JSON for a custom architecture."""

    weights: Path
    config: Path | None = None  # <name>.json beside <name>.pt; None: the default architecture


@dataclass(frozen=True)
class ModelFolder:
    """A checked model folder: where each part's files are."""

    root: Path
    checkpoint: Path  # DIR/vrshq
    sam2_weights: Path | None  # None: the checkpoint holds SAM-2 (model.visual_model.*)
    clip: ClipWeights


def check_model_folder(root: str | Path) -> ModelFolder:
    """The parts of the model folder ``root``, or a ModelError naming the first one missing."""
    root = Path(root)
    if not root.is_dir():
        raise ModelError(f"{root}: model folder not found ({LAYOUT})")
    checkpoint = root / "vrshq"
    if not checkpoint.is_dir():
        if (root / "config.json").is_file():
            raise ModelError(f"{root} is the checkpoint folder itself: pass the model folder "
                             f"that holds it as vrshq/ ({LAYOUT})")
        raise ModelError(f"{root}: no vrshq/ checkpoint folder ({LAYOUT})")
    for name in ("config.json", "tokenizer.model"):
        if not (checkpoint / name).is_file():
            raise ModelError(f"{checkpoint}: no {name} ({LAYOUT})")
    keys = _checkpoint_keys(checkpoint)
    sam2 = None
    if keys is None or not any(k.startswith(SAM2_PREFIX) for k in keys):
        sam2 = next((root / "sam2" / n for n in SAM2_FILES if (root / "sam2" / n).is_file()), None)
        # A single .bin file can only be read whole; the loader names it if SAM-2 is not there.
        if sam2 is None and keys is not None:
            raise ModelError(f"{checkpoint}: the checkpoint holds no {SAM2_PREFIX}* weights and "
                             f"there is no {root / 'sam2' / SAM2_FILES[0]} ({LAYOUT})")
    return ModelFolder(root, checkpoint, sam2, find_clip_weights(root / "clip"))


def find_clip_weights(clip_dir: Path) -> ClipWeights:
    """The anchor CLIP's files in ``clip_dir``, or a ModelError naming what is missing."""
    if not clip_dir.is_dir():
        raise ModelError(f"{clip_dir}: no clip/ folder for the anchor CLIP ({LAYOUT})")
    for config in sorted(clip_dir.glob("*.json")):
        if config.with_suffix(".pt").is_file():
            return ClipWeights(config.with_suffix(".pt"), config)
    for name in CLIP_FILES:
        # Flat since this version; folders made earlier keep the Hub cache's nesting.
        found = sorted(clip_dir.rglob(name))
        if found:
            return ClipWeights(found[0])
    raise ModelError(f"{clip_dir}: no CLIP weights ({' or '.join(CLIP_FILES)}, or <name>.json + "
                     f"<name>.pt) ({LAYOUT})")


def _checkpoint_keys(checkpoint: Path) -> list[str] | None:
    """The checkpoint's tensor names when an index or safetensors header lists them, else None."""
    for index in WEIGHT_INDEXES:
        path = checkpoint / index
        if path.is_file():
            try:
                return list(json.loads(path.read_text())["weight_map"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ModelError(f"{path}: malformed index ({exc})") from None
    if (checkpoint / WEIGHT_FILES[0]).is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(checkpoint / WEIGHT_FILES[0]), framework="pt") as f:
                return list(f.keys())
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own types
            raise ModelError(f"{checkpoint / WEIGHT_FILES[0]}: not a safetensors file ({exc})") from None
    if (checkpoint / WEIGHT_FILES[1]).is_file():
        return None
    raise ModelError(f"{checkpoint}: no weights ({', '.join(WEIGHT_INDEXES + WEIGHT_FILES)}) "
                     f"({LAYOUT})")


__all__ = ["ClipWeights", "ModelFolder", "check_model_folder", "find_clip_weights"]
