"""New objects for a task: typed prompts or drawn tracks, tracked and merged into the task's state.

Interactive ``/predict`` runs it in the request for a short video; the ``add`` job runs it for a
long one (on the queue's workers when ``REDIS_URL`` is set) and writes the prediction back.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

from vrshq.backend.labelstudio.label_rules import clip_rule, record_label_rules
from vrshq.backend.labelstudio.labelconfig import LabelConfigInfo, parse_label_config
from vrshq.backend.labelstudio.pages import refresh_pages
from vrshq.backend.labelstudio.results import object_region_id
from vrshq.backend.tasks.inputs import RequestError, malformed_input, text_prompts
from vrshq.backend.tasks.features import task_slot
from vrshq.backend.tasks.state import TaskState
from vrshq.engine.persist import FeatureSlot, use_slot
from vrshq.masks import videorectangle_to_boxes
from vrshq.plugins.base import ObjectPrompt, ObjectTrack
from vrshq.video.reader import VideoReader


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
    refresh_pages(state, backend.config.mask_pages, ids)
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


def _stored_features(backend: Any, project: str, tid: int, what: Mapping[str, Any],
                     video: VideoReader) -> FeatureSlot | None:
    """The task's stored image features for drawn tracks (their tracker reads them as a correction
    does); None for typed prompts (a new prompt's model pass is a prediction) or a task without a state."""
    if what.get("texts"):
        return None
    state = backend.states.load(project, tid)
    if state is None:
        return None
    return task_slot(backend.config, project, tid, state.video, state.fps, video,
                     backend.model_version, "read")


def add_objects(backend: Any, project: str, tid: int, data: Mapping[str, Any], info: LabelConfigInfo,
                what: Mapping[str, Any], video: VideoReader, report: Any) -> set[int]:
    """Track typed prompts (``texts``) or drawn tracks (``boxes``) as new objects of the task; their ids."""
    predict = _work(backend, info, what)
    with backend.states.lock(project, tid):
        slot = _stored_features(backend, project, tid, what, video)
        with use_slot(slot):
            tracks = predict(video, project, tid, report)
            if slot is not None:
                slot.keep_filled()  # features the tracker computed when none were stored
        return _merge(backend, project, tid, data, info, video, tracks)


def add_job(backend: Any, payload: Mapping[str, Any], report: Any = None,
            key: str | None = None) -> dict[str, Any]:
    """The ``add`` job: track typed prompts or drawn tracks as new objects, write the prediction back."""
    info = parse_label_config(str(payload["label_config"]))
    project, tid, data = str(payload["project"]), int(payload["task"]), dict(payload["data"])
    video = backend.open_video(project, tid, info.video(data), info.fps(data))
    try:
        add_objects(backend, project, tid, data, info, payload, video, report)
    finally:
        video.close()
    return backend.write_back(backend.states.load(project, tid), info, key)


__all__ = ["add_job", "add_objects"]
