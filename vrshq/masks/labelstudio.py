"""Label Studio ``videorectangle`` results from tracks, and back to per-frame boxes.

Conventions (docs/brief-labelstudio.md §2.7 and §3.3):

* ``frame`` in a sequence item is 1-based: LS frame N shows decoder frame N - 1. Everything
  outside this module uses 0-based decoder indices.
* ``time`` is ``frame / fps`` with the **1-based** LS frame, as the brief states ("time =
  frame / framerate", what the frontend writes). The frontend does not read it back.
* Coordinates are Label Studio percent boxes (see :mod:`vrshq.masks.boxes`).

How the frontend shows a track, which the output here is built for and which
:func:`videorectangle_to_boxes` reproduces: nothing before the first keyframe; between two
consecutive keyframes x, y, width and height are interpolated linearly; a keyframe with
``enabled: false`` is shown on its own frame and hides the box until the next keyframe;
after the last keyframe the box is held while that keyframe is enabled.

So a track becomes visible spans (maximal runs of consecutive frames with a non-empty
mask). Each span's keyframes are enabled, except that the span's last keyframe gets
``enabled: false`` unless the span runs to the video's last frame (nothing follows to hide).
Within a span only the keyframes needed to stay within ``tolerance`` percentage points of
every frame's own box are kept (Douglas-Peucker on the 4-D box path).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vrshq.errors import MaskFormatError
from vrshq.masks.boxes import PercentBox
from vrshq.masks.track import Track

BOX_KEYS = ("x", "y", "width", "height")

# Interpolation in float64 is off by ~1e-13 for exactly linear motion; without this slack
# tolerance=0 would keep frames that are collinear in exact arithmetic.
_FLOAT_SLACK = 1e-9


def simplify_keyframes(boxes: Any, tolerance: float) -> list[int]:
    """Indices of the rows to keep from an (n, 4) array of consecutive frames' boxes.

    The first and last rows are always kept. Every dropped row differs by at most
    ``tolerance`` (max abs over the four coordinates) from the linear interpolation
    between the kept rows either side of it.
    """
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance!r}")
    points = np.asarray(boxes, dtype=np.float64)
    n = len(points)
    if n <= 2:
        return list(range(n))
    keep = np.zeros(n, dtype=bool)
    keep[0] = keep[-1] = True
    # Explicit stack: a worst-case split sequence is n deep, too deep for recursion.
    stack = [(0, n - 1)]
    while stack:
        i, j = stack.pop()
        if j - i < 2:
            continue
        # Same formula as the frontend: start + (end - start) * r.
        r = (np.arange(i + 1, j) - i) / (j - i)
        line = points[i] + (points[j] - points[i]) * r[:, None]
        deviation = np.abs(points[i + 1 : j] - line).max(axis=1)
        k = int(np.argmax(deviation))
        if deviation[k] > tolerance + _FLOAT_SLACK:
            split = i + 1 + k
            keep[split] = True
            stack.append((i, split))
            stack.append((split, j))
    return np.flatnonzero(keep).tolist()


def boxes_to_sequence(
    boxes: Mapping[int, PercentBox | None],
    fps: float,
    frames_count: int,
    tolerance: float = 0.5,
) -> list[dict[str, Any]]:
    """Label Studio ``sequence`` items for per-frame percent boxes (0-based frame -> box or None).

    A frame that is missing or maps to None counts as absent. Frames at or past
    ``frames_count`` are ignored: Label Studio cannot show them.
    """
    _check_video(fps, frames_count)
    present = sorted(f for f, box in boxes.items() if box is not None and f < frames_count)
    if present and present[0] < 0:
        raise MaskFormatError(f"frame indices must be >= 0, got {present[0]}")
    sequence: list[dict[str, Any]] = []
    for span in _runs(present):
        values = np.array([[boxes[f][key] for key in BOX_KEYS] for f in span], dtype=np.float64)
        kept = simplify_keyframes(values, tolerance)
        ends_before_video = span[-1] < frames_count - 1
        for pos in kept:
            enabled = not (pos == len(span) - 1 and ends_before_video)
            sequence.append(_keyframe(span[pos], values[pos], enabled, fps))
    return sequence


def track_to_videorectangle(
    track: Track,
    fps: float,
    frames_count: int,
    labels: list[str] | None = None,
    tolerance: float = 0.5,
    region_id: str | None = None,
    from_name: str = "box",
    to_name: str = "video",
) -> dict[str, Any]:
    """A full Label Studio ``videorectangle`` result for a track (boxes of its masks).

    ``region_id`` defaults to ``"trk_<obj_id>"``; reply with a region's own id to replace it
    in the editor. A track with no non-empty mask gives an empty ``sequence``.
    """
    _check_video(fps, frames_count)
    boxes = {f: track.percent_box(f) for f in track.frames()}
    return {
        "id": region_id if region_id is not None else f"trk_{track.obj_id}",
        "from_name": from_name,
        "to_name": to_name,
        "type": "videorectangle",
        # What the editor serialises and LS 1.23.2 accepts in predictions (brief §2.7).
        "origin": "manual",
        "value": {
            "framesCount": int(frames_count),
            "duration": float(frames_count / fps),
            "sequence": boxes_to_sequence(boxes, fps, frames_count, tolerance),
            "labels": list(labels) if labels is not None else [],
        },
    }


def videorectangle_to_boxes(
    result_value: Mapping[str, Any], frames_count: int | None = None
) -> dict[int, PercentBox]:
    """Per-frame percent boxes (0-based frame -> box) that Label Studio shows for a value.

    ``result_value`` is a ``videorectangle`` result's ``value``; ``frames_count`` defaults
    to its ``framesCount``. Frames where the box is hidden are left out.
    """
    if not isinstance(result_value, Mapping) or "sequence" not in result_value:
        raise MaskFormatError("a videorectangle value needs a 'sequence'")
    if frames_count is None:
        frames_count = result_value.get("framesCount")
        if not isinstance(frames_count, int) or isinstance(frames_count, bool) or frames_count < 0:
            raise MaskFormatError(f"videorectangle 'framesCount' must be a non-negative int, got {frames_count!r}")
    keyframes = _parse_sequence(result_value["sequence"])
    out: dict[int, PercentBox] = {}
    for idx, (frame, values, enabled) in enumerate(keyframes):
        nxt = keyframes[idx + 1] if idx + 1 < len(keyframes) else None
        if 1 <= frame <= frames_count:
            out[frame - 1] = dict(zip(BOX_KEYS, values.tolist()))
        if not enabled:
            continue
        stop = (nxt[0] - 1) if nxt is not None else frames_count
        for f in range(max(frame + 1, 1), min(stop, frames_count) + 1):
            if nxt is None:
                shown = values
            else:
                r = (f - frame) / (nxt[0] - frame)
                shown = values + (nxt[1] - values) * r
            out[f - 1] = dict(zip(BOX_KEYS, shown.tolist()))
    return out


def _check_video(fps: float, frames_count: int) -> None:
    if isinstance(fps, bool) or not (isinstance(fps, numbers.Real) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    if isinstance(frames_count, bool) or not isinstance(frames_count, numbers.Integral) or frames_count < 0:
        raise ValueError(f"frames_count must be a non-negative int, got {frames_count!r}")


def _runs(frames: list[int]) -> list[list[int]]:
    """Split sorted frame indices into runs of consecutive frames."""
    runs: list[list[int]] = []
    for f in frames:
        if runs and f == runs[-1][-1] + 1:
            runs[-1].append(f)
        else:
            runs.append([f])
    return runs


def _keyframe(frame_idx: int, values: np.ndarray, enabled: bool, fps: float) -> dict[str, Any]:
    ls_frame = frame_idx + 1
    x, y, width, height = (float(v) for v in values)
    return {
        "frame": ls_frame,
        "x": x,
        "y": y,
        "width": width,
        "height": height,
        "rotation": 0,
        "enabled": enabled,
        # 1-based frame / fps, as the brief specifies (§2.7 "time = frame / framerate").
        "time": float(ls_frame / fps),
    }


def _parse_sequence(sequence: Any) -> list[tuple[int, np.ndarray, bool]]:
    """Validated keyframes ``(ls_frame, [x, y, w, h], enabled)`` sorted by frame."""
    if not isinstance(sequence, Sequence) or isinstance(sequence, (str, bytes)):
        raise MaskFormatError("videorectangle 'sequence' must be a list of keyframes")
    by_frame: dict[int, tuple[int, np.ndarray, bool]] = {}
    for item in sequence:
        if not isinstance(item, Mapping):
            raise MaskFormatError(f"videorectangle keyframe must be an object, got {item!r}")
        frame = item.get("frame")
        if not isinstance(frame, int) or isinstance(frame, bool):
            raise MaskFormatError(f"videorectangle keyframe needs an int 'frame', got {frame!r}")
        try:
            values = np.array([float(item[key]) for key in BOX_KEYS], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise MaskFormatError(f"videorectangle keyframe {frame} needs numeric x, y, width, height") from exc
        # The editor takes the first keyframe it finds for a frame; keep that one.
        by_frame.setdefault(frame, (frame, values, bool(item.get("enabled", True))))
    return [by_frame[f] for f in sorted(by_frame)]
