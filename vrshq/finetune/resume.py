"""Running ``vrshq finetune`` again on the same --out: resume the run there, or refuse in one line.

A run records in its checkpoint what shaped its weights: signatures of the base model and of
the training data, and the settings other than the step count. A later run on that folder
resumes only when all of them match and its --steps is not below the steps already trained
(a larger --steps extends the run); anything else is refused before the model loads, so the
model card always describes one run. ``--overwrite`` starts over instead.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

from vrshq.errors import VrshqError
from vrshq.finetune.save import CARD_JSON, CARD_MD
from vrshq.finetune.trainer import CHECKPOINT, TrainConfig, checkpoint_info

TRAIN_DIR = ".train"
# The settings a resumed run must share with the run it continues, and their flags.
SETTINGS = {"batch_size": "--batch-size", "grad_accum": "--grad-accum", "lr": "--lr",
            "warmup_steps": "--warmup-steps", "seed": "--seed", "min_frames": "--min-frames",
            "max_frames": "--max-frames", "betas": "the AdamW betas",
            "weight_decay": "the weight decay", "clip_norm": "the gradient clipping"}
_EDGE = 64 * 1024  # bytes read from each end of a model file: enough to tell weights apart


def model_signature(folder: str | Path) -> str:
    """A fingerprint of a model folder: each file's path, size and first and last 64 KiB.

    Cheap on a 7B checkpoint (a few MB read) and unchanged when the folder is copied or moved;
    hidden entries (a fine-tuned base's own ``.train``) and model cards are left out.
    """
    root = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or rel.name in (CARD_JSON, CARD_MD):
            continue
        size = path.stat().st_size
        digest.update(f"{rel.as_posix()}\0{size}\0".encode())
        with path.open("rb") as fh:
            digest.update(fh.read(_EDGE))
            if size > 2 * _EDGE:
                fh.seek(size - _EDGE)
                digest.update(fh.read())
    return digest.hexdigest()


def data_signature(data: str | Path) -> str:
    """A fingerprint of a training set: its train/ expressions and masks (the frames follow them)."""
    digest = hashlib.sha256()
    for name in ("meta_expressions.json", "mask_dict.json"):
        path = Path(data) / "train" / name
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b""))
    return digest.hexdigest()


def run_record(base: str | Path, data: str | Path, train: TrainConfig, min_frames: int,
               max_frames: int) -> dict[str, Any]:
    """What a run's checkpoint records to be resumed: base, data and settings."""
    settings: dict[str, Any] = {k: getattr(train, k) for k in SETTINGS if hasattr(train, k)}
    settings.update(min_frames=min_frames, max_frames=max_frames,
                    betas=list(train.betas))  # a list: what the checkpoint gives back
    return {"base_dir": str(Path(base).resolve()), "base_signature": model_signature(base),
            "data_dir": str(Path(data).resolve()), "data_signature": data_signature(data),
            "settings": settings}


def _mismatch(recorded: dict[str, Any] | None, run: dict[str, Any]) -> str | None:
    """How the recorded run differs from this one, in words; None when it does not."""
    if recorded is None:
        return "made by an older vrshq, without a record of its base and data"
    if recorded.get("base_signature") != run["base_signature"]:
        return f"fine-tuned from another base ({recorded.get('base_dir')}), not --base {run['base_dir']}"
    if recorded.get("data_signature") != run["data_signature"]:
        return f"trained on other data ({recorded.get('data_dir')}), not --data {run['data_dir']}"
    old = recorded.get("settings") or {}
    for key, flag in SETTINGS.items():
        if old.get(key) != run["settings"][key]:
            return f"trained with {flag} {_show(old.get(key))}, not {_show(run['settings'][key])}"
    return None


def _show(value: Any) -> str:
    return "?" if value is None else str(tuple(value) if isinstance(value, list) else value)


def prepare_out(out: str | Path, run: dict[str, Any], steps: int, overwrite: bool = False) -> int:
    """Check ``out`` for this run (see the module docstring); the steps already trained there.

    ``overwrite`` empties an earlier fine-tuning output first. A folder that holds anything
    else is never touched.
    """
    out = Path(out)
    if not out.is_dir() or not any(out.iterdir()):
        return 0
    checkpoint = out / TRAIN_DIR / CHECKPOINT
    if not (out / TRAIN_DIR).is_dir() and not (out / CARD_JSON).is_file():
        raise VrshqError(f"--out {out}: the folder is not empty and holds no fine-tuning run; "
                         "name a new or empty folder")
    if overwrite:
        for item in out.iterdir():  # only this run's own files may be in the folder afterwards
            shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink()
        return 0
    if not checkpoint.is_file():
        if (out / CARD_JSON).is_file():
            raise VrshqError(f"--out {out} holds a fine-tuned model but no checkpoint to resume "
                             f"({checkpoint}): pass a new --out, or --overwrite to start over")
        return 0  # an earlier run stopped before its first checkpoint: nothing to resume
    trained, recorded = checkpoint_info(checkpoint)
    problem = _mismatch(recorded, run)
    if problem is not None:
        raise VrshqError(f"--out {out} holds a run {problem}: pass a new --out, or --overwrite "
                         "to start over")
    if steps < trained:
        raise VrshqError(f"--steps {steps}: --out {out} already holds {trained} steps of this run; "
                         f"pass --steps {trained} or more to resume it, a new --out, or --overwrite "
                         "to start over")
    return trained


__all__ = ["TRAIN_DIR", "data_signature", "model_signature", "prepare_out", "run_record"]
