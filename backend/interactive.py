"""Interactive requests (``/predict`` with a ``context``) from Label Studio's auto-annotation.

What the editor sends, and what the backend answers (results with the objects' region ids, so
the editor replaces the regions it has):

* a keyframe mask drawn or edited with the brush (``brushlabels`` on the keyframe images): a
  correction of that object; it is logged and re-propagated, and the object's new track and
  mask come back;
* a submitted TextArea prompt (text plugins): a new object, tracked, comes back;
* a track selected and labelled (``videorectangle``; box plugins): the track's first box is the
  prompt; the tracked object comes back under the track's own region id.

A video longer than the frame budget runs as a job that writes a prediction back instead (on
the queue's workers when ``REDIS_URL`` is set: the job's payload is plain JSON, see :func:`add_job`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from backend.annotation_diff import ObjectChange, frame_size
from backend.label_rules import clip_rule, record_label_rules
from backend.labelconfig import LabelConfigInfo
from backend.predictions import parse_annotation
from backend.results import object_region_id, shown_mask, state_prediction
from backend.state import TaskState
from backend.task_inputs import (
    RequestError,
    check_prompt_chars,
    check_prompt_tokens,
    malformed_input,
    task_data,
    task_id,
    text_prompts,
)
from backend.webhook import log_changes
from plugins.base import Correction, ObjectPrompt, ObjectTrack
from vrshq.masks import videorectangle_to_boxes
from vrshq.video.reader import VideoReader

Work = Callable[[VideoReader, Any], set[int]]


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
    if brushes:
        return _correct(backend, tid, info, project, brushes, label_config)
    if texts:
        if "text" not in backend.plugin.capabilities:
            raise RequestError(f"the {backend.plugin.name} plugin does not take text prompts")
        check_prompt_chars(texts, backend.config, f"task {tid}")
        check_prompt_tokens(backend.plugin, texts, backend.config, f"task {tid}")
        return _add_objects(backend, tid, data, info, project, label_config, {"texts": texts})
    if boxes:
        if "box" not in backend.plugin.capabilities:
            raise RequestError(f"the {backend.plugin.name} plugin does not take box prompts; "
                               "type a text prompt instead")
        return _add_objects(backend, tid, data, info, project, label_config,
                            {"boxes": [dict(b) for b in boxes]})
    return []


# ---------------------------------------------------------------------- corrections
def _correct(backend: Any, tid: int, info: LabelConfigInfo, project: str,
             brushes: list[Mapping[str, Any]], label_config: str) -> Any:
    state = backend.states.load(project, tid)
    if state is None:
        raise RequestError(f"task {tid} has no prediction from this backend to correct: "
                           "predict it first")
    with malformed_input(f"task {tid}: the context's brush regions"):
        regions = parse_annotation(brushes, info, frame_size=frame_size(state) or (0, 0))
    by_rid = {object_region_id(state, o): o for o in state.objects}
    masks: dict[int, np.ndarray] = {}
    for rid, region in regions.items():
        if region.mask is None:
            continue
        obj = by_rid.get(rid)
        if obj is None and region.keyframe_item_index is not None \
                and 0 <= region.keyframe_item_index < len(state.objects):
            obj = state.objects[region.keyframe_item_index]
        if obj is None:
            raise RequestError(f"task {tid}: the mask region {rid} belongs to no tracked object")
        before = shown_mask(obj)
        if region.mask.shape != before.shape:
            raise RequestError(f"task {tid}: the mask is {region.mask.shape[1]}x{region.mask.shape[0]}"
                               f" but the keyframe is {before.shape[1]}x{before.shape[0]}")
        masks[obj.obj_id] = masks[obj.obj_id] | region.mask if obj.obj_id in masks else region.mask
    changes = [ObjectChange(o, i, shown_mask(o), mask=masks[o.obj_id])
               for i, o in enumerate(state.objects)
               if o.obj_id in masks and not np.array_equal(masks[o.obj_id], shown_mask(o))]
    if not changes:
        return state_prediction(state, info, set(masks))
    log_changes(backend.corrections, state, info, changes, "interactive", None, backend.config.max_row_bytes)
    corrections = [Correction(ch.obj.obj_id, int(ch.obj.keyframe), ch.mask) for ch in changes]
    ids = {c.obj_id for c in corrections}
    if state.frames_count > backend.config.sync_frame_budget:
        from backend.job_functions import correct_payload

        backend.require_writer(project, tid)
        backend.submit("correct", f"correct:{uuid.uuid4().hex}",
                       correct_payload(project, tid, corrections, label_config), project=project, task=tid)
        return []
    new_state = backend.correct_task(project, tid, corrections)
    return state_prediction(new_state, info, ids)


# ---------------------------------------------------------------------- new objects
def _merge(backend: Any, project: str, tid: int, data: Mapping[str, Any], info: LabelConfigInfo,
           video: VideoReader, new: list[ObjectTrack]) -> set[int]:
    """Put new objects into the task's state (replacing same ids), write keyframes, save."""
    state = backend.states.load(project, tid)
    video_url = info.video(data)
    if state is None:
        state = TaskState(project=project, task=str(tid), plugin=backend.plugin.name,
                          model_version=backend.model_version, video=video_url,
                          fps=info.fps(data), frames_count=len(video))
    ids = {o.obj_id for o in new}
    kept = [o for o in state.objects if o.obj_id not in ids]
    if len(kept) + len(new) > backend.config.max_objects:
        raise RequestError(f"task {tid}: more than the {backend.config.max_objects} objects a task "
                           "may have (VRSHQ_MAX_OBJECTS)")
    replaced = {o.obj_id: o for o in new}
    state.replace_objects([replaced.pop(o.obj_id, o) for o in state.objects] + list(replaced.values()))
    backend.write_keyframes(state, video, info, data)
    backend.states.save(state)
    return ids


def _next_id(backend: Any, project: str, tid: int) -> int:
    state = backend.states.load(project, tid)
    return 1 + max((o.obj_id for o in state.objects), default=0) if state else 1


def _text_work(backend: Any, info: LabelConfigInfo, texts: list[str]) -> Callable[..., list]:
    def predict(video: VideoReader, project: str, tid: int, report: Any) -> list[ObjectTrack]:
        prompts = text_prompts(texts, info, first_id=_next_id(backend, project, tid),
                               clip=clip_rule(backend))
        with backend.model_lock:
            tracks = backend.plugin.predict(video, prompts, progress=report)
        record_label_rules(tracks, prompts)
        return tracks
    return predict


def _box_prompt(result: Mapping[str, Any], info: LabelConfigInfo, obj_id: int,
                video: VideoReader) -> ObjectPrompt:
    value = result.get("value")
    if not isinstance(value, Mapping):
        raise RequestError(f"region {result.get('id')}: a videorectangle needs a 'value'")
    with malformed_input(f"region {result.get('id')}: the videorectangle"):
        boxes = videorectangle_to_boxes(dict(value), frames_count=len(video))
    if not boxes:
        raise RequestError(f"region {result.get('id')}: the track shows no box on the video")
    frame = min(boxes)
    b = boxes[frame]
    w, h = video.width, video.height
    x0, y0 = b["x"] / 100 * w, b["y"] / 100 * h
    x1, y1 = x0 + b["width"] / 100 * w, y0 + b["height"] / 100 * h
    labels = [lb for lb in value.get("labels") or [] if lb in info.labels]
    return ObjectPrompt(obj_id=obj_id, label=labels[0] if labels else info.labels[0], frame=frame,
                        box=(max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1)))


def _box_work(backend: Any, info: LabelConfigInfo, boxes: list[Mapping[str, Any]]) -> Callable[..., list]:
    def predict(video: VideoReader, project: str, tid: int, report: Any) -> list[ObjectTrack]:
        state = backend.states.load(project, tid)
        known = {object_region_id(state, o): o.obj_id for o in state.objects} if state else {}
        next_id = _next_id(backend, project, tid)
        prompts, rids = [], []
        for r in boxes:
            rid = str(r.get("id") or uuid.uuid4().hex[:10])
            obj_id = known.get(rid)
            if obj_id is None:
                obj_id, next_id = next_id, next_id + 1
            prompts.append(_box_prompt(r, info, obj_id, video))
            rids.append(rid)
        with backend.model_lock:
            tracks = backend.plugin.predict(video, prompts, progress=report)
        for t, rid in zip(tracks, rids):
            t.details["region_id"] = rid
        return tracks
    return predict


def _work(backend: Any, info: LabelConfigInfo, what: Mapping[str, Any]) -> Callable[..., list]:
    if what.get("texts"):
        return _text_work(backend, info, [str(t) for t in what["texts"]])
    return _box_work(backend, info, list(what.get("boxes") or []))


def _add(backend: Any, project: str, tid: int, data: Mapping[str, Any], info: LabelConfigInfo,
         what: Mapping[str, Any], video: VideoReader, report: Any) -> set[int]:
    predict = _work(backend, info, what)
    with backend.states.lock(project, tid):
        return _merge(backend, project, tid, data, info, video, predict(video, project, tid, report))


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
        if len(video) <= backend.config.sync_frame_budget:
            ids = _add(backend, project, tid, data, info, what, video, None)
            return state_prediction(backend.states.load(project, tid), info, ids)
    finally:
        video.close()
    backend.require_writer(project, tid)
    payload = {"project": project, "task": tid, "data": dict(data), "label_config": label_config, **what}
    backend.submit("add", f"add:{uuid.uuid4().hex}", payload, project=project, task=tid)
    return []


def add_job(backend: Any, payload: Mapping[str, Any], report: Any = None,
            key: str | None = None) -> dict[str, Any]:
    """The ``add`` job: track typed prompts or drawn tracks as new objects, write the prediction back."""
    from backend.labelconfig import parse_label_config

    info = parse_label_config(str(payload["label_config"]))
    project, tid, data = str(payload["project"]), int(payload["task"]), dict(payload["data"])
    video = backend.open_video(project, tid, info.video(data), info.fps(data))
    try:
        _add(backend, project, tid, data, info, payload, video, report)
    finally:
        video.close()
    return backend.write_back(backend.states.load(project, tid), info, key)


__all__ = ["add_job", "interactive_predict"]
