"""The Flask application: Label Studio's ML backend protocol over :class:`vrshq.backend.service.Backend`.

Routes (JSON shapes as Label Studio 1.23 sends and expects them; label-studio-ml 2.x's API)::

    GET  /, /health      {"status": "UP", "model_class", "model_version", "plugin"}
    POST /setup          {"project", "schema", "hostname", "access_token", "extra_params"}
                         -> {"model_version"}
    POST /predict        {"tasks": [...], "project", "label_config", "params": {"context"}}
                         -> {"results": [prediction | [] per task], "jobs"?, "errors"?}
    POST /webhook        {"action", "annotation", "task", "project"} -> 201 {"status", "result"}
    GET  /versions       {"versions": [model_version]}
    GET  /jobs, /jobs/<id>   job progress (state, stage, done, total, progress, result, error)
    POST /jobs/<id>/cancel   stop a job; a running one keeps (and writes back) the frames it finished
    GET  /metrics        Prometheus text
    GET  /media/<project>-<task>/<name>   generated media of remote-video tasks (VRSHQ_MEDIA_URL;
                         read-only, no credentials, Range answered; unknown names 404)

Every error is JSON ``{"status": <code>, "error": "<what is wrong>"}``: bad input is a 4xx that
names the problem, a model that cannot run is 503, anything else a 500 without a traceback.
Basic auth (BASIC_AUTH_USER/PASS) guards every route but /health and /media/, compared in constant time.

Each route takes a body up to its own size (``BackendConfig.body_limit``), checked on the
declared Content-Length before any byte is read; a JSON body may hold at most
``max_json_containers`` objects and arrays (counted before it is parsed: parsing costs tens of
bytes of memory per byte for tiny objects). Error texts are cut to ``max_error_chars`` and never
show the absolute paths of the backend's folders. ``/health`` and ``/metrics`` touch neither the
model nor its lock: they answer while every model slot is busy.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from vrshq.backend.answers import cap, redact
from vrshq.backend.http.auth import authorized, is_open, size_text
from vrshq.backend.config import BackendConfig
from vrshq.backend.labelstudio.writer import LabelStudioError
from vrshq.backend.labelstudio.media import MediaError
from vrshq.backend.http.media import media_response
from vrshq.backend.http.predict import handle_predict
from vrshq.backend.jobs.redis_queue import BusyError
from vrshq.backend.service import Backend
from vrshq.backend.tasks.inputs import RequestError
from vrshq.backend.http.webhook import handle_webhook
from vrshq.errors import ModelError, VideoError, VrshqError

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 512 * 1024 * 1024  # no route takes more; each has its own, smaller limit
LIGHT_ROUTES = ("/", "/health", "/metrics")  # never load, swap or wait for the model


def _status_of(exc: VrshqError) -> int:
    if isinstance(exc, BodyTooLarge):
        return 413
    if isinstance(exc, (MediaError, VideoError)):
        return 422  # the request is well-formed, the task's media is not usable
    if isinstance(exc, LabelStudioError):
        return 502
    if isinstance(exc, (ModelError, BusyError)):
        return 503
    return 400  # RequestError, TaskDataError, LabelConfigError, PromptError, MaskFormatError, ...


def _error(status: int, message: str) -> Response:
    config = _current_config()
    if config is not None:
        message = cap(redact(message, _private_roots(config)), config.max_error_chars)
    response = jsonify({"status": status, "error": message})
    response.status_code = status
    return response


class BodyTooLarge(RequestError):
    """A body with more JSON objects and arrays than a request may hold (413)."""


def _json_body(max_containers: int | None = None) -> dict[str, Any]:
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise RequestError("the request has no JSON body")
    # Counted on the raw bytes (a brace inside a string counts too: a bound, not a parse), so a
    # body of a million empty objects is refused before json.loads builds them.
    if max_containers is not None and raw.count(b"{") + raw.count(b"[") > max_containers:
        raise BodyTooLarge(f"the JSON body holds more than {max_containers} objects and arrays "
                           "(VRSHQ_MAX_JSON_CONTAINERS)")
    try:
        data = json.loads(raw)  # bytes: UTF-8/16/32 detected as RFC 8259 says
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError; too deep a nesting
        raise RequestError("the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise RequestError(f"the JSON body must be an object, got {type(data).__name__}")
    return data


def create_app(config: BackendConfig | None = None, backend: Backend | None = None) -> Flask:
    """The WSGI app; builds the Backend (loads the model) unless one is given."""
    config = config or (backend.config if backend is not None else BackendConfig.from_env())
    backend = backend or Backend(config)
    app = Flask("vrshq-backend")
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    app.json.sort_keys = False
    app.extensions["vrshq"] = backend

    @app.before_request
    def _start() -> Response | None:
        g.started = time.perf_counter()
        g.vrshq_config = config
        if request.path not in LIGHT_ROUTES and not request.path.startswith("/media/"):
            backend.refresh_model()  # a newly served model version, without a restart
        if config.auth_enabled and not is_open(request.path) and not authorized(config):
            response = _error(401, "authentication required (HTTP basic auth)")
            response.headers["WWW-Authenticate"] = 'Basic realm="vrshq"'
            return response
        # The route's own body limit, on the declared length before a byte is read, and on the
        # bytes read when no length is declared (werkzeug stops reading past it).
        limit = min(config.body_limit(request.path), app.config["MAX_CONTENT_LENGTH"] or MAX_REQUEST_BYTES)
        request.max_content_length = limit
        if request.content_length is not None and request.content_length > limit:
            return _error(413, f"the request body is larger than {size_text(limit)} ({request.path} "
                               "takes at most that much)")
        return None

    @app.after_request
    def _count(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        backend.metrics.request(route, response.status_code, time.perf_counter() - g.get("started", time.perf_counter()))
        response.headers["X-Vrshq-Worker"] = str(os.getpid())
        return response

    @app.errorhandler(VrshqError)
    def _vrshq_error(exc: VrshqError) -> Response:
        status = _status_of(exc)
        if status >= 500:
            log.warning("%s %s: %s", request.method, request.path, exc)
        response = _error(status, str(exc))
        if isinstance(exc, BusyError):
            response.headers["Retry-After"] = "30"
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        if exc.code == 413:
            message = f"the request body is larger than {size_text(request.max_content_length)}"
        else:
            message = exc.description or exc.name
        return _error(exc.code or 500, message)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("%s %s failed", request.method, request.path)
        return _error(500, f"internal error ({type(exc).__name__}); see the backend log")

    @app.get("/")
    @app.get("/health")
    def health() -> Response:
        return jsonify(backend.health())

    @app.post("/setup")
    def setup() -> Response:
        return jsonify(backend.setup(_json_body(config.max_json_containers)))

    @app.post("/predict")
    def predict() -> Response:
        return jsonify(handle_predict(backend, _json_body(config.max_json_containers)))

    @app.post("/webhook")
    def webhook() -> Response:
        status, body = handle_webhook(backend, _json_body(config.max_json_containers))
        response = jsonify(body)
        response.status_code = status
        return response

    @app.get("/versions")
    def versions() -> Response:
        return jsonify({"versions": [backend.model_version], "model_version": backend.model_version})

    @app.get("/jobs")
    def jobs() -> Response:
        return jsonify({"jobs": [j.to_json() for j in backend.all_jobs()]})

    @app.get("/jobs/<job_id>")
    def job(job_id: str) -> Response:
        found = backend.job(job_id)
        if found is None:
            return _error(404, f"no job {job_id!r} (jobs are kept in memory by the process that ran them)")
        return jsonify(found.to_json())

    @app.post("/jobs/<job_id>/cancel")
    def cancel_job(job_id: str) -> Response:
        found = backend.cancel_job(job_id)
        if found is None:
            return _error(404, f"no job {job_id!r} (jobs are kept in memory by the process that ran them)")
        if not found.active and not found.cancel_requested:
            return _error(409, f"job {job_id} already ended ({found.state}): nothing to cancel")
        return jsonify(found.to_json()), 202

    @app.get("/media/<folder>/<name>")
    def media(folder: str, name: str) -> Response:
        response = media_response(backend.media, folder, name)
        return response if response is not None else _error(404, "no such media file")

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(backend.metrics.render(backend.jobs.counts()),
                        mimetype="text/plain; version=0.0.4")

    return app


def _current_config() -> BackendConfig | None:
    try:
        return g.get("vrshq_config")
    except RuntimeError:  # outside a request
        return None


def _private_roots(config: BackendConfig) -> list[str]:
    """The folders whose absolute paths an answer never shows."""
    return [*config.local_roots, config.data_dir]


__all__ = ["create_app"]
