"""A job's payload: plain JSON (ids, URLs, label config text, COCO RLE masks), so that a queue can
store it and another process (a `vrshq worker` with its own Backend) can run it."""

from __future__ import annotations

from typing import Any

from vrshq.backend.tasks.inputs import TaskInputs
from vrshq.backend.tasks.state import correction_json
from vrshq.plugins.base import Correction, ObjectPrompt


def predict_payload(inputs: TaskInputs, label_config: str) -> dict[str, Any]:
    """The payload of a prediction job."""
    return {"project": inputs.project, "task": inputs.task, "data": inputs.data,
            "video_url": inputs.video_url, "fps": inputs.fps, "label_config": label_config,
            "prompts": [[p.obj_id, p.text, p.label, p.label_rule] for p in inputs.prompts]}


def payload_prompt(obj_id: int, text: str, label: str | None, label_rule: str | None = None) -> ObjectPrompt:
    """A prediction job's prompt (jobs queued before label rules were recorded have none)."""
    return ObjectPrompt(obj_id=int(obj_id), text=text, label=label, label_rule=label_rule)


def correct_payload(project: str, task: int, corrections: list[Correction],
                    label_config: str) -> dict[str, Any]:
    """The payload of a re-propagation job (masks as COCO RLE, boxes and clicks in pixels)."""
    return {"project": project, "task": task, "label_config": label_config,
            "corrections": [correction_json(c) for c in corrections]}


__all__ = ["correct_payload", "payload_prompt", "predict_payload"]
