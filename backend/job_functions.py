"""The work a job does, from a JSON payload: the same code for the in-process runner and a queue.

A job is ``(kind, payload)``: plain JSON (ids, URLs, label config text, COCO RLE masks), so it can
be stored in a queue and run by another process that has its own :class:`Backend`. Kinds:

* ``predict``: a task's text prompts -> prediction -> ``POST /api/predictions``;
* ``correct``: corrected keyframe masks -> re-propagation -> a new prediction;
* ``add``: typed prompts or drawn tracks (interactive, long video) -> new objects -> a prediction;
* ``train``: the logged corrections -> fine-tuning -> a registered (and maybe served) version.
"""

from __future__ import annotations

from typing import Any

from backend.jobs import Report
from backend.labelconfig import parse_label_config
from backend.task_inputs import TaskInputs
from plugins.base import Correction, ObjectPrompt
from vrshq.errors import VrshqError
from vrshq.masks import decode_rle, encode_rle

KINDS = ("predict", "correct", "add", "train")


def predict_payload(inputs: TaskInputs, label_config: str) -> dict[str, Any]:
    """The payload of a prediction job."""
    return {"project": inputs.project, "task": inputs.task, "data": inputs.data,
            "video_url": inputs.video_url, "fps": inputs.fps, "label_config": label_config,
            "prompts": [[p.obj_id, p.text, p.label, p.label_rule] for p in inputs.prompts]}


def _text_prompt(obj_id: int, text: str, label: str | None, label_rule: str | None = None) -> ObjectPrompt:
    """A prediction job's prompt (jobs queued before label rules were recorded have none)."""
    return ObjectPrompt(obj_id=int(obj_id), text=text, label=label, label_rule=label_rule)


def correct_payload(project: str, task: int, corrections: list[Correction],
                    label_config: str) -> dict[str, Any]:
    """The payload of a re-propagation job (masks as COCO RLE)."""
    return {"project": project, "task": task, "label_config": label_config,
            "corrections": [{"obj_id": c.obj_id, "frame": int(c.frame), "mask": encode_rle(c.mask)}
                            for c in corrections]}


def execute(backend: Any, kind: str, payload: dict[str, Any], report: Report | None = None,
            key: str | None = None) -> dict[str, Any]:
    """Run one job on ``backend``; its JSON result.

    ``key`` names the job across attempts (the queue's job id): its prediction is posted once.
    A task's job holds the task's lock from its work to its write-back, so the newest
    prediction in Label Studio is always the task's newest state.
    """
    if kind == "train":
        from backend.training import train_from_corrections

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
                            [_text_prompt(*p) for p in payload["prompts"]])
        video = backend.open_video(inputs.project, inputs.task, inputs.video_url, inputs.fps)
        try:
            pred = backend.predict_task(inputs, video, info, report=report)
        finally:
            video.close()
        pid = backend.post_prediction(inputs.project, inputs.task, pred, key)
        return {"prediction": pid, "task": inputs.task}
    if kind == "correct":
        info = parse_label_config(payload["label_config"])
        corrections = [Correction(int(c["obj_id"]), int(c["frame"]), decode_rle(c["mask"]))
                       for c in payload["corrections"]]
        state = backend.correct_task(str(payload["project"]), int(payload["task"]), corrections, report,
                                     latest_only=True)
        if state is None:
            return {"task": int(payload["task"]), "prediction": None,
                    "skipped": "a newer correction of the same objects was logged since; its job writes it"}
        return backend.write_back(state, info, key)
    from backend.interactive import add_job

    return add_job(backend, payload, report, key)


__all__ = ["KINDS", "correct_payload", "execute", "predict_payload"]
