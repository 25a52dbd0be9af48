"""The work a job does, from a JSON payload: the same code for the in-process runner and a queue.

A job is ``(kind, payload)``: plain JSON (ids, URLs, label config text, COCO RLE masks), so it can
be stored in a queue and run by another process that has its own :class:`Backend`. Kinds:

* ``predict``: a task's text prompts -> prediction -> ``POST /api/predictions``;
* ``correct``: corrected keyframe masks -> re-propagation -> a new prediction;
* ``add``: typed prompts or drawn tracks (interactive, long video) -> new objects -> a prediction;
* ``overlay``: a corrected state's overlay video and strips, after the correction's answer
  (:mod:`vrshq.backend.jobs.overlay_job`);
* ``train``: the logged corrections -> fine-tuning -> a registered (and maybe served) version.
"""

from __future__ import annotations

from typing import Any

from vrshq.backend.jobs.add_objects import add_job
from vrshq.backend.jobs.overlay_job import overlay_job, queue_overlay
from vrshq.backend.jobs.payloads import payload_prompt
from vrshq.backend.jobs.runner import Report
from vrshq.backend.labelstudio.labelconfig import parse_label_config
from vrshq.backend.tasks.inputs import TaskInputs
from vrshq.backend.tasks.state import correction_from_json
from vrshq.errors import VrshqError

KINDS = ("predict", "correct", "add", "overlay", "train")


def execute(backend: Any, kind: str, payload: dict[str, Any], report: Report | None = None,
            key: str | None = None) -> dict[str, Any]:
    """Run one job on ``backend``; its JSON result.

    ``key`` names the job across attempts (the queue's job id): its prediction is posted once.
    A task's job holds the task's lock from its work to its write-back, so the newest
    prediction in Label Studio is always the task's newest state.
    """
    if kind == "train":
        # Imported when a training job runs: the trainer's imports (peft, the fine-tuning loop)
        # are heavy, and most processes never train.
        from vrshq.backend.jobs.training import train_from_corrections

        return train_from_corrections(backend, str(payload["project"]), report)
    if kind not in KINDS:
        raise VrshqError(f"unknown job kind {kind!r} (known: {', '.join(KINDS)})")
    with backend.states.lock(str(payload["project"]), int(payload["task"])):
        return _task_job(backend, kind, payload, report, key)


def _task_job(backend: Any, kind: str, payload: dict[str, Any], report: Report | None,
              key: str | None) -> dict[str, Any]:
    if kind == "predict":
        info = parse_label_config(payload["label_config"])
        inputs = TaskInputs(str(payload["project"]), int(payload["task"]), dict(payload["data"]),
                            str(payload["video_url"]), float(payload["fps"]),
                            [payload_prompt(*p) for p in payload["prompts"]])
        video = backend.open_video(inputs.project, inputs.task, inputs.video_url, inputs.fps)
        try:
            pred = backend.predict_task(inputs, video, info, report=report)
        finally:
            video.close()
        pid = backend.post_prediction(inputs.project, inputs.task, pred, key)
        return {"prediction": pid, "task": inputs.task}
    if kind == "correct":
        info = parse_label_config(payload["label_config"])
        corrections = [correction_from_json(c) for c in payload["corrections"]]
        state = backend.correct_task(str(payload["project"]), int(payload["task"]), corrections, report,
                                     latest_only=True, info=info)
        if state is None:
            return {"task": int(payload["task"]), "prediction": None,
                    "skipped": "a newer correction of the same objects was logged since; its job writes it"}
        result = backend.write_back(state, info, key)
        # The prediction is posted; the overlay follows as its own job (its editor reads the
        # overlay URL only on its next load anyway).
        queue_overlay(backend, state, payload["label_config"])
        return result
    if kind == "overlay":
        return overlay_job(backend, payload, report)
    return add_job(backend, payload, report, key)


__all__ = ["KINDS", "execute"]
