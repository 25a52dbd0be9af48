"""What an annotator changed: a submitted annotation compared with the backend's prediction.

Per predicted object (matched by region id): its keyframe mask (the brush region with the
object's id, plus any brush region the annotator drew anew on the object's page of the keyframe
images, merged), its box track (the frames Label Studio shows, compared within 1e-3 percentage
points), and whether the annotator deleted the object. A brush region that was removed while
its track stays is not read as "the object is gone": only removing the track is. A box track
equal to one the backend predicted earlier for the object (before a re-propagation replaced it)
is an editor that still shows the old prediction, not a box edit.

Each extra mask page (:mod:`vrshq.backend.labelstudio.pages`) the annotation carries is compared
too, and a changed one is a change of its own on its frame (:attr:`ObjectChange.frame`): the
brush result ``<id>-mask-f<N>`` names its frame, and a brush region drawn anew on a page belongs
to the page's object and frame.

Clicks (``keypointlabels`` on a mask page, :mod:`vrshq.backend.labelstudio.click_fixes`) are one
clicks correction of the page's object on its frame (:attr:`ObjectChange.clicks`), unless the
same annotation also edited that object's mask on that frame (the drawn mask wins: it says more
than points), or the task's state already carries the same clicks there (the backend's echo).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vrshq.backend.labelstudio.labelconfig import LabelConfigInfo
from vrshq.backend.labelstudio.pages import all_pages, page_mask, was_shown
from vrshq.backend.labelstudio.predictions import ParsedRegion, parse_annotation
from vrshq.backend.labelstudio.results import object_region_id, shown_mask, state_results
from vrshq.backend.tasks.provenance import deleted_objects
from vrshq.backend.tasks.state import TaskState
from vrshq.backend.labelstudio.box_fixes import box_fixes, carried
from vrshq.backend.labelstudio.click_fixes import applied_clicks, click_fixes
from vrshq.plugins.base import Correction, ObjectTrack
from vrshq.masks import track_to_videorectangle, videorectangle_to_boxes

BOX_TOLERANCE = 1e-3  # percentage points; LS rounds nothing, but JSON floats may lose the last bit


@dataclass
class ObjectChange:
    """One object's difference between prediction and annotation on one of its mask pages."""

    obj: ObjectTrack
    index: int  # the page in the keyframe images (the object's keyframe page, or an extra page)
    predicted_mask: np.ndarray
    mask: np.ndarray | None = None  # the corrected mask on ``frame``, when it differs
    predicted_boxes: list[dict[str, Any]] | None = None
    boxes: list[dict[str, Any]] | None = None  # the corrected sequence, when the track differs
    deleted: bool = False
    frame: int | None = None  # the page's 0-based frame; None: the object's keyframe
    # The moved boxes of ``boxes`` as box corrections on their frames (labelstudio/box_fixes.py);
    # re-propagated for plugins that take box corrections.
    box_fixes: list[Correction] = field(default_factory=list)
    # The page's clicks as one clicks correction on ``frame`` (labelstudio/click_fixes.py);
    # re-propagated for plugins that take clicks.
    clicks: Correction | None = None

    def __post_init__(self) -> None:
        if self.frame is None:
            self.frame = int(self.obj.keyframe)

    @property
    def changed(self) -> bool:
        """Whether anything differs."""
        return self.deleted or self.mask is not None or self.boxes is not None or self.clicks is not None

    def corrected_mask(self) -> np.ndarray | None:
        """The mask the log keeps as corrected: the new one, empty for a deleted object, else None."""
        if self.mask is not None:
            return self.mask
        return np.zeros_like(self.predicted_mask) if self.deleted else None


def _sequences(results: Sequence[Mapping[str, Any]], info: LabelConfigInfo) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in results or []:
        if (isinstance(r, Mapping) and str(r.get("type", "")).lower() == "videorectangle"
                and r.get("from_name") == info.box_name and isinstance(r.get("value"), Mapping)):
            out[str(r.get("id"))] = [dict(k) for k in r["value"].get("sequence") or []
                                     if isinstance(k, Mapping)]
    return out


def _boxes_equal(a: Mapping[int, Mapping[str, float]], b: Mapping[int, Mapping[str, float]]) -> bool:
    if set(a) != set(b):
        return False
    return all(abs(float(a[f][k]) - float(b[f][k])) <= BOX_TOLERANCE for f in a for k in a[f])


def _an_earlier_track(state: TaskState, obj: ObjectTrack, boxes: Mapping[int, Any]) -> bool:
    """Whether ``boxes`` are a box track the backend predicted for the object before its current one.

    An annotator whose editor still shows an earlier prediction (a re-propagation has replaced
    it since) sends those boxes back untouched: that is not a box correction.
    """
    for sequence in state.earlier_tracks.get(str(obj.obj_id), []):
        earlier = videorectangle_to_boxes({"sequence": sequence}, frames_count=state.frames_count)
        if _boxes_equal(earlier, boxes):
            return True
    return False


def frame_size(state: TaskState) -> tuple[int, int] | None:
    """The task's video size (height, width), from its tracks; None without objects."""
    for obj in state.objects:
        return int(obj.track.height), int(obj.track.width)
    return None


def diff_annotation(state: TaskState, info: LabelConfigInfo,
                    annotation_result: Sequence[Mapping[str, Any]],
                    predicted_results: Sequence[Mapping[str, Any]] | None = None) -> list[ObjectChange]:
    """One :class:`ObjectChange` per predicted object, in object order (unchanged ones included),
    each followed by one per extra mask page of the object that the annotation carries.

    The annotation is compared with the task's current state, or with ``predicted_results``
    (the prediction the annotator started from, ``corrections sync``); then an object added
    after that prediction is compared with the state's object where the annotation carries it
    (left out otherwise), and a page beyond the prediction's is read from the state's page list
    while it extends the prediction's: what the webhook reads.
    """
    against_state = predicted_results is None
    if not state.objects:
        return []  # nothing predicted: nothing to correct (and no mask size to check against)
    if predicted_results is None:
        predicted_results = state_results(state, info)
    size = frame_size(state)
    frames = state.frames_count
    predicted = parse_annotation(predicted_results, info, frame_size=size, frames_count=frames)
    annotated = parse_annotation(annotation_result, info, frame_size=size, frames_count=frames)
    later = False  # objects added to the task since the prediction compared with
    if not against_state:
        predicted_results, added, later = _with_added(state, info, predicted, annotated, predicted_results)
        if added:
            predicted = parse_annotation(predicted_results, info, frame_size=size, frames_count=frames)
    predicted_seq = _sequences(predicted_results, info)
    annotated_seq = _sequences(annotation_result, info)
    ours = {object_region_id(state, o) for o in state.objects}
    drawn = _drawn_on_pages(state, annotated, ours, None if against_state else predicted, later)
    pager = all_pages(state)
    clicks = click_fixes(annotation_result, info, [(o.obj_id, f) for o, f in pager], size) \
        if info.has_masks and size is not None else {}
    changes: list[ObjectChange] = []
    for index, obj in enumerate(state.objects):
        rid = object_region_id(state, obj)
        if not against_state and rid not in predicted:
            continue  # added after that prediction and not in the annotation: never seen
        before = shown_mask(obj)
        if not against_state and predicted[rid].mask is not None \
                and predicted[rid].mask.shape == before.shape:
            before = predicted[rid].mask
        change = ObjectChange(obj, index, before)
        region = annotated.get(rid)
        extras = [r.mask for key, r in annotated.items()
                  if key not in ours and not r.has_track and r.mask is not None
                  and r.keyframe_item_index == index and r.mask.shape == before.shape]
        if region is None or not region.has_track:
            if region is None and not extras:
                change.deleted = True
                change.predicted_boxes = predicted_seq.get(rid)
                change.boxes = []
                changes.append(change)
                continue
        if info.has_masks:
            mine = region.mask if region is not None and region.mask is not None else None
            if mine is not None and mine.shape != before.shape:
                raise ValueError(f"region {rid}: the mask is {mine.shape[1]}x{mine.shape[0]} but "
                                 f"the keyframe is {before.shape[1]}x{before.shape[0]}")
            if mine is not None or extras:
                merged = np.zeros_like(before) if mine is None else mine.copy()
                for extra in extras:
                    merged |= extra
                if not np.array_equal(merged, before):
                    change.mask = merged
        if region is not None and region.has_track:
            if not _boxes_equal(predicted[rid].boxes if rid in predicted else {}, region.boxes) \
                    and not (against_state and _an_earlier_track(state, obj, region.boxes)):
                change.predicted_boxes = predicted_seq.get(rid)
                change.boxes = annotated_seq.get(rid, [])
        changes.append(change)
        pages = []
        if info.has_masks:
            pages = _page_changes(state, obj, region, predicted.get(rid), drawn.get(obj.obj_id, {}),
                                  against_state)
            changes += pages + _click_changes(obj, [change, *pages], clicks, pager)
        if change.boxes and size is not None:
            change.box_fixes = _moved_boxes(state, change, pages, size)
    return changes


def _moved_boxes(state: TaskState, change: ObjectChange, pages: list[ObjectChange],
                 size: tuple[int, int]) -> list[Correction]:
    """The box corrections of a changed box track (:func:`box_fixes`); a mask edit on the same
    frame (the object's keyframe or one of its ``pages``) wins."""
    obj, frames = change.obj, state.frames_count
    # the backend's own tracks: the current one and those it replaced
    current = track_to_videorectangle(obj.track, state.fps, frames)["value"]["sequence"]
    return box_fixes(obj.obj_id, change.boxes, change.predicted_boxes,
                     [current, *state.earlier_tracks.get(str(obj.obj_id), [])], frames, size,
                     [int(c.frame) for c in [change, *pages] if c.mask is not None])


def _with_added(state: TaskState, info: LabelConfigInfo, predicted: Mapping[str, ParsedRegion],
                annotated: Mapping[str, ParsedRegion], predicted_results: Sequence[Mapping[str, Any]],
                ) -> tuple[list[Mapping[str, Any]], set[int], bool]:
    """The prediction the annotator started from, plus the objects added to the task after it
    (a typed prompt or a drawn box answered in the open editor) that the annotation carries:
    the annotator saw those as the backend answered them, which is the state's object, as the
    webhook compares it. Then their ids, and whether any object was added after it. An added
    object the annotation lacks is left out (a deletion cannot be told from an object added
    after the annotation was saved)."""
    gone = deleted_objects(state)
    later = {o.obj_id for o in state.objects
             if o.obj_id not in gone and object_region_id(state, o) not in predicted}
    added = {o.obj_id for o in state.objects if o.obj_id in later and object_region_id(state, o) in annotated}
    extra = state_results(state, info, added) if added else []
    return [*predicted_results, *extra], added, bool(later)


def _click_changes(obj: ObjectTrack, changes: list[ObjectChange],
                   clicks: Mapping[tuple[int, int], Correction],
                   pager: list[tuple[ObjectTrack, int]]) -> list[ObjectChange]:
    """Put the object's new clicks on its changes of their frames; the clicks on frames with no
    change yet, as changes of their own (returned). A mask edited on the frame wins; clicks the
    object carries already are the backend's echo."""
    out = []
    for (obj_id, frame), fix in clicks.items():
        if obj_id != obj.obj_id or carried([c for c in [applied_clicks(obj, frame)] if c], fix):
            continue
        same = [c for c in changes if int(c.frame) == frame]
        if any(c.mask is not None for c in same):
            continue  # the drawn mask wins
        if same:
            same[0].clicks = fix
            continue
        page = next(i for i, (o, f) in enumerate(pager) if o.obj_id == obj_id and f == frame)
        out.append(ObjectChange(obj, page, page_mask(obj, frame), frame=frame, clicks=fix))
    return out


def _drawn_on_pages(state: TaskState, annotated: Mapping[str, ParsedRegion], ours: set[str],
                    predicted: Mapping[str, ParsedRegion] | None,
                    objects_added: bool = False) -> dict[int, dict[int, list]]:
    """Brush regions drawn anew on an extra page: obj_id -> frame -> masks. The page's object
    and frame come from the state's pages, or from the prediction the annotator started from
    (and the state's pages after its own, while the state's list extends it)."""
    n = len(state.objects)
    in_state = {i: (o.obj_id, f) for i, (o, f) in enumerate(all_pages(state)) if i >= n}
    if predicted is None:
        where = in_state
    else:
        by_rid = {object_region_id(state, o): o.obj_id for o in state.objects}
        where = {i: (by_rid[rid], f) for rid, r in predicted.items() if rid in by_rid
                 for f, i in r.page_items.items()}
        # A page the prediction did not have: one ``frame N`` added (on the open editor's
        # on-demand page) or a re-propagation appended. The state's page list only grows until
        # the next prediction, so where it still starts with the prediction's objects and pages,
        # its later indices are the editor's, as the webhook reads them.
        # An object added since moved every extra page one further: no such reading then.
        if not objects_added and all(in_state.get(i) == w for i, w in where.items()):
            where = {**in_state, **where}
    out: dict[int, dict[int, list]] = {}
    for key, r in annotated.items():
        if key in ours or r.has_track or r.mask is None or r.keyframe_item_index not in where:
            continue
        obj_id, frame = where[r.keyframe_item_index]
        out.setdefault(obj_id, {}).setdefault(frame, []).append(r.mask)
    return out


def _page_changes(state: TaskState, obj: ObjectTrack, region: ParsedRegion | None,
                  predicted: ParsedRegion | None, drawn: Mapping[int, list],
                  against_state: bool) -> list[ObjectChange]:
    """The object's extra pages in the annotation, one change each (unchanged ones included)."""
    pages = dict(region.pages) if region is not None else {}
    frames = sorted(set(pages) | set(drawn))
    index = {f: i for i, (o, f) in enumerate(all_pages(state)) if o.obj_id == obj.obj_id}
    out = []
    for f in frames:
        if not 0 <= f < state.frames_count:
            raise ValueError(f"object {obj.obj_id}'s mask page is on frame {f + 1}, outside the "
                             f"video's 1..{state.frames_count}")
        before = page_mask(obj, f)
        if predicted is not None and f in predicted.pages and predicted.pages[f].shape == before.shape:
            before = predicted.pages[f]
        after = pages[f].copy() if f in pages else np.zeros_like(before)
        for extra in drawn.get(f, []):
            after |= extra
        if after.shape != before.shape:
            raise ValueError(f"object {obj.obj_id}'s mask on frame {f + 1} is {after.shape[1]}x"
                             f"{after.shape[0]} but the video is {before.shape[1]}x{before.shape[0]}")
        if against_state and not drawn.get(f) and not np.array_equal(after, before) \
                and was_shown(state, obj.obj_id, f, after):
            continue  # an editor still showing an earlier prediction's page: not an edit
        page = index.get(f, predicted.page_items.get(f, -1) if predicted is not None else -1)
        out.append(ObjectChange(obj, page, before, None if np.array_equal(after, before) else after,
                                frame=f))
    return out


__all__ = ["ObjectChange", "diff_annotation", "frame_size"]
