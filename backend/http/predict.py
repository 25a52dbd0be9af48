"""``/predict``: Label Studio's tasks -> predictions now, or jobs for long videos.

At most ``max_tasks`` tasks per request. A task that fails (when others succeed) leaves ``[]``
in ``results`` and an entry ``{"index", "task", "error"}`` in ``errors``: by its position in
``tasks``, so two tasks without an id, or with the same id, keep their own errors.

Each task's inputs are read and checked (video, prompts, limits); videos within the request's
frame budget are predicted in the request, longer ones become jobs that write their prediction
back to Label Studio. A task asked again (reopened, *Retrieve Predictions* once more) gets the
backend's saved prediction, with the corrections made since, when it still answers the request.
A request with a ``context`` is interactive (:mod:`vrshq.backend.http.interactive`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vrshq.backend.answers import shorten
from vrshq.backend.tasks.frame_rate import inputs_at_file_rate
from vrshq.backend.http.interactive import interactive_predict
from vrshq.backend.tasks.inputs import (
    RequestError, TaskInputs, check_prompt_budget, is_id, labels_as_concepts, project_id, read_task,
)
from vrshq.backend.labelstudio.label_rules import clip_rule
from vrshq.errors import VrshqError

ERROR_CHARS = 500  # one task's error text in the answer's "errors" list


def handle_predict(backend: Any, payload: Mapping[str, Any]) -> dict[str, Any]:
    """``/predict``: one entry per task (a prediction, or [] when deferred to a job or bad)."""
    tasks = payload.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise RequestError("'tasks' must be a non-empty list of task objects")
    if len(tasks) > backend.config.max_tasks:
        raise RequestError(f"{len(tasks)} tasks in one request, more than the "
                           f"{backend.config.max_tasks} a /predict may hold (VRSHQ_MAX_TASKS)")
    if not all(isinstance(t, Mapping) for t in tasks):
        raise RequestError("'tasks' must be a non-empty list of task objects")
    project = project_id(payload.get("project") or tasks[0].get("project"))
    info = backend.label_config(project, payload.get("label_config"))
    params = payload.get("params") if isinstance(payload.get("params"), Mapping) else {}
    context = params.get("context", payload.get("context"))
    if context is not None and not isinstance(context, Mapping):
        raise RequestError("'context' must be an object")
    if context and context.get("result"):
        if len(tasks) != 1:
            raise RequestError("an interactive request (context) takes exactly one task")
        text = backend.label_config_text(project, payload.get("label_config"))
        return {"results": [interactive_predict(backend, tasks[0], info, project, context, text)]}

    results: list[Any] = []
    errors: list[dict[str, Any]] = []  # one per failed task, by its position in 'tasks'
    jobs: list[dict[str, Any]] = []
    budget = backend.config.sync_frame_budget
    clip = clip_rule(backend)
    for position, task in enumerate(tasks):
        try:
            inputs = read_task(task, info, project, backend.config.max_objects, backend.config,
                               clip=clip)
            inputs = labels_as_concepts(inputs, info, backend.plugin, clip)
            check_prompt_budget(backend, inputs)
            if not inputs.prompts:
                if "text" in backend.plugin.capabilities:
                    raise RequestError(f"task {inputs.task}: no prompt (task data "
                                       f"{info.prompt_key!r} is empty)" if info.prompt_key else
                                       f"task {inputs.task}: the label config has no "
                                       "<Text value=\"$prompt\"> for the prompt")
                results.append([])  # prompt-less plugins wait for a drawn box (context)
                continue
            check_capability(backend, inputs)
            video = backend.open_video(project, inputs.task, inputs.video_url, inputs.fps)
            try:
                inputs = inputs_at_file_rate(backend, inputs, info, video)  # before model work
                frames = len(video)
                saved = backend.saved_prediction(inputs, frames, info)
                if saved is not None:  # asked again: the prediction with its corrections, at once
                    results.append(saved)
                    continue
                if frames <= budget:
                    budget -= frames
                    results.append(backend.predict_task(inputs, video, info))
                    continue
            finally:
                video.close()
            job = backend.submit_prediction_job(
                inputs, backend.label_config_text(project, payload.get("label_config")))
            jobs.append(job)
            results.append([])
        except VrshqError as exc:
            if len(tasks) == 1:
                raise
            tid = task.get("id")
            errors.append({"index": position, "task": tid if is_id(tid) else None,
                           "error": shorten(str(exc), ERROR_CHARS)})
            results.append([])
    if errors and len(errors) == len(tasks):
        # The first two and the last, each cut short: an answer, not a copy of the request.
        picked = errors if len(errors) <= 3 else [*errors[:2], errors[-1]]
        parts = [f"tasks[{e['index']}]: {shorten(e['error'], 150)}" for e in picked]
        if len(errors) > 3:
            parts.insert(2, f"... {len(errors) - 3} more ...")
        raise RequestError(f"none of the {len(tasks)} tasks could be predicted: " + "; ".join(parts))
    out: dict[str, Any] = {"results": results}
    if errors:
        out["errors"] = errors
    if jobs:
        out["jobs"] = jobs
    return out


def check_capability(backend: Any, inputs: TaskInputs) -> None:
    """A RequestError when the plugin cannot take the task's text prompts."""
    if "text" not in backend.plugin.capabilities:
        raise RequestError(f"task {inputs.task}: the {backend.plugin.name} plugin does not take "
                           "text prompts; draw a box on the video instead (video_box_prompt.xml)")


__all__ = ["check_capability", "handle_predict"]
