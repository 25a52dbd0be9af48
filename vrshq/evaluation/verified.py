"""J&F over annotator-verified frames only: the frames an annotator corrected or reviewed.

An exported split's masks are mostly the backend's own propagation; scoring a model against
them measures agreement with the backend's model, not accuracy (the untrained model "wins").
``verified_frames.json`` beside a split's ``meta_expressions.json`` (written by ``vrshq
corrections export``) lists per video and object the frame positions an annotator verified::

    {"format": "vrshq-verified-frames/1", "videos": {video: {"<obj_id>": [frame positions]}}}

and only those (object, frame) pairs are scored: an object's J (F) is its mean over its verified
frames, the overall J (F) the mean over objects that have any (as DAVIS-2017 averages objects).
No first/last-frame rule: the model is prompted by text, no frame is given to it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from vrshq.evaluation.jf import BOUND_TH, EvaluationError, boundary_f, region_similarity
from vrshq.masks import read_palette_png

FILENAME = "verified_frames.json"
FORMAT = "vrshq-verified-frames/1"


def read_verified(split_root: str | os.PathLike) -> dict[str, dict[int, list[int]]] | None:
    """The split's verified frames ``{video: {obj_id: [positions]}}``; None for an export without them."""
    path = Path(split_root) / FILENAME
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    if doc.get("format") != FORMAT:
        raise EvaluationError(f"{path}: not a verified-frames file ({FORMAT})")
    return {str(v): {int(o): sorted(int(f) for f in frames) for o, frames in objs.items()}
            for v, objs in doc["videos"].items()}


def count_verified(verified: dict[str, dict[int, list[int]]]) -> int:
    """How many (object, frame) pairs are verified."""
    return sum(len(frames) for objs in verified.values() for frames in objs.values())


def evaluate_verified(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike,
                      verified: dict[str, dict[int, list[int]]], *,
                      bound_th: float = BOUND_TH) -> dict[str, Any]:
    """J, F and J&F over the verified (object, frame) pairs; the shape of ``evaluate_folders``.

    Adds ``verified_frames`` (the pairs scored). With none, every score is None.
    """
    pred_root, gt_root = Path(pred_dir), Path(gt_dir)
    videos: dict[str, Any] = {}
    object_scores: list[tuple[float, float]] = []
    for video, objs in sorted(verified.items()):
        per_object: dict[str, Any] = {}
        frames_used: set[int] = set()
        for obj_id, frames in sorted(objs.items()):
            js, fs = [], []
            for f in frames:
                pred, gt = (_read(root / video / f"{f:05d}.png") for root in (pred_root, gt_root))
                if pred.shape != gt.shape:
                    raise EvaluationError(f"{video}: frame {f} is predicted {pred.shape[1]}x{pred.shape[0]} "
                                          f"but the ground truth is {gt.shape[1]}x{gt.shape[0]}")
                js.append(region_similarity(pred == obj_id, gt == obj_id))
                fs.append(boundary_f(pred == obj_id, gt == obj_id, bound_th))
            if js:
                j, f_ = float(np.mean(js)), float(np.mean(fs))
                per_object[str(obj_id)] = _jf(j, f_) | {"verified_frames": len(js)}
                object_scores.append((j, f_))
                frames_used.update(frames)
        if per_object:
            videos[video] = {**_mean([(o["J"], o["F"]) for o in per_object.values()]),
                             "frames": sorted(frames_used), "objects": per_object}
    return {**_mean(object_scores), "num_videos": len(videos), "num_objects": len(object_scores),
            "videos": videos, "verified_frames": count_verified(verified),
            "ground_truth": "annotator-verified frames (corrected or reviewed)"}


def _read(path: Path) -> np.ndarray:
    if not path.is_file():
        raise EvaluationError(f"{path}: missing (a verified frame must be predicted and in the ground truth)")
    return read_palette_png(path)


def _jf(j: float, f: float) -> dict[str, float]:
    return {"J": j, "F": f, "J&F": (j + f) / 2}


def _mean(scores: list[tuple[float, float]]) -> dict[str, float | None]:
    if not scores:
        return {"J": None, "F": None, "J&F": None}
    return _jf(float(np.mean([s[0] for s in scores])), float(np.mean([s[1] for s in scores])))


__all__ = ["FILENAME", "FORMAT", "count_verified", "evaluate_verified", "read_verified"]
