"""A STAND-IN for Label Studio's REST API: the few endpoints the backend calls, in this process.

Only for machines that have no Label Studio (a lent GPU machine can install nothing, and Label
Studio needs its own environment): ``bench.roundtrip_bench`` points the backend's real client
(label-studio-sdk over HTTP on 127.0.0.1) at it. It is not Label Studio: it stores predictions
and task data in memory, checks the ``Token`` header and answers 404 to anything else, and every
call is recorded so a run shows what the backend asked for. The same round trip against a real
Label Studio 1.23.2 is ``tests/test_labelstudio_e2e.py``.

Endpoints (as label-studio-sdk 2.1.2 calls them):

* ``GET /api/predictions/?task=N``: the task's predictions, oldest first;
* ``POST /api/predictions/``: store ``{task, result, score, model_version}``, 201 with its id;
* ``GET /api/predictions/<id>/``;
* ``GET /api/tasks/<id>/`` and ``PATCH /api/tasks/<id>/`` (``{"data": ...}`` replaces the data).
"""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import datetime, timezone
from typing import Any

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

NOTE = ("in-process Label Studio stand-in (bench/ls_standin.py), used because this machine has no "
        "Label Studio; the real round trip is tests/test_labelstudio_e2e.py")

_TASK = re.compile(r"^/api/tasks/(\d+)/?$")
_PREDICTION = re.compile(r"^/api/predictions/(\d+)/?$")
_ID = re.compile(r"/\d+")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


class LabelStudioStandIn:
    """Predictions and task data in memory behind Label Studio's URLs, served on 127.0.0.1."""

    def __init__(self, token: str, tasks: dict[int, dict[str, Any]], project: int = 1) -> None:
        self.token = token
        self.project = project
        self.tasks = {int(t): {"id": int(t), "project": project, "data": dict(d)}
                      for t, d in tasks.items()}
        self.predictions: list[dict[str, Any]] = []
        self.calls: list[dict[str, Any]] = []  # method, path, status, time (monotonic)
        self._lock = threading.Lock()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ serving
    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the stand-in is not started")
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> LabelStudioStandIn:
        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="ls-standin")
        self._thread.start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> LabelStudioStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reading it back
    def task_predictions(self, task: int) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(p) for p in self.predictions if p["task"] == int(task)]

    def call_counts(self) -> dict[str, int]:
        """``"METHOD path-pattern" -> count``, ids replaced by ``<id>``."""
        counts: dict[str, int] = {}
        with self._lock:
            for c in self.calls:
                path = _ID.sub("/<id>", c["path"])
                key = f"{c['method']} {path} {c['status']}"
                counts[key] = counts.get(key, 0) + 1
        return counts

    # ------------------------------------------------------------------ the API
    def _wsgi(self, environ, start_response):
        request = Request(environ)
        status, body = self._handle(request)
        with self._lock:
            self.calls.append({"method": request.method, "path": request.path, "status": status,
                               "time": time.monotonic()})
        response = Response(json.dumps(body), status=status, content_type="application/json")
        return response(environ, start_response)

    def _handle(self, request: Request) -> tuple[int, Any]:
        if request.headers.get("Authorization") != f"Token {self.token}":
            return 401, {"detail": "Authentication credentials were not provided."}
        path, method = request.path, request.method
        try:
            payload = request.get_json(silent=True) if method in ("POST", "PATCH") else None
        except Exception:  # noqa: BLE001 - a body that is not JSON
            payload = None
        with self._lock:
            if path.rstrip("/") == "/api/predictions":
                if method == "GET":
                    task = request.args.get("task")
                    return 200, [p for p in self.predictions
                                 if task is None or str(p["task"]) == str(task)]
                if method == "POST":
                    return self._create_prediction(payload)
            match = _PREDICTION.match(path)
            if match and method == "GET":
                found = [p for p in self.predictions if p["id"] == int(match.group(1))]
                return (200, found[0]) if found else (404, {"detail": "Not found."})
            match = _TASK.match(path)
            if match and method in ("GET", "PATCH"):
                task = self.tasks.get(int(match.group(1)))
                if task is None:
                    return 404, {"detail": "Not found."}
                if method == "PATCH":
                    if not isinstance(payload, dict):
                        return 400, {"detail": "expected a JSON object"}
                    if "data" in payload:
                        task["data"] = dict(payload["data"])
                    task["updated_at"] = _now()
                return 200, task
        return 404, {"detail": f"{method} {path} is not in the Label Studio stand-in"}

    def _create_prediction(self, payload: Any) -> tuple[int, Any]:
        if not isinstance(payload, dict) or not isinstance(payload.get("result"), list):
            return 400, {"result": ["This field is required."]}
        task = payload.get("task")
        if not isinstance(task, int) or task not in self.tasks:
            return 400, {"task": [f'Invalid pk "{task}" - object does not exist.']}
        pred = {"id": len(self.predictions) + 1, "task": task, "project": self.project,
                "result": payload["result"], "score": payload.get("score"),
                "model_version": payload.get("model_version"), "created_at": _now(),
                "updated_at": _now()}
        self.predictions.append(pred)
        return 201, pred


__all__ = ["NOTE", "LabelStudioStandIn"]
