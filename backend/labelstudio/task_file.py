"""A Label Studio task that imports as it is: a video's task data with one prediction of its tracks.

This is what ``vrshq track`` and ``vrshq segment`` write as ``labelstudio.json``: a list
holding one task, ``[{"data": {...}, "predictions": [{"model_version", "score", "result"}]}]``,
the shape of Label Studio's JSON import (the import dialog or ``POST /api/projects/<id>/import``).
The tag names, the task data keys and the labels come from the project's label config
(:func:`vrshq.backend.labelstudio.labelconfig.parse_label_config`), so the file imports into
a project with that config without edits.

Each object is one ``videorectangle`` track with its own label. No keyframe masks: a mask is
drawn on a keyframe image Label Studio must be able to load, and the backend writes those
images (and the masks) when it predicts the task itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vrshq.backend.labelstudio.labelconfig import LabelConfigError, LabelConfigInfo
from vrshq.backend.labelstudio.predictions import prediction
from vrshq.backend.labelstudio.results import confidence
from vrshq.masks import Track, TrackSet, track_to_videorectangle

# The label of an object no text describes (a `vrshq track` mask), when the config has it.
DEFAULT_LABEL = "Object"


def object_labels(info: LabelConfigInfo, obj_ids: Sequence[int], given: Sequence[str] = (),
                  prompts: Mapping[int, str] | None = None) -> dict[int, str]:
    """The label of each object: ``given`` (one for all, or one per object in ``obj_ids`` order),
    else the label its prompt names (matched as the backend matches them), else ``Object`` when
    the config has it, else the config's first label.

    :class:`LabelConfigError` names a label the config lacks or a count that does not fit.
    """
    for label in given:
        info.check_label(label)
    if given:
        if len(given) not in (1, len(obj_ids)):
            raise LabelConfigError(f"{len(given)} labels for {len(obj_ids)} objects: give one label "
                                   "for every object, or one per object")
        return {o: given[0] if len(given) == 1 else given[i] for i, o in enumerate(obj_ids)}
    fallback = DEFAULT_LABEL if DEFAULT_LABEL in info.labels else info.labels[0]
    return {o: info.label_for_prompt((prompts or {}).get(o) or "", default=fallback) for o in obj_ids}


def task_data(info: LabelConfigInfo, video_url: str, fps: float, prompts: Sequence[str] = ()) -> dict[str, Any]:
    """The task's data under the config's keys: the video, its frame rate and the prompt text."""
    data: dict[str, Any] = {info.video_key: video_url}
    if info.fps_key is not None:
        data[info.fps_key] = fps
    if info.prompt_key is not None:
        # Label Studio refuses a task without a key its <Text> reads; one prompt per line
        data[info.prompt_key] = "\n".join(prompts)
    return data


def import_task(tracks: TrackSet, info: LabelConfigInfo, video_url: str, labels: Mapping[int, str],
                model_version: str, prompts: Mapping[int, str] | None = None,
                tolerance: float = 0.5) -> dict[str, Any]:
    """One importable task: the data, and a prediction with one labelled track per object."""
    fps = float(tracks.fps or 0) or 1.0
    data = task_data(info, video_url, fps, [prompts[o] for o in tracks.obj_ids() if prompts and o in prompts])
    shown_fps = info.fps(data)  # what Label Studio will use: times follow it, not the file
    frames_count = int(tracks.num_frames or 0)
    results = []
    scores = []
    for track in tracks:
        result = track_to_videorectangle(track, shown_fps, frames_count, labels=[labels[track.obj_id]],
                                         tolerance=tolerance, from_name=info.box_name,
                                         to_name=info.video_name)
        result["score"] = _track_score(track)
        scores.append(result["score"])
        results.append(result)
    score = float(np.mean(scores)) if scores else 0.0
    return {"data": data, "predictions": [prediction(results, model_version, score)]}


def _track_score(track: Track) -> float:
    """The object's confidence: the mean of its frames' presence scores as 0..1 (1 without any)."""
    logits = [s for s in (track.score(f) for f in track.frames()) if s is not None]
    return float(np.mean([confidence(s) for s in logits])) if logits else 1.0


__all__ = ["DEFAULT_LABEL", "import_task", "object_labels", "task_data"]
