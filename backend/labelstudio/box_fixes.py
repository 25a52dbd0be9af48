"""A moved box is a correction: an annotator's box keyframes -> box corrections on their frames.

The rule, per object whose ``videorectangle`` track the annotator changed:

* Only the annotation's keyframes count (Label Studio interpolates the frames between them, so
  they are the annotator's intent); a keyframe equal (within 1e-3 percentage points, as the
  annotation diff compares boxes) to a keyframe on the same frame of any box track the backend
  predicted for the object (the one compared with, the current one, the earlier ones) is the
  backend's own, not an edit.
* A new or changed keyframe on frame N is a box correction on N when one of its edges lies
  more than :data:`MOVE_FRACTION` of the frame's size (1%: 1 percentage point of the width for
  x0/x1, of the height for y0/y1) from the box the prediction showed on N, or when the
  prediction showed none there. Exactly 1% is not "more than": no correction (the tie rule).
* A frame whose mask the same annotation also edited (its keyframe page or an extra page) keeps
  the mask correction: the drawn mask says more than its box.
* A disabled keyframe (``enabled: false``: Label Studio shows the box on N and hides the track
  after it) still shows its box on N, so it counts like any other; toggling ``enabled`` alone
  moves no box and is only logged.
* The box (percent of the frame) becomes pixels of the video, clipped to the frame; a box with
  no area left is not a correction.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from vrshq.masks import videorectangle_to_boxes
from vrshq.plugins.base import Correction

MOVE_FRACTION = 0.01  # of the frame's width (x edges) and height (y edges)
SAME_KEYFRAME = 1e-3  # percentage points: the annotation diff's box tolerance
_KEYS = ("x", "y", "width", "height")


def _keyframes(sequence: Iterable[Any] | None, frames_count: int) -> dict[int, tuple[float, ...]]:
    """0-based frame -> (x, y, width, height) percent, for well-formed keyframes in the video."""
    out: dict[int, tuple[float, ...]] = {}
    for item in sequence or []:
        if not isinstance(item, Mapping):
            continue
        try:
            frame = int(item["frame"])
            values = tuple(float(item[k]) for k in _KEYS)
        except (KeyError, TypeError, ValueError):
            continue
        if 1 <= frame <= frames_count and all(math.isfinite(v) for v in values):
            out[frame - 1] = values
    return out


def _edges(box: Sequence[float]) -> np.ndarray:
    x, y, w, h = (float(v) for v in box)
    return np.array([x, y, x + w, y + h])


def box_fixes(obj_id: int, annotated: Sequence[Any] | None, predicted: Sequence[Any] | None,
              backend_tracks: Iterable[Sequence[Any]], frames_count: int, size: tuple[int, int],
              masked_frames: Iterable[int] = ()) -> list[Correction]:
    """The box corrections (pixels, frame order) of an object's annotated box sequence.

    ``predicted`` is the sequence the annotation is compared with (the prediction the editor
    showed), ``backend_tracks`` every other sequence the backend predicted for the object,
    ``size`` the video's (height, width), ``masked_frames`` the frames whose mask the same
    annotation edited. See the module docstring for the rule.
    """
    height, width = size
    ours = [_keyframes(s, frames_count) for s in [predicted, *backend_tracks]]
    shown: dict[int, Any] = {}
    if predicted:
        shown = videorectangle_to_boxes({"sequence": list(predicted)}, frames_count=frames_count)
    skip = {int(f) for f in masked_frames}
    out = []
    for frame, box in sorted(_keyframes(annotated, frames_count).items()):
        if frame in skip:
            continue
        if any(frame in k and max(abs(a - b) for a, b in zip(k[frame], box)) <= SAME_KEYFRAME
               for k in ours):
            continue  # the backend's own keyframe, kept by the editor
        before = shown.get(frame)
        if before is not None:
            moved = np.abs(_edges(box) - _edges([before[k] for k in _KEYS]))
            if not (moved > 100 * MOVE_FRACTION).any():
                continue
        with np.errstate(over="ignore"):  # absurd sizes: clipped here, refused by the log's geometry check
            pixels = _edges(box) * np.array([width, height, width, height]) / 100
        x0, x1 = np.clip(pixels[[0, 2]], 0, width)
        y0, y1 = np.clip(pixels[[1, 3]], 0, height)
        if x1 <= x0 or y1 <= y0:
            continue
        out.append(Correction(int(obj_id), frame, box=(float(x0), float(y0), float(x1), float(y1))))
    return out


def carried(corrections: Iterable[Correction], fix: Correction) -> bool:
    """Whether ``corrections`` (an object's applied ones) hold ``fix``: a box (or clicks) on its
    frame with the same values (to 1e-6 pixels: they went through JSON)."""
    for c in corrections:
        if int(c.frame) != int(fix.frame) or c.mask is not None:
            continue
        if fix.box is not None and c.box is not None \
                and np.allclose(np.asarray(c.box, float), np.asarray(fix.box, float), rtol=0, atol=1e-6):
            return True
        if fix.points is not None and c.points is not None and list(c.point_labels or []) == \
                list(fix.point_labels or []) and np.allclose(np.asarray(c.points, float),
                                                              np.asarray(fix.points, float), rtol=0, atol=1e-6):
            return True
    return False


__all__ = ["MOVE_FRACTION", "box_fixes", "carried"]
