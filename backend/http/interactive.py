"""Interactive requests (``/predict`` with a ``context``) from Label Studio's auto-annotation.

What the editor sends, and what the backend answers (results with the objects' region ids, so
the editor replaces the regions it has):

* a mask drawn or edited with the brush (``brushlabels`` on a page of the keyframe images: the
  object's keyframe page or one of its extra mask pages): a correction of that object on that
  page's frame; it is logged and re-propagated with every earlier correction of the object, and
  the object's new track and pages come back;
* ``frame N`` (or ``frame N <label>``, ``frame N #<id>``) typed into the prompt box: the mask
  page of each (or that) object on LS frame N is added and comes back (:mod:`.frames`);
* a submitted TextArea prompt (text plugins): a new object, tracked, comes back;
* a track selected and labelled (``videorectangle``; box plugins): the track's first box is the
  prompt; the tracked object comes back under the track's own region id;
* an object's own track with a moved box (``videorectangle`` under the object's region id): a
  box correction on each moved keyframe's frame (:mod:`vrshq.backend.labelstudio.box_fixes`),
  logged and, for a plugin that takes box corrections, re-propagated like a mask;
* clicks on a mask page (``keypointlabels``, :mod:`vrshq.backend.labelstudio.click_fixes`): added
  to the clicks the page already has (the backend echoes them; a click with an echoed id, or
  at an echoed click's place with its kind, is one of those: Label Studio resends a page's smart
  clicks until an answer is accepted), one clicks correction of the page's object on its frame,
  logged and, for a plugin that takes clicks, re-propagated like a mask.

A video longer than the frame budget runs as a job that writes a prediction back instead (on
the queue's workers when ``REDIS_URL`` is set: the job's payload is plain JSON, see :func:`add_job`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np

from vrshq.backend.corrections.changes import log_changes, mask_corrections, takes_boxes, takes_points
from vrshq.backend.tasks.frame_rate import task_data_at_file_rate
from vrshq.backend.jobs.add_objects import add_objects
from vrshq.backend.jobs.overlay_job import queue_overlay
from vrshq.backend.jobs.payloads import correct_payload
from vrshq.backend.labelstudio.annotations import ObjectChange, diff_annotation, frame_size
from vrshq.backend.labelstudio.click_fixes import same_click
from vrshq.backend.http.frames import frame_requests, show_frames
from vrshq.backend.labelstudio.labelconfig import LabelConfigInfo
from vrshq.backend.labelstudio.pages import all_pages, page_index, page_mask
from vrshq.backend.labelstudio.predictions import parse_annotation
from vrshq.backend.labelstudio.results import object_region_id, state_prediction, state_results
from vrshq.backend.tasks.inputs import (
    RequestError,
    check_prompt_chars,
    check_prompt_tokens,
    malformed_input,
    task_data,
    task_id,
)
from vrshq.plugins.base import Correction


def _of_type(results: list, kind: str, name: str | None) -> list[Mapping[str, Any]]:
    return [r for r in results if isinstance(r, Mapping) and str(r.get("type", "")).lower() == kind
            and name is not None and r.get("from_name") == name]


def interactive_predict(backend: Any, task: Mapping[str, Any], info: LabelConfigInfo,
                        project: str, context: Mapping[str, Any], label_config: str = "") -> Any:
    """The prediction for the objects the interaction touched, or [] (nothing to do, or a job)."""
    tid = task_id(task)
    data = task_data(task)
    results = context.get("result")
    if not isinstance(results, list):
        raise RequestError("context 'result' must be a list of regions")
    brushes = _of_type(results, "brushlabels", info.mask_name)
    texts = info.textarea_prompts(results)
    boxes = _of_type(results, "videorectangle", info.box_name)
    clicks = _of_type(results, "keypointlabels", info.clicks_name)
    if brushes:
        return _correct(backend, tid, info, project, brushes, label_config)
    if clicks:
        return _correct_clicks(backend, tid, info, project, clicks, label_config)
    requests = frame_requests(texts, tid)
    if requests:
        return show_frames(backend, tid, data, info, project, requests)
    if texts:
        if "text" not in backend.plugin.capabilities:
            raise RequestError(f"the {backend.plugin.name} plugin does not take text prompts")
        check_prompt_chars(texts, backend.config, f"task {tid}")
        check_prompt_tokens(backend.plugin, texts, backend.config, f"task {tid}")
        return _add_objects(backend, tid, data, info, project, label_config, {"texts": texts})
    if boxes and _known_tracks(backend, project, tid, boxes):
        return _correct_boxes(backend, tid, info, project, boxes, label_config)
    if boxes:
        if "box" not in backend.plugin.capabilities:
            raise RequestError(f"the {backend.plugin.name} plugin does not take box prompts; "
                               "type a text prompt instead")
        return _add_objects(backend, tid, data, info, project, label_config,
                            {"boxes": [dict(b) for b in boxes]})
    return []


# ---------------------------------------------------------------------- corrections
def _corrected_masks(state: Any, tid: int, regions: Mapping[str, Any]) -> dict[tuple[int, int], np.ndarray]:
    """The context's brush masks by (object id, 0-based frame): a mask result names its object by
    its id (``-mask``: the keyframe, ``-mask-f<N>``: frame N's page), a region drawn anew by the
    page it is on; several on one page are merged."""
    by_rid = {object_region_id(state, o): o for o in state.objects}
    pages = all_pages(state)
    masks: dict[tuple[int, int], np.ndarray] = {}

    def add(obj: Any, frame: int, mask: np.ndarray, rid: str) -> None:
        if obj is None:
            raise RequestError(f"task {tid}: the mask region {rid} belongs to no tracked object")
        if not 0 <= frame < state.frames_count:
            raise RequestError(f"task {tid}: the mask region {rid} is on frame {frame + 1}, outside "
                               f"the video's frames 1..{state.frames_count}")
        before = page_mask(obj, frame)
        if mask.shape != before.shape:
            raise RequestError(f"task {tid}: the mask is {mask.shape[1]}x{mask.shape[0]}"
                               f" but the keyframe is {before.shape[1]}x{before.shape[0]}")
        key = (obj.obj_id, frame)
        masks[key] = masks[key] | mask if key in masks else mask

    for rid, region in regions.items():
        obj = by_rid.get(rid)
        if region.mask is not None:
            frame = None if obj is None else int(obj.keyframe)
            if obj is None and region.keyframe_item_index is not None \
                    and 0 <= region.keyframe_item_index < len(pages):
                obj, frame = pages[region.keyframe_item_index]
            add(obj, -1 if frame is None else frame, region.mask, rid)
        for frame, mask in region.pages.items():
            add(obj, frame, mask, rid)
    return masks


def _page(state: Any, obj_id: int, frame: int) -> int:
    index = page_index(state, obj_id, frame)
    return -1 if index is None else index  # a frame without a page of its own (yet)


def _correct(backend: Any, tid: int, info: LabelConfigInfo, project: str,
             brushes: list[Mapping[str, Any]], label_config: str) -> Any:
    state = backend.states.load(project, tid)
    if state is None:
        raise RequestError(f"task {tid} has no prediction from this backend to correct: "
                           "predict it first")
    with malformed_input(f"task {tid}: the context's brush regions"):
        regions = parse_annotation(brushes, info, frame_size=frame_size(state) or (0, 0))
    masks = _corrected_masks(state, tid, regions)
    objs = {o.obj_id: o for o in state.objects}
    changes = [ObjectChange(objs[i], _page(state, i, f), page_mask(objs[i], f), mask=m, frame=f)
               for (i, f), m in masks.items() if not np.array_equal(m, page_mask(objs[i], f))]
    if not changes:
        return state_prediction(state, info, {i for i, _ in masks})
    log_changes(backend.corrections, state, info, changes, "interactive", None, backend.config.max_row_bytes)
    corrections = [Correction(ch.obj.obj_id, int(ch.frame), ch.mask) for ch in changes]
    ids = {c.obj_id for c in corrections}
    return _re_propagate(backend, tid, info, project, state, corrections, label_config, ids)


def _re_propagate(backend: Any, tid: int, info: LabelConfigInfo, project: str, state: Any,
                  corrections: list[Correction], label_config: str, ids: set[int]) -> Any:
    """Apply ``corrections`` now and answer the objects ``ids``, or, for a video longer than the
    frame budget, queue them as a job that writes its prediction back (answering nothing now)."""
    if state.frames_count > backend.config.sync_frame_budget:
        backend.require_writer(project, tid)
        backend.submit("correct", f"correct:{uuid.uuid4().hex}",
                       correct_payload(project, tid, corrections, label_config), project=project, task=tid)
        return []
    new_state = backend.correct_task(project, tid, corrections, info=info)
    return _answer_then_overlay(backend, new_state, info, ids, label_config)


def _known_tracks(backend: Any, project: str, tid: int, boxes: list[Mapping[str, Any]]) -> bool:
    """Whether the context's tracks are the task's own objects' (moved boxes, not new objects)."""
    state = backend.states.load(project, tid)
    if state is None:
        return False
    ours = {object_region_id(state, o) for o in state.objects}
    return all(str(b.get("id")) in ours for b in boxes)


def _correct_boxes(backend: Any, tid: int, info: LabelConfigInfo, project: str,
                   boxes: list[Mapping[str, Any]], label_config: str) -> Any:
    """Moved boxes of the task's objects: the state's results with these tracks in place, diffed
    like a submitted annotation, so the same rule makes the same box corrections."""
    state = backend.states.load(project, tid)
    mine = {str(b.get("id")): dict(b) for b in boxes}
    ids = {o.obj_id for o in state.objects if object_region_id(state, o) in mine}
    result = [mine.get(str(r.get("id")), r) if r.get("type") == "videorectangle" else r
              for r in state_results(state, info)]
    with malformed_input(f"task {tid}: the context's box tracks"):
        changes = [ch for ch in diff_annotation(state, info, result) if ch.obj.obj_id in ids and ch.changed]
    if changes:
        log_changes(backend.corrections, state, info, changes, "interactive", None,
                    backend.config.max_row_bytes)
    corrections = mask_corrections(changes, boxes=True) if takes_boxes(backend.plugin) else []
    if not corrections:
        return state_prediction(state, info, ids)  # logged only (or nothing moved enough)
    return _re_propagate(backend, tid, info, project, state, corrections, label_config, ids)


def _correct_clicks(backend: Any, tid: int, info: LabelConfigInfo, project: str,
                    clicks: list[Mapping[str, Any]], label_config: str) -> Any:
    """Clicks on mask pages: the state's results (with the clicks it echoes) plus the context's
    new clicks, diffed like a submitted annotation, so the same rule makes the same corrections."""
    state = backend.states.load(project, tid)
    if state is None:
        raise RequestError(f"task {tid} has no prediction from this backend to correct: "
                           "predict it first")
    result = state_results(state, info)
    echoed = [r for r in result if r.get("type") == "keypointlabels"]
    ids = {str(r.get("id")) for r in echoed}
    with malformed_input(f"task {tid}: the context's clicks"):
        # Label Studio sends all the page's smart clicks of the label until an answer is accepted
        # (accepting deletes them): a click sent again is one of the page's echoed clicks
        result += [dict(c) for c in clicks if str(c.get("id")) not in ids
                   and not any(same_click(c, e, info) for e in echoed)]
        changes = [ch for ch in diff_annotation(state, info, result) if ch.clicks is not None]
    if changes:
        log_changes(backend.corrections, state, info, changes, "interactive", None,
                    backend.config.max_row_bytes)
    ids = {ch.obj.obj_id for ch in changes}
    corrections = mask_corrections(changes, points=True) if takes_points(backend.plugin) else []
    if not corrections:
        return state_prediction(state, info, ids)  # logged only (or the clicks were applied already)
    return _re_propagate(backend, tid, info, project, state, corrections, label_config, ids)


def _answer_then_overlay(backend: Any, state: Any, info: LabelConfigInfo, ids: set[int],
                         label_config: str) -> Any:
    """The corrected objects' prediction; the overlay job queued after it is built, so its
    encoding does not compete with the answer (the open editor would not show it anyway)."""
    answer = state_prediction(state, info, ids)
    queue_overlay(backend, state, label_config)
    return answer


# ---------------------------------------------------------------------- new objects
def _check_object_count(backend: Any, project: str, tid: int, what: Mapping[str, Any]) -> None:
    """RequestError when the new objects would take the task past ``max_objects`` (before any
    video is opened or model run; :func:`_merge` checks again under the task's lock)."""
    state = backend.states.load(project, tid)
    have = len(state.objects) if state else 0
    if what.get("texts"):
        new = len(what["texts"])
    else:
        known = {object_region_id(state, o) for o in state.objects} if state else set()
        new = len({str(r.get("id")) if r.get("id") else f"new-{i}"
                   for i, r in enumerate(what.get("boxes") or [])} - known)
    limit = backend.config.max_objects
    if have + new > limit:
        raise RequestError(f"task {tid}: {have} objects and {new} new ones, more than the {limit} "
                           "objects a task may have (VRSHQ_MAX_OBJECTS)")


def _add_objects(backend: Any, tid: int, data: Mapping[str, Any], info: LabelConfigInfo,
                 project: str, label_config: str, what: dict[str, Any]) -> Any:
    _check_object_count(backend, project, tid, what)
    video = backend.open_video(project, tid, info.video(data), info.fps(data))
    try:
        data = task_data_at_file_rate(backend, project, tid, dict(data), info, video, info.video(data))
        if len(video) <= backend.config.sync_frame_budget:
            ids = add_objects(backend, project, tid, data, info, what, video, None)
            return state_prediction(backend.states.load(project, tid), info, ids)
    finally:
        video.close()
    backend.require_writer(project, tid)
    payload = {"project": project, "task": tid, "data": dict(data), "label_config": label_config, **what}
    backend.submit("add", f"add:{uuid.uuid4().hex}", payload, project=project, task=tid)
    return []


__all__ = ["interactive_predict"]
