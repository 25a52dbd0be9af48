"""A task state as Label Studio results: per object one track, its keyframe mask and its extra mask
pages (:mod:`vrshq.backend.labelstudio.pages`), stable ids."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from vrshq.backend.labelstudio.click_fixes import click_results
from vrshq.backend.labelstudio.label_rules import choose_label
from vrshq.backend.labelstudio.labelconfig import LabelConfigInfo
from vrshq.backend.labelstudio.pages import all_pages, extra_pages, page_mask
from vrshq.backend.labelstudio.predictions import (
    brush_result,
    object_results,
    page_region_id,
    prediction,
    region_id,
)
from vrshq.backend.tasks.provenance import deleted_objects
from vrshq.backend.tasks.state import TaskState
from vrshq.plugins.base import ObjectTrack


def confidence(logit: float) -> float:
    """An object-score logit as Label Studio's 0..1 score (its sigmoid)."""
    if not math.isfinite(logit):
        return 1.0 if logit > 0 else 0.0
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, float(logit)))))


def object_region_id(state: TaskState, obj: ObjectTrack) -> str:
    """The object's region id: the one Label Studio gave it (a drawn track), else ours."""
    return str(obj.details.get("region_id") or region_id(state.task, obj.obj_id))


def shown_mask(obj: ObjectTrack) -> np.ndarray:
    """The keyframe mask to show: the latest correction on the keyframe, else the model's."""
    return page_mask(obj, obj.keyframe)


def object_label(obj: ObjectTrack, info: LabelConfigInfo) -> str:
    """The object's label if the config has it, else the label its prompt gets."""
    return object_label_rule(obj, info)[0]


def object_label_rule(obj: ObjectTrack, info: LabelConfigInfo) -> tuple[str, str | None]:
    """The object's label and the rule that chose it (None: not a text prompt's, e.g. a drawn box).

    A label the config no longer has is chosen again from the prompt (without the CLIP rule).
    """
    if obj.label in info.labels:
        return str(obj.label), obj.details.get("label_rule")
    choice = choose_label(str(obj.details.get("prompt") or ""), info)
    return choice.label, choice.rule


def state_results(state: TaskState, info: LabelConfigInfo,
                  obj_ids: set[int] | None = None) -> list[dict[str, Any]]:
    """The results of every object of ``state`` (or of ``obj_ids``) but the deleted ones:
    keyframe page = object order, then a brush result on each extra page (page len(objects) + i).

    An object an annotator deleted is left out of every prediction (the one a correction job
    posts, a saved one served again) but keeps its place in the page order, so the other
    objects' pages stay where the keyframe images put them.
    """
    out: list[dict[str, Any]] = []
    gone = deleted_objects(state)
    for index, obj in enumerate(state.objects):
        if (obj_ids is not None and obj.obj_id not in obj_ids) or obj.obj_id in gone:
            continue
        label, rule = object_label_rule(obj, info)
        out += object_results(
            obj.track, obj.keyframe, shown_mask(obj), label,
            object_region_id(state, obj), info, state.fps, state.frames_count,
            item_index=index, score=confidence(obj.score),
            meta={"label_rule": rule} if rule else None)
    if not info.has_masks:
        return out
    by_id = {o.obj_id: o for o in state.objects}
    for n, page in enumerate(extra_pages(state)):
        obj = by_id[page.obj_id]
        if (obj_ids is not None and obj.obj_id not in obj_ids) or obj.obj_id in gone:
            continue
        label, rule = object_label_rule(obj, info)
        out.append(brush_result(page_mask(obj, page.frame), label,
                                page_region_id(object_region_id(state, obj), page.frame), info,
                                len(state.objects) + n, confidence(obj.score),
                                {"label_rule": rule} if rule else None))
    return out + _echoed_clicks(state, info, obj_ids, gone)


def _echoed_clicks(state: TaskState, info: LabelConfigInfo, obj_ids: set[int] | None,
                   gone: set[int]) -> list[dict[str, Any]]:
    """Each page's applied clicks (labelstudio/click_fixes.py), echoed on the page: the first
    page of the object on that frame."""
    out: list[dict[str, Any]] = []
    seen = set()
    for page, (obj, frame) in enumerate(all_pages(state)):
        if (obj_ids is not None and obj.obj_id not in obj_ids) or obj.obj_id in gone \
                or (obj.obj_id, frame) in seen:
            continue
        seen.add((obj.obj_id, frame))
        out += click_results(obj, frame, page, object_region_id(state, obj), info)
    return out


def state_score(state: TaskState) -> float:
    """The prediction's score: the mean confidence of the objects shown (0 without any)."""
    gone = deleted_objects(state)
    shown = [o for o in state.objects if o.obj_id not in gone]
    if not shown:
        return 0.0
    return float(np.mean([confidence(o.score) for o in shown]))


def state_prediction(state: TaskState, info: LabelConfigInfo,
                     obj_ids: set[int] | None = None) -> dict[str, Any]:
    """The Label Studio prediction of ``state``."""
    return prediction(state_results(state, info, obj_ids), state.model_version, state_score(state))


__all__ = ["confidence", "object_label", "object_label_rule", "object_region_id", "shown_mask",
           "state_prediction", "state_results", "state_score"]
