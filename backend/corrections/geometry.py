"""Box geometry from Label Studio checked against the task's video before anything is logged.

A ``videorectangle`` keyframe is ``{frame, x, y, width, height, ...}``: ``frame`` is Label
Studio's 1-based frame number, the rest are percentages of the frame. A corrected sequence is
logged only when

* it has at most one keyframe per frame of the video (no more entries than frames);
* every frame lies in ``1..frames_count``;
* every number is finite, and no coordinate is absurd: ``x``/``y`` within -100..200 and
  ``width``/``height`` within 0..200 percent (beyond that the box is refused, with the reason);
* the box overlaps the frame: it is then clipped to the frame (0..100 percent), as Label Studio
  itself draws it; a box wholly outside the frame is refused.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from vrshq.backend.answers import shorten
from vrshq.backend.tasks.inputs import RequestError

LOW, HIGH = -100.0, 200.0  # percent: coordinates beyond these are not a box on this frame


def _number(where: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise RequestError(f"{where}.{key} must be a number, got {shorten(repr(value), 40)}")
    try:
        out = float(value)
    except OverflowError:
        out = math.inf
    if not math.isfinite(out):
        raise RequestError(f"{where}.{key} must be a finite number, got {shorten(repr(value), 40)}")
    return out


def checked_sequence(sequence: Sequence[Mapping[str, Any]], frames_count: int,
                     where: str = "the box track") -> list[dict[str, Any]]:
    """The keyframes of ``sequence`` checked against a video of ``frames_count`` frames and
    clipped to the frame; RequestError (400) naming the first keyframe that cannot be."""
    if len(sequence) > frames_count:
        raise RequestError(f"{where} has {len(sequence)} keyframes, more than the video's "
                           f"{frames_count} frames")
    out = []
    for i, item in enumerate(sequence):
        at = f"{where}[{i}]"
        if not isinstance(item, Mapping):
            raise RequestError(f"{at} must be an object")
        frame = item.get("frame")
        if isinstance(frame, bool) or not isinstance(frame, int) or not 1 <= frame <= frames_count:
            raise RequestError(f"{at}.frame must be a frame of the video (1..{frames_count}), got "
                               f"{shorten(repr(frame), 40)}")
        x, y, w, h = (_number(at, k, item.get(k)) for k in ("x", "y", "width", "height"))
        for key, value, low in (("x", x, LOW), ("y", y, LOW), ("width", w, 0.0), ("height", h, 0.0)):
            if not low <= value <= HIGH:
                raise RequestError(f"{at}.{key} is {value:g} percent of the frame, outside "
                                   f"{low:g}..{HIGH:g}: not a box on this video")
        x0, y0, x1, y1 = max(0.0, x), max(0.0, y), min(100.0, x + w), min(100.0, y + h)
        if x1 < x0 or y1 < y0:
            raise RequestError(f"{at} lies outside the frame (x {x:g}, y {y:g}, width {w:g}, "
                               f"height {h:g} percent)")
        box = dict(item)
        box.update(frame=frame, x=x0, y=y0, width=x1 - x0, height=y1 - y0)
        for key in ("rotation", "time"):
            if key in box:
                box[key] = _number(at, key, box[key])
        if "enabled" in box and not isinstance(box["enabled"], bool):
            raise RequestError(f"{at}.enabled must be true or false")
        out.append(box)
    return out


__all__ = ["checked_sequence"]
