"""Writing back to Label Studio through its API (label-studio-sdk): predictions and task data."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from vrshq.errors import VrshqError

log = logging.getLogger(__name__)
T = TypeVar("T")


class LabelStudioError(VrshqError):
    """Label Studio could not be reached or refused a write (status and message, never the key)."""


class LabelStudioWriter:
    """The few Label Studio calls the backend makes, with retries; built from URL + API key."""

    def __init__(self, url: str | None, api_key: str | None, timeout: float = 30.0,
                 attempts: int = 4) -> None:
        self.url = url.rstrip("/") if url else None
        self._api_key = api_key
        self._timeout = timeout
        self._attempts = attempts
        self._client: Any = None

    @property
    def configured(self) -> bool:
        """Whether a URL and a key are set (write-back is possible)."""
        return bool(self.url and self._api_key)

    def _sdk(self) -> Any:
        if not self.configured:
            raise LabelStudioError("writing to Label Studio needs LABEL_STUDIO_URL and "
                                   "LABEL_STUDIO_API_KEY")
        if self._client is None:
            from label_studio_sdk import LabelStudio

            self._client = LabelStudio(base_url=self.url, api_key=self._api_key, timeout=self._timeout)
        return self._client

    def _retry(self, what: str, call: Callable[[], T]) -> T:
        delay = 0.5
        for attempt in range(1, self._attempts + 1):
            try:
                return call()
            except LabelStudioError:
                raise
            except Exception as exc:  # noqa: BLE001 - SDK/HTTP errors of every kind
                status = getattr(exc, "status_code", None)
                retryable = status is None or status >= 500 or status == 429
                if not retryable or attempt == self._attempts:
                    body = getattr(exc, "body", None)
                    raise LabelStudioError(f"Label Studio {what} failed"
                                           + (f" (HTTP {status})" if status else "")
                                           + f": {body if body is not None else exc}") from None
                log.warning("Label Studio %s failed (attempt %d), retrying: %s", what, attempt,
                            type(exc).__name__)
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def create_prediction(self, task: int, result: list[dict[str, Any]], score: float,
                          model_version: str) -> int:
        """``POST /api/predictions/`` unless the task already has this very prediction; its id.

        A job re-run after its worker died between writing and finishing finds its own
        prediction here instead of writing it twice.
        """
        for pred in self.predictions(task):
            if pred.model_version == model_version and _same(pred.result, result):
                return int(pred.id)
        return self.post_prediction(task, result, score, model_version)

    def predictions(self, task: int) -> list[Any]:
        """The task's predictions (label-studio-sdk objects: id, result, model_version, ...)."""
        return list(self._retry("list predictions",
                                lambda: self._sdk().predictions.list(task=int(task))) or [])

    def post_prediction(self, task: int, result: list[dict[str, Any]], score: float,
                        model_version: str) -> int:
        """``POST /api/predictions/`` as it is; the new prediction's id."""
        pred = self._retry("create prediction", lambda: self._sdk().predictions.create(
            task=int(task), result=result, score=float(score), model_version=model_version))
        return int(pred.id)

    def annotations(self, task: int) -> list[dict[str, Any]]:
        """The task's annotations as JSON (result, parent_prediction, updated_at, ...)."""
        got = self._retry("list annotations", lambda: self._sdk().annotations.list(id=int(task)))
        return [a.model_dump(mode="json") for a in got or []]

    def prediction_result(self, prediction: int) -> list[dict[str, Any]] | None:
        """A prediction's result, or None when Label Studio no longer has it."""
        try:
            got = self._retry("read prediction", lambda: self._sdk().predictions.get(id=int(prediction)))
        except LabelStudioError as exc:
            if "HTTP 404" in str(exc):
                return None
            raise
        return list(got.result or [])

    def project_label_config(self, project: int) -> str:
        """The project's labeling config."""
        got = self._retry("read project", lambda: self._sdk().projects.get(id=int(project)))
        return str(got.label_config or "")

    def get_task_data(self, task: int) -> dict[str, Any]:
        """The task's data as stored in Label Studio."""
        got = self._retry("read task", lambda: self._sdk().tasks.get(str(int(task))))
        return dict(got.data or {})

    def update_task_data(self, task: int, data: dict[str, Any]) -> None:
        """Replace the task's data (``PATCH /api/tasks/<id>/``)."""
        self._retry("update task", lambda: self._sdk().tasks.update(str(int(task)), data=data))


def _same(stored: Any, result: list[dict[str, Any]]) -> bool:
    """Whether a stored prediction's result is ``result`` (compared as JSON)."""
    import json

    def canon(value: Any) -> str:
        return json.dumps(value, sort_keys=True, default=str)

    return canon(stored) == canon(result)


__all__ = ["LabelStudioError", "LabelStudioWriter"]
