"""J&F of a model on an exported split: run VRS-HQ on each video's expressions and score it.

Only the split's annotator-verified frames are scored (``verified_frames.json``, see
:mod:`vrshq.evaluation.verified`): the rest of its masks are the backend's own propagation.

The split's frames and masks (``vrshq corrections export --format revos``) become DAVIS-layout
palette folders (ground truth from ``mask_dict.json``, a null mask counting as background as
the official evaluation reads it; predictions from ``Vrshq.segment``, object id = the
expression's ``obj_id``), scored by :func:`vrshq.evaluation.evaluate_folders` (DAVIS-2017 J&F).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vrshq.errors import VrshqError
from vrshq.evaluation import evaluate_folders
from vrshq.evaluation.verified import evaluate_verified, read_verified
from vrshq.masks import decode_rle, write_palette_folder
from vrshq.model.pipeline import Vrshq
from vrshq.video.reader import open_video


def split_root(data: str | Path, split: str) -> Path:
    """``data/split``, checked to be an exported split (it has ``meta_expressions.json``)."""
    root = Path(data) / split
    if not (root / "meta_expressions.json").is_file():
        raise VrshqError(f"{root}: no meta_expressions.json (export with --holdout for a valid split)")
    return root


def write_ground_truth(root: Path, out: Path) -> dict[str, list[tuple[int, str]]]:
    """GT palette folders of every video of the split; per video its (obj_id, expression) list."""
    meta = json.loads((root / "meta_expressions.json").read_text())["videos"]
    masks = json.loads((root / "mask_dict.json").read_text())
    objects: dict[str, list[tuple[int, str]]] = {}
    for video, data in sorted(meta.items()):
        n = len(data["frames"])
        labels: list[np.ndarray | None] = [None] * n
        objects[video] = []
        for _, exp in sorted(data["expressions"].items(), key=lambda kv: int(kv[0])):
            obj_id = int(exp["obj_id"][0])
            objects[video].append((obj_id, str(exp["exp"])))
            for anno in exp["anno_id"]:
                for i, rle in enumerate(masks[str(anno)]):
                    if rle is None:
                        continue
                    m = decode_rle(rle)
                    if labels[i] is None:
                        labels[i] = np.zeros(m.shape, np.uint8)
                    labels[i][m] = obj_id
        shape = next((x.shape for x in labels if x is not None), None)
        if shape is None:
            raise VrshqError(f"{root}: video {video} has no mask on any frame")
        write_palette_folder(out / video, [(i, x if x is not None else np.zeros(shape, np.uint8))
                                           for i, x in enumerate(labels)])
    return objects


def evaluate_model(model: Vrshq, data: str | Path, split: str = "valid",
                   work: str | Path | None = None,
                   progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """J&F of ``model`` on ``data/split`` (the evaluate_folders result, plus the split)."""
    root = split_root(data, split)
    with tempfile.TemporaryDirectory(prefix="vrshq-eval-") as tmp:
        base = Path(work) if work is not None else Path(tmp)
        gt_dir, pred_dir = base / "gt", base / "pred"
        objects = write_ground_truth(root, gt_dir)
        for k, (video, objs) in enumerate(objects.items()):
            reader = open_video(root / "JPEGImages" / video)
            try:
                results = model.segment(reader, [text for _, text in objs])
                frames = []
                for i in range(len(reader)):
                    label = np.zeros((reader.height, reader.width), np.uint8)
                    for (obj_id, _), r in zip(objs, results):
                        if r.track.has(i):
                            label[r.track.mask(i)] = obj_id
                    frames.append((i, label))
            finally:
                reader.close()
            write_palette_folder(pred_dir / video, frames)
            if progress is not None:
                progress(k + 1, len(objects))
        # Only annotator-verified frames are ground truth (see vrshq.evaluation.verified); an
        # export made before they were recorded is scored on every frame, and says so.
        verified = read_verified(root)
        if verified is None:
            result = evaluate_folders(pred_dir, gt_dir)
            result.update({"verified_frames": None, "ground_truth": "every exported frame "
                           "(the export records no annotator-verified frames)"})
        else:
            result = evaluate_verified(pred_dir, gt_dir, verified)
    result["split"] = split
    result["model_version"] = model.version
    return result


__all__ = ["evaluate_model", "split_root", "write_ground_truth"]
