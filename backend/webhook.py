"""``/webhook``: a submitted or updated annotation -> logged corrections -> a re-propagation job.

Label Studio waits about one second for a webhook, so the handler only compares the annotation
with the backend's prediction, appends what differs to the corrections log (committed before
answering) and queues the re-propagation of corrected keyframe masks; the job posts the new
prediction to Label Studio with the same region ids and labels.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from backend.annotation_diff import ObjectChange, diff_annotation
from backend.corrections import Correction as LoggedCorrection
from backend.labelconfig import LabelConfigInfo
from backend.results import object_label
from backend.state import TaskState
from backend.task_inputs import RequestError, is_id, malformed_input, project_id
from plugins.base import Correction
from vrshq.masks import encode_rle

CORRECTION_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
TRAIN_EVENT = "START_TRAINING"


def log_changes(log: Any, state: TaskState, info: LabelConfigInfo, changes: list[ObjectChange],
                event: str, annotation: Mapping[str, Any] | None = None) -> list[int]:
    """Append the changed objects to the corrections log (one transaction); their ids.

    A change identical to the newest logged correction of the same object and frame (the same
    annotation submitted twice) is not logged again.
    """
    annotation = annotation or {}
    annotator = annotation.get("completed_by")
    if isinstance(annotator, Mapping):
        annotator = annotator.get("id")
    records = []
    for ch in changes:
        if not ch.changed:
            continue
        obj = ch.obj
        corrected = ch.corrected_mask()
        record = LoggedCorrection(
            project=state.project, task=state.task, annotation=annotation.get("id"),
            annotator=annotator, video_path=state.video, video_sha256=None, fps=state.fps,
            prompt=str(obj.details.get("prompt") or ""), obj_id=obj.obj_id,
            label=object_label(obj, info), frame=int(obj.keyframe),
            predicted_mask=encode_rle(ch.predicted_mask),
            corrected_mask=None if corrected is None else encode_rle(corrected),
            predicted_boxes=boxes_json(ch.predicted_boxes), corrected_boxes=boxes_json(ch.boxes),
            model_version=state.model_version, plugin=state.plugin, event=event,
            annotated_at=annotation.get("updated_at") or annotation.get("created_at"))
        records.append(record)
    # The repeat check happens inside the log's write transaction: a duplicate delivery handled
    # at the same time by another thread or process must not pass it too.
    return log.append_new(records)


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
        # The log checks each record (boxes: finite, non-negative sizes) before it writes any.
        ids = log_changes(backend.corrections, state, info, changes, action, annotation)
    corrections = mask_corrections(changes)
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


__all__ = ["CORRECTION_EVENTS", "boxes_json", "handle_webhook", "log_changes", "mask_corrections"]
