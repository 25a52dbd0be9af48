"""From a Label Studio request to what a plugin takes: project id, video, fps, object prompts."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from vrshq.backend.labelstudio.label_rules import ClipRule, choose_labels, fallback_label
from vrshq.backend.labelstudio.labelconfig import LabelConfigInfo, TaskDataError
from vrshq.plugins.base import ObjectPrompt
from vrshq.errors import VrshqError


class RequestError(VrshqError):
    """A request that does not hold what the route needs (HTTP 400, message names the field)."""


_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def project_id(value: Any) -> str:
    """Label Studio's project reference as a plain id: ``"12.1699999"``, ``12`` or ``{"id": 12}`` -> "12"."""
    if isinstance(value, Mapping):
        value = value.get("id")
    if isinstance(value, bool) or value is None:
        raise RequestError("the request has no project id")
    if isinstance(value, float) and not math.isfinite(value):
        raise RequestError(f"project id {value!r} is not a plain id")
    text = str(value).split(".", 1)[0].strip()
    if not _ID.match(text):
        raise RequestError(f"project id {value!r} is not a plain id")
    return text


MAX_ID = 2**63 - 1  # Label Studio's ids are database integers


def is_id(value: Any) -> bool:
    """Whether ``value`` can be a Label Studio task id: an int in 0..2**63-1 (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID


def task_id(task: Mapping[str, Any]) -> int:
    """The task's integer id."""
    value = task.get("id") if isinstance(task, Mapping) else None
    if not is_id(value):
        raise RequestError(f"a task needs an integer 'id' (0..2**63-1), got {_short(value)}")
    return value


@contextmanager
def malformed_input(what: str) -> Iterator[None]:
    """Turn a parser's TypeError/KeyError/... on request data into a RequestError naming ``what``.

    For code that reads nested request data (annotation results, regions): a wrong type deep in
    it is the caller's mistake (400), not a server fault (500).
    """
    try:
        yield
    except VrshqError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError) as exc:
        raise RequestError(f"{what} is malformed: {_short(str(exc) or type(exc).__name__, 200)}") from None


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def task_data(task: Mapping[str, Any]) -> dict[str, Any]:
    """The task's ``data`` object."""
    data = task.get("data") if isinstance(task, Mapping) else None
    if not isinstance(data, Mapping):
        raise RequestError(f"task {task.get('id') if isinstance(task, Mapping) else '?'}: "
                           "'data' must be an object")
    return dict(data)


@dataclass
class TaskInputs:
    """One task as the backend predicts it."""

    project: str
    task: int
    data: dict[str, Any]
    video_url: str
    fps: float
    prompts: list[ObjectPrompt]


def text_prompts(texts: list[str], info: LabelConfigInfo, first_id: int = 1,
                 clip: ClipRule | None = None) -> list[ObjectPrompt]:
    """One text prompt per object, ids from ``first_id``, labelled by :mod:`vrshq.backend.labelstudio.label_rules`."""
    return [ObjectPrompt(obj_id=first_id + i, text=c.text, label=c.label, label_rule=c.rule)
            for i, c in enumerate(choose_labels(texts, info, clip))]


def read_task(task: Mapping[str, Any], info: LabelConfigInfo, project: str,
              max_objects: int, limits: Any = None, clip: ClipRule | None = None) -> TaskInputs:
    """The task's video, fps and text prompts; TaskDataError/RequestError name what is wrong.

    ``limits`` (a BackendConfig) bounds the prompts' characters, checked here before any
    model work (their tokens: :func:`check_prompt_budget`, which needs the plugin). ``clip``
    is the CLIP label rule, when the backend has one.
    """
    tid = task_id(task)
    data = task_data(task)
    if limits is not None and info.prompt_key is not None:
        raw = data.get(info.prompt_key)
        size = len(raw) if isinstance(raw, str) else None
        if size is not None and size > limits.max_task_prompt_chars + max_objects:
            raise RequestError(f"task {tid}: the prompt text is {size} characters, more than the "
                               f"{limits.max_task_prompt_chars} a task's prompts may have together "
                               "(VRSHQ_MAX_TASK_PROMPT_CHARS)")
    try:
        video = info.video(data)
        fps = info.fps(data)
        texts = info.prompts(data)
    except TaskDataError as exc:
        raise TaskDataError(f"task {tid}: {exc}") from None
    if len(texts) > max_objects:
        raise RequestError(f"task {tid}: {len(texts)} prompts, more than the {max_objects} objects "
                           "a task may have (VRSHQ_MAX_OBJECTS)")
    if limits is not None:
        check_prompt_chars(texts, limits, f"task {tid}")
    return TaskInputs(project, tid, data, video, fps, text_prompts(texts, info, clip=clip))


def labels_as_concepts(inputs: TaskInputs, info: LabelConfigInfo, plugin: Any,
                       clip: ClipRule | None = None) -> TaskInputs:
    """A task without a prompt, for a concept plugin (``labels_as_prompts``): the project's
    labels become its prompts, labelled by the same label rules as typed prompts."""
    if inputs.prompts or not getattr(plugin, "labels_as_prompts", False) or not info.labels:
        return inputs
    # the fallback label is for prompts no other label fits: no concept of its own
    fallback = fallback_label(info)
    concepts = [lb for lb in info.labels if lb != fallback] or list(info.labels)
    return replace(inputs, prompts=text_prompts(concepts, info, clip=clip))


def check_prompt_chars(texts: list[str], limits: Any, where: str) -> None:
    """RequestError when a prompt, or all of them together, has more characters than allowed."""
    for i, text in enumerate(texts):
        if len(text) > limits.max_prompt_chars:
            raise RequestError(f"{where}: prompt {i + 1} is {len(text)} characters, more than the "
                               f"{limits.max_prompt_chars} one object's prompt may have "
                               "(VRSHQ_MAX_PROMPT_CHARS)")
    total = sum(len(t) for t in texts)
    if total > limits.max_task_prompt_chars:
        raise RequestError(f"{where}: the prompts are {total} characters together, more than the "
                           f"{limits.max_task_prompt_chars} a task's prompts may have "
                           "(VRSHQ_MAX_TASK_PROMPT_CHARS)")


def check_prompt_tokens(plugin: Any, texts: list[str], limits: Any, where: str) -> None:
    """RequestError when a prompt, or all together, has more tokens than allowed (the plugin's
    tokenizer counts them; a plugin that cannot count is bounded by characters only).

    Each prompt is tokenised once, after the character bound: the work is linear in the
    accepted characters. The per-object bound is also the model's own room, when the plugin
    knows it (its context minus the fixed conversation and image tokens).
    """
    count = getattr(plugin, "prompt_tokens", None)
    if count is None or not texts:
        return
    per_object = limits.max_prompt_tokens
    room = getattr(plugin, "prompt_token_room", lambda: None)()
    if isinstance(room, int) and 0 < room < per_object:
        per_object = room
    total = 0
    for i, text in enumerate(texts):
        n = count(text)
        if n is None:
            return
        if n > per_object:
            raise RequestError(f"{where}: prompt {i + 1} is {n} tokens, more than the {per_object} "
                               "one object's prompt may have (VRSHQ_MAX_PROMPT_TOKENS, or the "
                               "model's room)")
        total += n
    if total > limits.max_task_prompt_tokens:
        raise RequestError(f"{where}: the prompts are {total} tokens together, more than the "
                           f"{limits.max_task_prompt_tokens} a task's prompts may have "
                           "(VRSHQ_MAX_TASK_PROMPT_TOKENS)")


def check_prompt_budget(backend: Any, inputs: TaskInputs) -> None:
    """The token bounds of a task's text prompts, before any model work."""
    texts = [p.text for p in inputs.prompts if p.text]
    check_prompt_tokens(backend.plugin, texts, backend.config, f"task {inputs.task}")


__all__ = ["MAX_ID", "RequestError", "TaskInputs", "check_prompt_budget", "check_prompt_chars",
           "check_prompt_tokens", "is_id", "malformed_input", "project_id", "read_task", "task_data",
           "task_id", "text_prompts"]
