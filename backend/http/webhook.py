"""``/webhook``: a submitted or updated annotation -> logged corrections -> a re-propagation job.

Label Studio waits about one second for a webhook, so the handler only compares the annotation
with the backend's prediction, appends what differs to the corrections log (committed before
answering) and queues the re-propagation of corrected masks (and of moved boxes, for a plugin
that takes box corrections: :mod:`vrshq.backend.labelstudio.box_fixes`, and of clicks on a mask
page, for one that takes clicks: :mod:`vrshq.backend.labelstudio.click_fixes`); the job posts the new
prediction to Label Studio with the same region ids and labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vrshq.backend.corrections.changes import job_key, log_changes_each, takes_boxes, takes_points, to_repropagate
from vrshq.backend.jobs.payloads import correct_payload
from vrshq.backend.labelstudio.annotations import diff_annotation
from vrshq.backend.tasks.inputs import RequestError, is_id, malformed_input, project_id
from vrshq.backend.tasks.provenance import record_submitted

CORRECTION_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
TRAIN_EVENT = "START_TRAINING"


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
    # The submission itself (what was shown, what changed) is the provenance of the task's masks.
    record_submitted(backend.states, pid, tid, changes, annotation, info.has_masks)
    ids = [i for _, i in logged if i is not None]
    # What this delivery logged anew, and what was logged before but is not in the state yet (a
    # kill between the log's commit and the queueing); the job key is the corrections', so a
    # re-delivery while the first job waits or runs joins it instead of queueing a second.
    corrections = to_repropagate(logged, takes_boxes(backend.plugin), takes_points(backend.plugin))
    job_id, note = None, None
    if corrections and not backend.writer(pid).configured:
        note = ("corrections logged; re-propagation needs LABEL_STUDIO_URL and "
                "LABEL_STUDIO_API_KEY (or a connection from Label Studio) to write its prediction")
        corrections_to_run: list = []
    else:
        corrections_to_run = corrections
    if corrections_to_run:
        text = backend.label_config_text(pid, label_config)
        job, _ = backend.submit("correct", job_key(pid, tid, corrections_to_run),
                                correct_payload(pid, tid, corrections_to_run, text), project=pid, task=tid)
        job_id = job.id
    body_out: dict[str, Any] = {"corrections": len(ids), "job": job_id,
                                "objects": [c.obj_id for c in corrections_to_run]}
    if note:
        body_out["note"] = note
    return 201, {"status": "ok", "result": body_out}


__all__ = ["CORRECTION_EVENTS", "TRAIN_EVENT", "handle_webhook"]
