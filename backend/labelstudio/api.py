"""Label Studio's REST API, the calls ``vrshq studio`` and the tests make (``Token`` auth).

Facts checked on 1.23.2: a project title needs at least 3 characters; a local-files storage
synced with ``use_blob_urls`` imports every file as a task, so it is synced with a filter that
matches nothing (``/data/local-files/`` still serves the files); "Retrieve predictions" answers
success even with no ML backend connected; ``/api/ml/{id}/train`` answers an empty body.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import requests

from vrshq.errors import VrshqError


class LabelStudioAPIError(VrshqError):
    """A Label Studio API call answered with an error (method, path, status, body)."""


class LabelStudioAPI:
    """The REST calls the tests need (``requests`` with ``Authorization: Token <token>``).

    Every call raises :class:`LabelStudioAPIError` with the response body on a non-2xx answer.
    """

    def __init__(self, url: str, token: str, timeout: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.headers.update({"Authorization": f"Token {token}"})

    # --- plumbing -------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        r = self.session.request(method, self.url + path, **kwargs)
        if not 200 <= r.status_code < 300:
            raise LabelStudioAPIError(f"{method} {path} -> {r.status_code}: {r.text[:3000]}")
        return r

    def get(self, path: str, **kwargs: Any) -> Any:
        return _json(self.request("GET", path, **kwargs))

    def post(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        return _json(self.request("POST", path, json=json, **kwargs))

    def patch(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        return _json(self.request("PATCH", path, json=json, **kwargs))

    def delete(self, path: str, **kwargs: Any) -> None:
        self.request("DELETE", path, **kwargs)

    # --- projects, storage, tasks ----------------------------------------------------------

    def create_project(self, title: str, label_config: str, **fields: Any) -> int:
        body = self.post("/api/projects/", {"title": title, "label_config": label_config, **fields})
        return int(body["id"])

    def get_project(self, project: int) -> dict[str, Any]:
        return self.get(f"/api/projects/{project}/")

    def add_local_storage(self, project: int, path: str | os.PathLike[str], title: str = "local files") -> int:
        """A local-files import storage at ``path`` (a strict subdir of the doc root), synced; its id.

        Needed for ``/data/local-files/?d=...`` URLs to be served: Label Studio checks that a
        storage of the task's project has a ``path`` that prefixes the file's directory.
        """
        body = self.post(
            "/api/storages/localfiles/",
            {
                "project": project,
                "path": str(Path(path).resolve()),
                "title": title,
                "use_blob_urls": True,
                # sync must import nothing: the tests import their own tasks
                "regex_filter": r"^$",
            },
        )
        storage_id = int(body["id"])
        self.post(f"/api/storages/localfiles/{storage_id}/sync")
        return storage_id

    def import_tasks(self, project: int, tasks: Sequence[Mapping[str, Any]]) -> list[int]:
        """Import tasks (each ``{"data": ..., "predictions": [...]}``); their ids, in order."""
        body = self.post(
            f"/api/projects/{project}/import",
            list(tasks),
            params={"return_task_ids": "true", "commit_to_project": "true"},
        )
        ids = [int(i) for i in (body.get("task_ids") or [])]
        if len(ids) != len(tasks):
            raise LabelStudioAPIError(f"import into project {project}: sent {len(tasks)} tasks, got ids {ids}: {body}")
        return ids

    def get_task(self, task: int) -> dict[str, Any]:
        return self.get(f"/api/tasks/{task}/")

    def list_tasks(self, project: int) -> list[dict[str, Any]]:
        """Every task of a project, with its data (pages through ``/api/tasks``)."""
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            try:
                body = self.get("/api/tasks/", params={"project": project, "page": page, "page_size": 100, "fields": "all"})
            except LabelStudioAPIError as exc:
                if page > 1 and "404" in str(exc):
                    break  # past the last page
                raise
            tasks = body.get("tasks", []) if isinstance(body, dict) else body
            out.extend(tasks)
            total = body.get("total") if isinstance(body, dict) else None
            if not tasks or total is None or len(out) >= int(total):
                break
            page += 1
        return out

    def update_task_data(self, task: int, data: Mapping[str, Any]) -> dict[str, Any]:
        """Replace a task's data (``PATCH /api/tasks/{id}/``)."""
        return self.patch(f"/api/tasks/{task}/", {"data": dict(data)})

    # --- ML backend --------------------------------------------------------------------------

    def connect_ml_backend(
        self,
        project: int,
        url: str,
        is_interactive: bool = True,
        auth: tuple[str, str] | None = None,
        title: str = "vrshq",
        timeout: float | None = None,
        extra_params: Mapping[str, Any] | None = None,
    ) -> int:
        """Connect a backend (LS calls its ``/health`` and ``/setup`` while validating); its id."""
        body: dict[str, Any] = {"url": url, "project": project, "is_interactive": is_interactive, "title": title}
        if auth is not None:
            body.update({"auth_method": "BASIC_AUTH", "basic_auth_user": auth[0], "basic_auth_pass": auth[1]})
        else:
            body["auth_method"] = "NONE"
        if timeout is not None:
            body["timeout"] = timeout
        if extra_params is not None:
            body["extra_params"] = dict(extra_params)
        return int(self.post("/api/ml/", body)["id"])

    def list_ml_backends(self, project: int) -> list[dict[str, Any]]:
        return self.get("/api/ml/", params={"project": project})

    def list_predictions(self, task: int) -> list[dict[str, Any]]:
        return self.get("/api/predictions/", params={"task": task})

    def retrieve_predictions(self, project: int, task_ids: Iterable[int]) -> Any:
        """The data manager's "Retrieve predictions" action (the project's first ML backend)."""
        return self.post(
            "/api/dm/actions",
            {"selectedItems": {"all": False, "included": [int(t) for t in task_ids]}},
            params={"id": "retrieve_tasks_predictions", "project": project},
        )

    def interactive(self, ml_backend: int, task: int, context: Mapping[str, Any] | None) -> Any:
        """``POST /api/ml/{id}/interactive-annotating``: the JSON body (``{"data": ...}`` or errors)."""
        return self.post(
            f"/api/ml/{ml_backend}/interactive-annotating",
            {"task": int(task), "context": dict(context or {})},
        )

    def train(self, ml_backend: int) -> Any:
        return self.post(f"/api/ml/{ml_backend}/train")

    # --- annotations, webhooks -----------------------------------------------------------------

    def create_annotation(self, task: int, result: Sequence[Mapping[str, Any]], **fields: Any) -> int:
        body = self.post(f"/api/tasks/{task}/annotations/", {"result": list(result), **fields})
        return int(body["id"])

    def get_annotation(self, annotation: int) -> dict[str, Any]:
        return self.get(f"/api/annotations/{annotation}/")

    def update_annotation(self, annotation: int, result: Sequence[Mapping[str, Any]], **fields: Any) -> dict[str, Any]:
        return self.patch(f"/api/annotations/{annotation}/", {"result": list(result), **fields})

    def list_annotations(self, task: int) -> list[dict[str, Any]]:
        return self.get(f"/api/tasks/{task}/annotations/")

    def list_webhooks(self, project: int | None = None) -> list[dict[str, Any]]:
        params = {"project": project} if project is not None else None
        return self.get("/api/webhooks/", params=params)


def _json(r: requests.Response) -> Any:
    if not r.content:
        return None
    try:
        return r.json()
    except ValueError:
        return r.text
