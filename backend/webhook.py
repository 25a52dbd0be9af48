"""``/webhook``: a submitted or updated annotation -> logged corrections -> a re-propagation job.

Label Studio waits about one second for a webhook, so the handler only compares the annotation
with the backend's prediction, appends what differs to the corrections log (committed before
answering) and queues the re-propagation of corrected keyframe masks; the job posts the new
prediction to Label Studio with the same region ids and labels.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from backend.annotation_diff import ObjectChange, diff_annotation
from backend.corrections import Correction as LoggedCorrection
from backend.geometry import checked_sequence
from backend.labelconfig import LabelConfigInfo
from backend.results import object_label
from backend.state import TaskState
from backend.task_inputs import RequestError, is_id, malformed_input, project_id
from plugins.base import Correction
from vrshq.masks import encode_rle

CORRECTION_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
TRAIN_EVENT = "START_TRAINING"


def log_changes(log: Any, state: TaskState, info: LabelConfigInfo, changes: list[ObjectChange],
                event: str, annotation: Mapping[str, Any] | None = None,
                max_row_bytes: int | None = None) -> list[int]:
    """Append the changed objects to the corrections log (one transaction); their ids.

    A change identical to the newest logged correction of the same object and frame (the same
    annotation submitted twice) is not logged again.
    """
    return [i for _, i in log_changes_each(log, state, info, changes, event, annotation,
                                           max_row_bytes) if i is not None]


def log_changes_each(log: Any, state: TaskState, info: LabelConfigInfo, changes: list[ObjectChange],
                     event: str, annotation: Mapping[str, Any] | None = None,
                     max_row_bytes: int | None = None) -> list[tuple[ObjectChange, int | None]]:
    """Like :func:`log_changes`, per changed object: (change, its new id or None if a repeat).

    Every record is checked before any is written: box tracks against the video (frames in
    range, boxes clipped to the frame or refused, see :mod:`backend.geometry`) and, with
    ``max_row_bytes``, the size of its row.
    """
    annotation = annotation or {}
    annotator = annotation.get("completed_by")
    if isinstance(annotator, Mapping):
        annotator = annotator.get("id")
    records, changed = [], []
    for ch in changes:
        if not ch.changed:
            continue
        obj = ch.obj
        corrected = ch.corrected_mask()
        boxes = None if ch.boxes is None else checked_sequence(
            ch.boxes, state.frames_count, f"object {obj.obj_id}'s box track")
        record = LoggedCorrection(
            project=state.project, task=state.task, annotation=annotation.get("id"),
            annotator=annotator, video_path=state.video, video_sha256=None, fps=state.fps,
            prompt=str(obj.details.get("prompt") or ""), obj_id=obj.obj_id,
            label=object_label(obj, info), frame=int(obj.keyframe),
            predicted_mask=encode_rle(ch.predicted_mask),
            corrected_mask=None if corrected is None else encode_rle(corrected),
            predicted_boxes=boxes_json(ch.predicted_boxes), corrected_boxes=boxes_json(boxes),
            model_version=state.model_version, plugin=state.plugin, event=event,
            annotated_at=annotation.get("updated_at") or annotation.get("created_at"))
        if max_row_bytes is not None:
            size = len(json.dumps(record.to_json()))
            if size > max_row_bytes:
                raise RequestError(f"object {obj.obj_id}: the correction is {size} bytes as a log row, "
                                   f"more than the {max_row_bytes} a row may have (VRSHQ_MAX_ROW_BYTES)")
        records.append(record)
        changed.append(ch)
    # The repeat check happens inside the log's write transaction: a duplicate delivery handled
    # at the same time by another thread or process must not pass it too.
    each = getattr(log, "append_new_each", None)
    if each is not None:
        return list(zip(changed, each(records)))
    ids = log.append_new(records)
    return list(zip(changed, ids)) if len(ids) == len(changed) else [(ch, None) for ch in changed]


def boxes_json(sequence: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """A box sequence as the log stores it (Label Studio's keyframe fields only)."""
    if sequence is None:
        return None
    keys = ("frame", "x", "y", "width", "height", "enabled", "rotation", "time")
    return [{k: v for k, v in item.items() if k in keys} for item in sequence]


def mask_corrections(changes: list[ObjectChange]) -> list[Correction]:
    """The re-propagation input: each changed keyframe mask of an object that was not deleted."""
    return [Correction(ch.obj.obj_id, int(ch.obj.keyframe), ch.mask) for ch in changes
            if ch.mask is not None and not ch.deleted]


def handle_webhook(backend: Any, payload: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
    """Answer a webhook: (HTTP status, JSON body)."""
    action = payload.get("action")
    if action == TRAIN_EVENT:
        pid = project_id(payload.get("project"))
        if backend.corrections.count() == 0:
            return 200, {"status": "ok", "result": {"job": None, "note": "no corrections logged yet"}}
        job, created = backend.submit("train", "train", {"project": pid}, project=pid)
        return 201, {"status": "ok", "result": {"job": job.id, "started": created}}
    if action not in CORRECTION_EVENTS:
        return 200, {"status": "Unknown event"}
    annotation = payload.get("annotation")
    if not isinstance(annotation, Mapping):
        raise RequestError(f"{action}: the payload has no 'annotation' object")
    result = annotation.get("result")
    if not isinstance(result, list):
        raise RequestError(f"{action}: annotation 'result' must be a list")
    project_ref = payload.get("project")
    pid = project_id(project_ref)
    task = payload.get("task")
    tid = task.get("id") if isinstance(task, Mapping) else (task if task is not None else annotation.get("task"))
    if not is_id(tid):
        raise RequestError(f"{action}: the payload has no task id (an integer 0..2**63-1)")
    label_config = project_ref.get("label_config") if isinstance(project_ref, Mapping) else None
    info = backend.label_config(pid, label_config)
    state = backend.states.load(pid, tid)
    if state is None:
        return 201, {"status": "ok", "result": {"corrections": 0, "job": None,
                                                "note": f"task {tid} has no prediction from this backend"}}
    if annotation.get("was_cancelled"):
        return 201, {"status": "ok", "result": {"corrections": 0, "job": None, "note": "skipped"}}
    with malformed_input(f"task {tid}: the annotation"):
        changes = diff_annotation(state, info, result)
        # Each record is checked (geometry against the video, row size) before any is written.
        logged = log_changes_each(backend.corrections, state, info, changes, action, annotation,
                                  backend.config.max_row_bytes)
    ids = [i for _, i in logged if i is not None]
    # Only what this delivery logged anew is re-propagated: a re-delivered annotation (or the
    # same one delivered twice at once: the log lets one of them in) queues no second job.
    corrections = mask_corrections([ch for ch, i in logged if i is not None])
    job_id, note = None, None
    if corrections and not backend.writer(pid).configured:
        note = ("corrections logged; re-propagation needs LABEL_STUDIO_URL and "
                "LABEL_STUDIO_API_KEY (or a connection from Label Studio) to write its prediction")
        corrections_to_run: list[Correction] = []
    else:
        corrections_to_run = corrections
    if corrections_to_run:
        from backend.job_functions import correct_payload

        text = backend.label_config_text(pid, label_config)
        job, _ = backend.submit("correct", f"correct:{uuid.uuid4().hex}",
                                correct_payload(pid, tid, corrections_to_run, text), project=pid, task=tid)
        job_id = job.id
    body_out: dict[str, Any] = {"corrections": len(ids), "job": job_id,
                                "objects": [c.obj_id for c in corrections_to_run]}
    if note:
        body_out["note"] = note
    return 201, {"status": "ok", "result": body_out}


__all__ = ["CORRECTION_EVENTS", "boxes_json", "handle_webhook", "log_changes", "log_changes_each",
           "mask_corrections"]
