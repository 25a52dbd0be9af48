"""What an annotator saw and submitted: the provenance of each object's mask on each frame.

Label Studio shows an annotator each object's keyframe mask (its page of the keyframe images)
and its extra mask pages (``backend.labelstudio.pages``); the rest of the track is the backend's
propagation, never looked at mask by mask. When a
submitted annotation arrives (webhook, ``vrshq corrections sync``) the task state records, per
object and shown frame, what became of it: ``corrected`` (the annotator drew a different mask),
``reviewed`` (shown and submitted unchanged) or ``deleted`` (the object was removed). Every
other frame is ``propagated``. Only corrected and reviewed frames are ground truth: the model's
own output scored against itself says nothing about the model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vrshq.masks import decode_rle, encode_rle

CORRECTED, REVIEWED, PROPAGATED, DELETED = "corrected", "reviewed", "propagated", "deleted"
PROVENANCE = (CORRECTED, REVIEWED, PROPAGATED)  # the per-frame values an export writes
VERIFIED = frozenset({CORRECTED, REVIEWED})  # ground truth: an annotator looked at it


@dataclass
class Review:
    """One object on one shown frame, as the newest submitted annotation left it."""

    obj_id: int
    frame: int
    status: str  # CORRECTED, REVIEWED or DELETED
    mask: np.ndarray  # the submitted mask: the drawn one, or the one shown (boolean HxW)
    annotation: Any = None  # the Label Studio annotation id
    prompt: str | None = None  # the object's prompt then: an object re-prompted since is another

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the mask as COCO RLE)."""
        return {"obj_id": self.obj_id, "frame": self.frame, "status": self.status,
                "mask": encode_rle(np.asarray(self.mask, dtype=bool)),
                "annotation": self.annotation, "prompt": self.prompt}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Review:
        """The inverse of :meth:`to_json`."""
        return cls(int(d["obj_id"]), int(d["frame"]), str(d["status"]), decode_rle(d["mask"]),
                   d.get("annotation"), d.get("prompt"))


def deleted_objects(state: Any) -> set[int]:
    """The ids of the objects of ``state`` the newest submitted annotation deleted.

    A verdict counts only for the object it was given on: an object re-prompted since (same id,
    another prompt) is another object. Deleted objects stay in the state (so their ids are never
    given to a new object, and exports and the log can still name them), but no prediction shows
    them again (:func:`vrshq.backend.labelstudio.results.state_results`).
    """
    prompts = {o.obj_id: o.details.get("prompt") for o in state.objects}
    return {r.obj_id for r in state.reviews
            if r.status == DELETED and r.obj_id in prompts and r.prompt == prompts[r.obj_id]}


def record_submission(state: Any, changes: Sequence[Any], annotation: Mapping[str, Any],
                      has_masks: bool) -> int:
    """Record a submitted annotation's verdict on each shown object in ``state``; how many.

    ``state`` is a :class:`~vrshq.backend.tasks.state.TaskState` (which imports this module, so
    it is not imported here); ``changes`` is :func:`~vrshq.backend.labelstudio.annotations.diff_annotation`'s answer
    (unchanged objects included). A newer verdict on an (object, frame) replaces the older one.
    Without masks in the label config the annotator saw no mask, so nothing is reviewed.
    """
    aid = annotation.get("id")
    if aid is not None and str(aid) not in state.submissions:
        state.submissions.append(str(aid))
    elif aid is None and "?" not in state.submissions:
        state.submissions.append("?")  # a submission without an id still counts as one
    if not has_masks:
        return 0
    n = 0
    for ch in changes:
        obj = ch.obj
        if ch.deleted:
            status, mask = DELETED, np.zeros_like(ch.predicted_mask, dtype=bool)
        elif ch.mask is not None:
            status, mask = CORRECTED, ch.mask
        elif getattr(ch, "clicks", None) is not None:
            # Clicks say the shown mask was wrong but draw none: the frame's mask will be the
            # tracker's (propagated, like a moved box's), not a mask the annotator approved.
            state.reviews = [r for r in state.reviews if (r.obj_id, r.frame) != (obj.obj_id, int(ch.frame))]
            continue
        else:
            status, mask = REVIEWED, ch.predicted_mask
        review = Review(obj.obj_id, int(ch.frame), status, np.asarray(mask, dtype=bool), aid,
                        obj.details.get("prompt"))
        state.reviews = [r for r in state.reviews
                         if (r.obj_id, r.frame) != (review.obj_id, review.frame)] + [review]
        n += 1
    return n


def record_submitted(states: Any, project: str, task: Any, changes: Sequence[Any],
                     annotation: Mapping[str, Any], has_masks: bool) -> int:
    """:func:`record_submission` into the task's stored record of submissions; objects recorded.

    Only the record's own short lock is taken, not the task's (a job may hold that for minutes).
    """
    with states.reviews_lock(project, task):
        state = states.load(project, task)  # the record as it is now, under its lock
        if state is None:
            return 0
        n = record_submission(state, changes, annotation, has_masks)
        states.save_reviews(state)
        return n


__all__ = ["CORRECTED", "DELETED", "PROPAGATED", "PROVENANCE", "REVIEWED", "VERIFIED", "Review",
           "deleted_objects", "record_submission", "record_submitted"]
