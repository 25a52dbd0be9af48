"""Catch up on corrections whose webhook never arrived (the backend was down, or restarting).

Label Studio does not re-send a failed webhook. ``vrshq corrections sync`` reads every annotation
of a project's predicted tasks from Label Studio, compares each with the prediction it started
from (its ``parent_prediction``: what the annotator saw, not the task's state now) and logs what
differs and is not in the log yet. Logging is idempotent: a second run adds nothing.

It logs what the webhook would have logged for the same annotation: pages the parent prediction
did not have (one ``frame N`` added, regions drawn anew on it) are read from the task's page
list while it extends the prediction's, and objects added after it that the annotation carries
are compared with the backend's object (:func:`vrshq.backend.labelstudio.annotations.diff_annotation`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vrshq.backend.corrections.changes import boxes_json, log_changes
from vrshq.backend.labelstudio.annotations import diff_annotation
from vrshq.backend.labelstudio.labelconfig import parse_label_config
from vrshq.backend.tasks.provenance import record_submitted
from vrshq.backend.tasks.state import TaskStateStore
from vrshq.masks import encode_rle

SYNC_EVENT = "SYNC"


@dataclass
class SyncReport:
    """What a sync found: annotations read, corrections logged, and what it could not compare."""

    tasks: int = 0
    annotations: int = 0
    logged: int = 0
    without_parent: int = 0  # annotations not started from a prediction of this backend


def _key(annotation: Any, obj_id: Any, frame: Any, mask: Any, boxes: Any) -> str:
    return json.dumps([str(annotation), str(obj_id), int(frame), mask, boxes], sort_keys=True)


def _logged(log: Any, project: str, task: int) -> set[str]:
    return {_key(c.annotation, c.obj_id, c.frame, c.corrected_mask, c.corrected_boxes)
            for c in log.list(project=project, task=task)}


def _change_key(annotation: Any, ch: Any) -> str:
    mask = ch.corrected_mask()  # what log_changes stores for this change
    return _key(annotation, ch.obj.obj_id, ch.frame, None if mask is None else encode_rle(mask),
                boxes_json(ch.boxes))


def sync_project(log: Any, states: TaskStateStore, writer: Any, project: str,
                 progress: Callable[[int, int], None] | None = None) -> SyncReport:
    """Log the corrections of ``project``'s annotations that the log does not have yet."""
    info = parse_label_config(writer.project_label_config(int(project)))
    report = SyncReport()
    tasks = states.tasks(project)
    for n, task in enumerate(tasks, 1):
        state = states.load(project, task)
        report.tasks += 1
        logged = _logged(log, project, task)
        parents: dict[int, list[dict[str, Any]] | None] = {}  # annotations often share one
        for annotation in sorted(writer.annotations(task), key=lambda a: (a.get("updated_at") or "", a["id"])):
            if annotation.get("was_cancelled") or not isinstance(annotation.get("result"), list):
                continue
            report.annotations += 1
            parent = annotation.get("parent_prediction")
            if parent and parent not in parents:
                parents[parent] = writer.prediction_result(parent)
            predicted = parents.get(parent) if parent else None
            if predicted is None:
                report.without_parent += 1
                continue
            changes = diff_annotation(state, info, annotation["result"], predicted_results=predicted)
            new = [ch for ch in changes if ch.changed and _change_key(annotation["id"], ch) not in logged]
            report.logged += len(log_changes(log, state, info, new, SYNC_EVENT, annotation))
            # Annotations in id/time order: the newest verdict per (object, frame) wins.
            record_submitted(states, project, task, changes, annotation, info.has_masks)
            logged |= {_change_key(annotation["id"], ch) for ch in new}
        if progress is not None:
            progress(n, len(tasks))
    return report


__all__ = ["SYNC_EVENT", "SyncReport", "sync_project"]
