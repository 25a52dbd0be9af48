"""Mask pages: the frames of each object an annotator sees (and corrects) as a mask, beyond its keyframe.

The ``<Image valueList="$keyframes">`` pager shows one page per object's keyframe (page i =
object i, as always) and then the extra pages of :attr:`TaskState.pages`, appended so that the
keyframe pages keep their indices. Each extra page is one object on one frame:

* ``ranked``: up to ``VRSHQ_MASK_PAGES`` per object, the frames most worth checking by the
  model's own signals (:func:`vrshq.backend.labelstudio.strips.frames_to_check`: appear/disappear
  events, area jumps, low object score, distance from the nearest conditioning frame; each list
  by strength, ties to the lower frame, taken in turn);
* ``corrected``: every frame an annotator corrected (kept, so the fix stays in sight);
* ``requested``: a frame an annotator asked for (``frame N`` in the prompt box, see
  :mod:`vrshq.backend.http.frames`).

A new prediction starts the list afresh; a re-propagation or a request only appends (an open
editor's pages keep their indices), topping the ranked pages of the re-tracked objects up to K.
The page's result id is ``<track id>-mask-f<N>`` (N: the 1-based Label Studio frame), so a
brush edit names its object and frame whatever page it is on; the task data's
``keyframe_frames`` / ``keyframe_objects`` list the 1-based frame and object id of every page.
Each page image is the frame with ``<label> #<id> F<N>`` drawn in its top-left corner.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from vrshq.backend.labelstudio.strips import frames_to_check, object_anchors
from vrshq.backend.tasks.state import MaskPage, TaskState
from vrshq.masks import decode_rle, encode_rle
from vrshq.plugins.base import ObjectTrack

RANKED, CORRECTED, REQUESTED = "ranked", "corrected", "requested"


def page_mask(obj: ObjectTrack, frame: int) -> np.ndarray:
    """The mask an object's page on ``frame`` shows: the newest correction there (a box or
    clicks: the track's mask from them), else the keyframe mask on the keyframe, else the
    track's mask (empty where absent or untracked)."""
    newest = next((c for c in reversed(obj.corrections) if int(c.frame) == int(frame)), None)
    if newest is not None and newest.mask is not None:
        return np.asarray(newest.mask, dtype=bool)
    if newest is None and int(frame) == int(obj.keyframe):
        return np.asarray(obj.keyframe_mask, dtype=bool)
    if obj.track.has(int(frame)):
        return obj.track.mask(int(frame))
    return np.zeros((obj.track.height, obj.track.width), dtype=bool)


def put_back_corrections(objects: Iterable[ObjectTrack], obj_ids: Iterable[int]) -> None:
    """Set each corrected mask of the objects ``obj_ids`` exactly on its frame of their tracks.

    A plugin's re-propagation returns the engine's own decoding of a mask prompt there (for
    sam2, what tracking from scratch with the same prompts gives: close, not the drawn pixels);
    the annotator's fix must come back as drawn, on its page and in the track (sam3 does it
    itself, plugins/sam3_tracker.py). The frame's score is kept.
    """
    wanted = {int(i) for i in obj_ids}
    for obj in objects:
        if obj.obj_id not in wanted:
            continue
        for c in obj.corrections:
            if c.mask is None:
                continue  # a box or clicks: the tracker's mask from them is the frame's
            f = int(c.frame)
            obj.track.set(f, np.asarray(c.mask, dtype=bool),
                          score=obj.track.score(f) if obj.track.has(f) else None)


def remember_shown(state: TaskState, obj_ids: Iterable[int], keep: int = 8) -> None:
    """Record the masks the extra pages of ``obj_ids`` show now, before a re-propagation
    replaces them (at most ``keep`` per page): an editor still showing one sends it back
    unedited, which is not a correction (:func:`was_shown`)."""
    wanted = {int(i) for i in obj_ids}
    by_id = {o.obj_id: o for o in state.objects}
    for p in extra_pages(state):
        if p.obj_id in wanted:
            rle = encode_rle(page_mask(by_id[p.obj_id], p.frame))
            key = f"{p.obj_id}:{p.frame}"
            kept = [r for r in state.earlier_pages.get(key, []) if r != rle]
            state.earlier_pages[key] = (kept + [rle])[-keep:]


def was_shown(state: TaskState, obj_id: int, frame: int, mask: np.ndarray) -> bool:
    """Whether ``mask`` is one an earlier prediction showed on the object's page of ``frame``."""
    return any(np.array_equal(decode_rle(r), mask) for r in state.earlier_pages.get(f"{obj_id}:{frame}", []))


def extra_pages(state: TaskState) -> list[MaskPage]:
    """The state's extra pages whose object still exists, in page order."""
    ids = {o.obj_id for o in state.objects}
    return [p for p in state.pages if p.obj_id in ids]


def all_pages(state: TaskState) -> list[tuple[ObjectTrack, int]]:
    """Every page in pager order: (object, 0-based frame); keyframe pages first."""
    by_id = {o.obj_id: o for o in state.objects}
    return [(o, int(o.keyframe)) for o in state.objects] + \
        [(by_id[p.obj_id], p.frame) for p in extra_pages(state)]


def page_index(state: TaskState, obj_id: int, frame: int) -> int | None:
    """The page (item_index) of an object's mask on ``frame``, or None when it has none."""
    for i, (obj, f) in enumerate(all_pages(state)):
        if obj.obj_id == obj_id and f == int(frame):
            return i
    return None


def refresh_pages(state: TaskState, k: int, obj_ids: Iterable[int] | None = None,
                  reset: bool = False) -> None:
    """Bring the extra pages up to date (see the module docstring): with ``reset`` (a new
    prediction) from scratch for every object, else appending for ``obj_ids`` (all when None)."""
    pages = [] if reset else extra_pages(state)
    wanted = None if obj_ids is None else {int(i) for i in obj_ids}
    for obj in state.objects:
        if wanted is not None and obj.obj_id not in wanted:
            continue
        have = {p.frame: n for n, p in enumerate(pages) if p.obj_id == obj.obj_id}
        for c in obj.corrections:  # a corrected frame's page says so (its index kept)
            f = int(c.frame)
            if f == obj.keyframe:
                continue
            if f in have:
                pages[have[f]] = MaskPage(obj.obj_id, f, CORRECTED)
            else:
                have[f] = len(pages)
                pages.append(MaskPage(obj.obj_id, f, CORRECTED))
        ranked = sum(1 for p in pages if p.obj_id == obj.obj_id and p.why == RANKED)
        more = frames_to_check(obj.track, state.frames_count, object_anchors(obj), k - ranked,
                               exclude=[obj.keyframe, *have])
        pages += [MaskPage(obj.obj_id, f, RANKED) for f in more]
    state.pages = pages


def request_page(state: TaskState, obj_id: int, frame: int) -> int:
    """Make sure the object has a page on ``frame`` (appended as ``requested``); its index."""
    index = page_index(state, obj_id, frame)
    if index is not None:
        return index
    state.pages = extra_pages(state) + [MaskPage(int(obj_id), int(frame), REQUESTED)]
    return len(state.objects) + len(state.pages) - 1


def page_caption(label: str, obj_id: int, frame: int) -> str:
    """What a page shows in its corner: ``<label> #<id> F<N>`` (N 1-based)."""
    return f"{label} #{int(obj_id)} F{int(frame) + 1}"


def page_image(frame_image: np.ndarray, caption: str) -> np.ndarray:
    """The frame with ``caption`` in white on black in its top-left corner (as strips draw theirs)."""
    img = Image.fromarray(np.ascontiguousarray(frame_image))
    draw = ImageDraw.Draw(img)
    box = draw.textbbox((3, 2), caption)
    draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=(0, 0, 0))
    draw.text((3, 2), caption, fill=(255, 255, 255))
    return np.asarray(img)


def pages_data(state: TaskState) -> dict[str, Any]:
    """The 1-based frame and the object id of every page, for the task data."""
    pages = all_pages(state)
    return {"frames": [f + 1 for _, f in pages], "objects": [o.obj_id for o, _ in pages]}


__all__ = ["CORRECTED", "RANKED", "REQUESTED", "all_pages", "extra_pages", "page_caption",
           "page_image", "page_index", "page_mask", "pages_data", "put_back_corrections", "refresh_pages",
           "remember_shown", "request_page", "was_shown"]
