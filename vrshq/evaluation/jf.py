"""J&F for video object segmentation, as the DAVIS-2017 toolkit defines it.

* J, region similarity: the IoU of the predicted and ground-truth masks of one object
  on one frame; two empty masks give J = 1.
* F, boundary F-measure: precision and recall of the two masks' 1-pixel boundaries
  (:func:`seg2bmap`), a boundary pixel counting as matched when the other boundary,
  dilated by a disk of radius ``ceil(0.008 * frame diagonal)``, covers it.
* J&F = (J + F) / 2.

This is our own numpy code, written to the definitions of ``davisvideochallenge/
davis2017-evaluation`` (``davis2017/metrics.py``: ``db_eval_iou``, ``f_measure``,
``_seg2bmap``; ``davis2017/evaluation.py``: ``DAVISEvaluation.evaluate`` for the
semi-supervised task; ``davis2017/davis.py``: reading the ground truth). No void
pixels: the semi-supervised task passes none.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vrshq.errors import EvaluationError, MaskFormatError
from vrshq.evaluation.layout import VideoPair, pair_videos
from vrshq.masks.palette import read_palette_folder

BOUND_TH = 0.008
"""Default boundary tolerance: a fraction of the frame diagonal (< 1) or pixels (>= 1)."""

VOID_ID = 255
"""The DAVIS void label: ``davis.py`` turns 255 in the ground truth into background."""


# --- one frame, one object ---------------------------------------------------------------


def region_similarity(pred: Any, gt: Any) -> float:
    """J: |pred ∩ gt| / |pred ∪ gt| of two boolean HxW masks; 1.0 when both are empty."""
    p, g = _pair(pred, gt)
    union = np.count_nonzero(p | g)
    if union == 0:
        return 1.0
    return np.count_nonzero(p & g) / union


def boundary_tolerance(shape: Sequence[int], bound_th: float = BOUND_TH) -> int:
    """The dilation radius in pixels: ``bound_th`` itself when >= 1, else
    ``ceil(bound_th * sqrt(H² + W²))`` (7.84 -> 8 px at 480x854; exactly 1.0 stays 1)."""
    if not bound_th > 0:
        raise ValueError(f"bound_th must be > 0, got {bound_th!r}")
    if bound_th >= 1:
        if bound_th != int(bound_th):
            raise ValueError(f"a tolerance in pixels must be a whole number, got {bound_th!r}")
        return int(bound_th)
    h, w = int(shape[0]), int(shape[1])
    # sqrt of the exact integer sum: the same double as the toolkit's np.linalg.norm((H, W)).
    return math.ceil(bound_th * math.sqrt(h * h + w * w))


def seg2bmap(mask: Any, width: int | None = None, height: int | None = None) -> np.ndarray:
    """The 1-pixel boundary map of a mask (D. Martin's BSDS ``seg2bmap``, as in the toolkit).

    A pixel is a boundary pixel when it differs from any of its east, south and south-east
    neighbours that lie inside the image, so the boundary sits half a pixel towards the
    origin: a mask touching the right or bottom edge has no boundary along that edge, and
    a mask covering the whole frame has none at all.

    ``width``/``height`` (at most the mask's, same aspect ratio within 0.01) give a smaller
    map: boundary pixel (y, x) lands on (floor(y * height / h), floor(x * width / w)), the
    mapping of the MATLAB original (the toolkit's Python port, which never uses this path,
    writes ``+`` where the original multiplies).
    """
    seg = np.asarray(mask)
    if seg.ndim != 2 or seg.size == 0:
        raise MaskFormatError(f"seg2bmap needs a non-empty 2-D mask, got shape {seg.shape}")
    seg = seg.astype(bool)
    h, w = seg.shape
    width = w if width is None else int(width)
    height = h if height is None else int(height)
    if not (0 < width <= w and 0 < height <= h) or abs(width / height - w / h) > 0.01:
        raise MaskFormatError(f"cannot convert a {w}x{h} mask to a {width}x{height} boundary map")
    b = np.zeros((h, w), dtype=bool)
    b[:, :-1] |= seg[:, :-1] != seg[:, 1:]  # east
    b[:-1, :] |= seg[:-1, :] != seg[1:, :]  # south
    b[:-1, :-1] |= seg[:-1, :-1] != seg[1:, 1:]  # south-east
    if (height, width) == (h, w):
        return b
    bmap = np.zeros((height, width), dtype=bool)
    ys, xs = np.nonzero(b)
    bmap[(ys * height) // h, (xs * width) // w] = True
    return bmap


def dilate_disk(mask: Any, radius: int) -> np.ndarray:
    """Binary dilation by the disk {(dy, dx): dy² + dx² <= radius²} (skimage's ``disk``),
    with nothing outside the image (``cv2.dilate``'s default border)."""
    m = np.asarray(mask, dtype=bool)
    r = int(radius)
    if r < 0:
        raise ValueError(f"radius must be >= 0, got {radius!r}")
    h, w = m.shape
    # The disk is a stack of horizontal runs: row dy spans dx in [-k, k], k = isqrt(r² - dy²).
    # A run dilation is a window sum over a cumulative sum; then the rows are OR-ed in.
    csum = np.zeros((h, w + 1), dtype=np.int32)
    np.cumsum(m, axis=1, out=csum[:, 1:])
    cols = np.arange(w)
    runs: dict[int, np.ndarray] = {}
    out = np.zeros_like(m)
    for dy in range(-r, r + 1):
        if abs(dy) >= h:
            continue
        k = math.isqrt(r * r - dy * dy)
        if k not in runs:
            lo = np.clip(cols - k, 0, w)
            hi = np.clip(cols + k + 1, 0, w)
            runs[k] = (csum[:, hi] - csum[:, lo]) > 0
        run = runs[k]
        if dy >= 0:
            out[: h - dy] |= run[dy:]
        else:
            out[-dy:] |= run[: h + dy]
    return out


def boundary_f(pred: Any, gt: Any, bound_th: float = BOUND_TH) -> float:
    """F: the boundary F-measure of two boolean HxW masks (the toolkit's ``f_measure``).

    precision = |B(pred) ∧ dilate(B(gt))| / |B(pred)|, recall = |B(gt) ∧ dilate(B(pred))| /
    |B(gt)|, F = 2PR / (P + R). On the boundaries B (not the masks): both empty -> 1;
    only one empty -> 0 (P, R = 1, 0 or 0, 1); P + R = 0 -> 0.
    """
    p, g = _pair(pred, gt)
    radius = boundary_tolerance(p.shape, bound_th)
    pb, gb = seg2bmap(p), seg2bmap(g)
    n_p, n_g = np.count_nonzero(pb), np.count_nonzero(gb)
    if n_p == 0 and n_g == 0:
        return 1.0
    if n_p == 0 or n_g == 0:
        return 0.0
    precision = np.count_nonzero(pb & dilate_disk(gb, radius)) / n_p
    recall = np.count_nonzero(gb & dilate_disk(pb, radius)) / n_g
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def _pair(pred: Any, gt: Any) -> tuple[np.ndarray, np.ndarray]:
    p, g = np.asarray(pred), np.asarray(gt)
    if p.ndim != 2 or p.shape != g.shape:
        raise MaskFormatError(f"masks must be 2-D and of one size, got {p.shape} and {g.shape}")
    return p.astype(bool), g.astype(bool)


# --- one video ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectScores:
    """One object of one video: per-frame J and F over the evaluated frames, and their means."""

    obj_id: int
    J_frames: list[float] = field(repr=False)
    F_frames: list[float] = field(repr=False)

    @property
    def J(self) -> float:
        return float(np.mean(self.J_frames))

    @property
    def F(self) -> float:
        return float(np.mean(self.F_frames))

    @property
    def JF(self) -> float:
        return (self.J + self.F) / 2


def gt_object_ids(gt_frames: Iterable[Any]) -> list[int]:
    """The object ids of a video: every non-zero, non-void (255) value in its GT frames."""
    ids: set[int] = set()
    for labels in gt_frames:
        ids.update(int(v) for v in np.unique(np.asarray(labels)))
    ids.discard(0)
    ids.discard(VOID_ID)
    return sorted(ids)


def evaluate_video(pred_frames: Sequence[Any], gt_frames: Sequence[Any],
                   obj_ids: Iterable[int] | None = None, *, bound_th: float = BOUND_TH,
                   skip_first_and_last: bool = True) -> dict[int, ObjectScores]:
    """J and F of every object of one video, from aligned lists of HxW label maps.

    ``obj_ids`` defaults to :func:`gt_object_ids` of all ``gt_frames`` (first and last
    included). An object missing from a predicted frame is an empty mask there. GT value
    255 is void and counts as background, as the toolkit's ``davis.py`` reads it. With
    ``skip_first_and_last`` (the semi-supervised protocol: ``evaluation.py`` scores GT
    frames 1..N-2) the first and last frame are not scored, so a video needs >= 3 frames.
    A predicted id that is not a GT object raises, as the toolkit aborts on it.
    """
    if len(pred_frames) != len(gt_frames):
        raise EvaluationError(f"{len(pred_frames)} predicted frames but "
                              f"{len(gt_frames)} ground-truth frames")
    ids = gt_object_ids(gt_frames) if obj_ids is None else sorted({int(i) for i in obj_ids})
    frames = range(len(gt_frames))
    if skip_first_and_last:
        if len(gt_frames) < 3:
            raise EvaluationError(f"{len(gt_frames)} frame(s): the semi-supervised protocol skips "
                                  "the first and last frame, so a video needs at least 3")
        frames = range(1, len(gt_frames) - 1)
    elif not gt_frames:
        raise EvaluationError("no frames to evaluate")
    j_frames: dict[int, list[float]] = {i: [] for i in ids}
    f_frames: dict[int, list[float]] = {i: [] for i in ids}
    for t in frames:
        pred, gt = np.asarray(pred_frames[t]), np.asarray(gt_frames[t])
        if pred.ndim != 2 or pred.shape != gt.shape:
            raise EvaluationError(f"frame {t}: predicted size {_size(pred)} but ground truth {_size(gt)}")
        extra = sorted({int(v) for v in np.unique(pred)} - {0, *ids})
        if extra:
            raise EvaluationError(f"frame {t}: predicted object id(s) {extra} are not in the "
                                  f"ground truth (objects {ids})")
        for i in ids:
            p, g = pred == i, gt == i
            j_frames[i].append(region_similarity(p, g))
            f_frames[i].append(boundary_f(p, g, bound_th))
    return {i: ObjectScores(i, j_frames[i], f_frames[i]) for i in ids}


def _size(a: np.ndarray) -> str:
    return f"{a.shape[1]}x{a.shape[0]}" if a.ndim == 2 else f"shape {a.shape}"


# --- DAVIS-layout folders ------------------------------------------------------------------


def evaluate_folders(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike, *,
                     bound_th: float = BOUND_TH,
                     progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """J, F and J&F of a folder of predicted videos against a folder of ground truth.

    The layouts and how videos are matched: :mod:`vrshq.evaluation.layout` (DAVIS folders,
    one sub-folder per video with one ``<frame>.png`` label map per frame, pixel value =
    object id; or ``vrshq track``/``segment`` outputs). Every GT video must have a prediction
    (extra predicted videos are ignored, as the toolkit only walks the GT); the scored frames
    are the GT frames but the first and last, and the prediction must have each of them and
    no frame the GT lacks. ``progress(done, total)`` is called after each video.

    Means, as ``davis2017/evaluation.py`` + ``evaluation_method.py`` take them: an object's
    J (F) is the mean over its scored frames; a video's J (F) is the mean over its objects;
    the overall J (F) is the mean over **all objects of all videos** (not over videos), and
    every J&F is (J + F) / 2. Returns a JSON-ready dict::

        {"J", "F", "J&F", "num_videos", "num_objects",
         "videos": {name: {"J", "F", "J&F", "frames": [scored frame indices],
                           "objects": {"<id>": {"J", "F", "J&F"}}}}}
    """
    pairs = pair_videos(pred_dir, gt_dir)
    out_videos: dict[str, Any] = {}
    all_scores: list[ObjectScores] = []
    for done, pair in enumerate(pairs, 1):
        scored, scores = _score_video(pair, bound_th)
        objects = {str(i): _jf(s.J, s.F) for i, s in scores.items()}
        out_videos[pair.name] = {**_jf_mean(list(scores.values())), "frames": scored, "objects": objects}
        all_scores.extend(scores.values())
        if progress is not None:
            progress(done, len(pairs))

    if not all_scores:
        raise EvaluationError(f"{Path(gt_dir)}: the ground truth has no objects (every pixel is 0 or 255)")
    return {**_jf_mean(all_scores), "num_videos": len(pairs), "num_objects": len(all_scores),
            "videos": out_videos}


def _score_video(pair: VideoPair, bound_th: float) -> tuple[list[int], dict[int, ObjectScores]]:
    """The scored GT frames of one video and its objects' scores; EvaluationError on a mismatch."""
    gt = _read_folder(pair.gt)
    if not gt:
        raise EvaluationError(f"{pair.gt}: no label-map PNGs")
    pred = _read_folder(pair.pred)
    gt_idx = sorted(gt)
    scored = gt_idx[1:-1]
    if len(gt_idx) < 3:
        raise EvaluationError(f"{pair.gt}: {len(gt_idx)} frame(s); the semi-supervised "
                              "protocol skips the first and last, so a video needs at least 3")
    lacking = [t for t in scored if t not in pred]
    unknown = sorted(set(pred) - set(gt))
    if lacking or unknown:
        detail = "; ".join(part for part in (
            f"missing frame(s) {_frames(lacking)}" if lacking else "",
            f"frame(s) {_frames(unknown)} not in the ground truth" if unknown else "") if part)
        raise EvaluationError(f"{pair.pred}: {len(pred)} predicted frame(s) for "
                              f"{len(gt)} ground-truth frame(s): {detail}")
    for t in scored:
        if pred[t].shape != gt[t].shape:
            raise EvaluationError(f"{pair.pred}: frame {t} is {_size(pred[t])} but the "
                                  f"ground truth is {_size(gt[t])}")
    ids = gt_object_ids(gt.values())
    try:
        scores = evaluate_video([pred[t] for t in scored], [gt[t] for t in scored], ids,
                                bound_th=bound_th, skip_first_and_last=False)
    except EvaluationError as exc:
        raise EvaluationError(f"{pair.pred}: {exc}") from None
    return scored, scores


def _read_folder(directory: Path) -> dict[int, np.ndarray]:
    try:
        return dict(read_palette_folder(directory))
    except OSError as exc:  # PIL: not a PNG at all, or truncated
        raise MaskFormatError(f"{directory}: not a readable label-map PNG ({exc})") from None


def _frames(indices: list[int]) -> str:
    shown = ", ".join(str(t) for t in indices[:5])
    return shown + (f" and {len(indices) - 5} more" if len(indices) > 5 else "")


def _jf(j: float, f: float) -> dict[str, float]:
    return {"J": float(j), "F": float(f), "J&F": (float(j) + float(f)) / 2}


def _jf_mean(scores: list[ObjectScores]) -> dict[str, float | None]:
    if not scores:  # a video whose ground truth holds no object
        return {"J": None, "F": None, "J&F": None}
    return _jf(np.mean([s.J for s in scores]), np.mean([s.F for s in scores]))
