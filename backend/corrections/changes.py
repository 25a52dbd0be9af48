"""Logging what an annotator changed: an annotation's object changes -> rows of the corrections log.

Shared by the webhook, interactive corrections and ``vrshq corrections sync``; every record is
checked (geometry, row size) before any is written, and a repeat of the newest row is not logged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from vrshq.backend.corrections.geometry import checked_sequence
from vrshq.backend.corrections.record import Correction as LoggedCorrection
from vrshq.backend.labelstudio.annotations import ObjectChange
from vrshq.backend.labelstudio.box_fixes import carried
from vrshq.backend.labelstudio.click_fixes import applied_clicks
from vrshq.backend.labelstudio.labelconfig import LabelConfigInfo
from vrshq.backend.labelstudio.results import object_label
from vrshq.backend.tasks.inputs import RequestError
from vrshq.backend.tasks.state import TaskState
from vrshq.masks import encode_rle
from vrshq.plugins.base import Correction


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
    range, boxes clipped to the frame or refused, see :mod:`vrshq.backend.corrections.geometry`) and, with
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
            label=object_label(obj, info), frame=int(ch.frame),
            predicted_mask=encode_rle(ch.predicted_mask),
            corrected_mask=None if corrected is None else encode_rle(corrected),
            predicted_boxes=boxes_json(ch.predicted_boxes), corrected_boxes=boxes_json(boxes),
            model_version=state.model_version, plugin=state.plugin, event=event,
            annotated_at=annotation.get("updated_at") or annotation.get("created_at"),
            corrected_clicks=clicks_json(ch.clicks))
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


def clicks_json(clicks: Correction | None) -> list[dict[str, Any]] | None:
    """A clicks correction's points as the log stores them (``{x, y, label}``, pixels)."""
    if clicks is None or clicks.points is None:
        return None
    return [{"x": float(x), "y": float(y), "label": int(lb)}
            for (x, y), lb in zip(clicks.points, clicks.point_labels or [])]


def applied(change: ObjectChange, boxes: bool = False, points: bool = False) -> bool:
    """Whether the state's object already carries the change's mask as a correction on its frame
    (and, with ``boxes``, each of its box corrections, :attr:`ObjectChange.box_fixes`; with
    ``points``, its clicks as the newest correction on its frame)."""
    if boxes and not all(carried(change.obj.corrections, fix) for fix in change.box_fixes):
        return False
    if points and change.clicks is not None and change.mask is None:
        newest = applied_clicks(change.obj, int(change.frame))
        if newest is None or not carried([newest], change.clicks):
            return False
    if change.mask is None:
        return True
    frame = int(change.frame)
    return any(int(c.frame) == frame and c.mask is not None
               and np.array_equal(np.asarray(c.mask, dtype=bool), change.mask)
               for c in change.obj.corrections)


def to_repropagate(logged: list[tuple[ObjectChange, int | None]], boxes: bool = False,
                   points: bool = False) -> list[Correction]:
    """The corrections a delivery must see re-propagated: what it logged anew, and what an
    earlier delivery logged but the task's state does not carry yet (masks; with ``boxes``, for a
    plugin that takes box corrections, moved boxes too).

    The second kind is the gap between the log's commit and the job's queueing: a process killed
    there (or a job still queued) leaves a logged correction that no re-delivery would queue
    again if only new rows were queued. Queued under :func:`job_key`, a re-delivery while the
    first job waits or runs joins it instead of adding a second.
    """
    return mask_corrections([ch for ch, i in logged if i is not None or not applied(ch, boxes, points)],
                            boxes, points)


def job_key(project: str, task: int | str, corrections: list[Correction]) -> str:
    """A re-propagation job's queue key, from what it applies: the same corrections, one job."""
    h = hashlib.sha256(f"{project}|{task}".encode())
    for c in sorted(corrections, key=lambda c: (int(c.obj_id), int(c.frame))):
        if c.mask is None:  # a box or clicks, by value (masks keep the key they always had)
            h.update(f"|{int(c.obj_id)}:{int(c.frame)}:{c.box}:{c.points}:{c.point_labels}".encode())
            continue
        mask = np.ascontiguousarray(np.asarray(c.mask, dtype=bool))
        h.update(f"|{int(c.obj_id)}:{int(c.frame)}:{mask.shape}".encode())
        h.update(np.packbits(mask).tobytes())
    return "correct:" + h.hexdigest()[:32]


def mask_corrections(changes: list[ObjectChange], boxes: bool = False,
                     points: bool = False) -> list[Correction]:
    """The re-propagation input: each changed mask (keyframe or extra page, on its frame) of an
    object that was not deleted; with ``boxes``, then each moved box on its frame; with
    ``points``, then each page's clicks on a frame whose mask was not edited."""
    out = [Correction(ch.obj.obj_id, int(ch.frame), ch.mask) for ch in changes
           if ch.mask is not None and not ch.deleted]
    if boxes:
        out += [fix for ch in changes if not ch.deleted for fix in ch.box_fixes]
    if points:
        out += [ch.clicks for ch in changes if ch.clicks is not None and ch.mask is None and not ch.deleted]
    return out


def takes_points(plugin: Any) -> bool:
    """Whether ``plugin`` re-propagates clicks corrections (else clicks are only logged)."""
    return "points" in getattr(plugin, "correction_kinds", frozenset())


def takes_boxes(plugin: Any) -> bool:
    """Whether ``plugin`` re-propagates box corrections (else a moved box is only logged)."""
    return "box" in getattr(plugin, "correction_kinds", frozenset())


__all__ = ["applied", "boxes_json", "clicks_json", "job_key", "log_changes", "log_changes_each",
           "mask_corrections", "takes_boxes", "takes_points", "to_repropagate"]
