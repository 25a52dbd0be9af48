"""Thumbnail strips: per object, the few frames most worth checking, side by side, numbered.

Shown by an ``<Image name="strips" valueList="$strips"/>`` that no control binds to (one page
per object, in the state's order, like the keyframe images); written beside the video or as a
``data:`` URL by the keyframe images' writer. ``valueList`` is not a required task data key in
Label Studio, so tasks need no ``strips`` at import.

Which frames (:func:`frames_to_check`), from the track alone, four signals:

1. *events*: frames where the mask appears (present, and absent or untracked on the frame
   before) or disappears (absent or untracked, present before); a track's start at frame 0
   is not an event;
2. *jumps*: frames whose mask area differs most from the frame before's, relative to the larger
   of the two (only frames present on both);
3. *low score*: frames whose object score (the model's presence logit, where the track has
   one) is lowest, present frames only, anchor frames left out (an annotator set those);
4. *far*: frames farthest from every anchor frame (the keyframe and the corrected frames: where
   the track was told what the object is), present or not.

Each signal's list is ordered by its strength, ties to the lower frame; the strip takes from
the four lists in turn (event, jump, low score, far, event, ...), skipping a frame already taken
(and any in ``exclude``), until it has N or the frames run out; the thumbnails are then shown in frame order. Each carries its
Label Studio frame number (1-based), ``F<n>``, drawn in its top-left corner.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from vrshq.backend.labelstudio.overlay import draw_masks
from vrshq.masks import Track
from vrshq.masks.rle import rle_area
from vrshq.plugins.base import ObjectTrack
from vrshq.video.base import VideoReader

THUMB_HEIGHT = 96  # pixels; the width follows the video's aspect ratio
GAP = 4  # pixels of dark grey between thumbnails
GAP_COLOR = (32, 32, 32)


def _areas(track: Track, frames_count: int) -> list[int]:
    """Each frame's mask area; 0 where absent or never tracked (read off the RLE: no decoding)."""
    return [int(rle_area(track.rle(f))) if track.has(f) else 0 for f in range(frames_count)]


def frames_to_check(track: Track, frames_count: int, anchors: Sequence[int], n: int,
                    exclude: Sequence[int] = ()) -> list[int]:
    """The ``n`` frames (0-based, in frame order) most worth checking, by the module's rule;
    frames in ``exclude`` are never chosen (e.g. frames that already have a mask page)."""
    if n <= 0 or frames_count <= 0:
        return []
    areas = _areas(track, frames_count)
    present = [a > 0 for a in areas]
    events = [f for f in range(1, frames_count) if present[f] != present[f - 1]]
    jumps = sorted((f for f in range(1, frames_count) if present[f] and present[f - 1]
                    and areas[f] != areas[f - 1]),
                   key=lambda f: (-abs(areas[f] - areas[f - 1]) / max(areas[f], areas[f - 1]), f))
    marks = sorted({int(a) for a in anchors if 0 <= int(a) < frames_count}) or [0]
    anchor_set = set(marks)
    scored = [f for f in range(frames_count) if present[f] and f not in anchor_set
              and track.score(f) is not None]
    low = sorted(scored, key=lambda f: (float(track.score(f)), f))
    far = sorted(range(frames_count), key=lambda f: (-min(abs(f - a) for a in marks), f))
    skip = {int(f) for f in exclude}
    chosen: list[int] = []
    lists = [[f for f in frames if f not in skip] for frames in (events, jumps, low, far)]
    while len(chosen) < min(n, frames_count - len(skip & set(range(frames_count)))):
        for frames in lists:
            while frames and frames[0] in chosen:
                frames.pop(0)
            if frames and len(chosen) < n:
                chosen.append(frames.pop(0))
    return sorted(chosen)


def object_anchors(obj: ObjectTrack) -> list[int]:
    """The frames the object's track was conditioned on: its keyframe and corrected frames."""
    return [int(obj.keyframe)] + [int(c.frame) for c in obj.corrections]


def strip_image(video: VideoReader, obj: ObjectTrack, frames: Sequence[int],
                color: tuple[int, int, int], height: int = THUMB_HEIGHT) -> np.ndarray:
    """One RGB strip: each frame with the object's mask drawn in, ``F<n>`` (1-based) on it."""
    width = _thumb_width(video, height)
    thumbs = [_thumb(video.frame(f), obj, f, color, width, height) for f in frames]
    return _join(thumbs, width, height)


def _thumb_width(video: VideoReader, height: int) -> int:
    return max(1, round(video.width * height / video.height))


def _thumb(frame: np.ndarray, obj: ObjectTrack, f: int, color: tuple[int, int, int],
           width: int, height: int) -> np.ndarray:
    """Frame ``f`` with the object's mask drawn in, scaled to a thumbnail, ``F<n>`` on it."""
    masks = [(obj.track.mask(f), color)] if obj.track.is_present(f) else []
    thumb = Image.fromarray(draw_masks(frame, masks)).resize((width, height), Image.BILINEAR)
    draw = ImageDraw.Draw(thumb)
    text = f"F{f + 1}"
    box = draw.textbbox((3, 2), text)
    draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=(0, 0, 0))
    draw.text((3, 2), text, fill=(255, 255, 255))
    return np.asarray(thumb)


def _join(thumbs: Sequence[np.ndarray], width: int, height: int) -> np.ndarray:
    if not thumbs:
        return np.full((height, width, 3), GAP_COLOR, dtype=np.uint8)
    out = np.full((height, len(thumbs) * width + (len(thumbs) - 1) * GAP, 3), GAP_COLOR, dtype=np.uint8)
    for i, t in enumerate(thumbs):
        out[:, i * (width + GAP):i * (width + GAP) + width] = t
    return out


class StripBuilder:
    """Every object's strip, its thumbnails drawn as frames come by (:meth:`add`): fed by the
    overlay's in-order pass, the strips need no decoding of their own (a seek back per strip
    cost more than the overlay's drawing on a long-GOP video); the same images as
    :func:`object_strip`."""

    def __init__(self, video: VideoReader, objects: Sequence[ObjectTrack],
                 colors: Sequence[tuple[int, int, int]], n: int, height: int = THUMB_HEIGHT) -> None:
        self.objects, self.colors, self.height = list(objects), list(colors), height
        self.width = _thumb_width(video, height)
        self.frames = [frames_to_check(o.track, len(video), object_anchors(o), n) for o in objects]
        self._thumbs: dict[tuple[int, int], np.ndarray] = {}  # (object index, frame) -> thumb

    def add(self, index: int, frame: np.ndarray) -> None:
        """Draw the thumbnails of decoded frame ``index`` that a strip wants (once each)."""
        for k, (obj, color, frames) in enumerate(zip(self.objects, self.colors, self.frames)):
            if index in frames and (k, index) not in self._thumbs:
                self._thumbs[(k, index)] = _thumb(frame, obj, index, color, self.width, self.height)

    def images(self, video: VideoReader) -> list[np.ndarray]:
        """Each object's strip (in the objects' order), decoding in one ascending pass the
        frames :meth:`add` was not given."""
        missing = sorted({f for k, frames in enumerate(self.frames) for f in frames
                          if (k, f) not in self._thumbs})
        for f in missing:
            self.add(f, video.frame(f))
        return [_join([self._thumbs[(k, f)] for f in frames], self.width, self.height)
                for k, frames in enumerate(self.frames)]


def object_strip(video: VideoReader, obj: ObjectTrack, color: tuple[int, int, int], n: int) -> np.ndarray:
    """The object's strip: its ``n`` frames most worth checking, drawn by :func:`strip_image`."""
    return strip_image(video, obj, frames_to_check(obj.track, len(video), object_anchors(obj), n), color)


__all__ = ["GAP", "THUMB_HEIGHT", "StripBuilder", "frames_to_check", "object_anchors", "object_strip", "strip_image"]
