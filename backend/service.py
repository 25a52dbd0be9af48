"""The backend's work behind the HTTP routes: one model per process, per-task state, jobs.

:class:`Backend` is built once per process (the plugin's models load here, never per request).
Requests share the model but no state: every prediction opens its own video reader and
tracking session; work on one task is serialised by a per-task lock and model calls by one
model lock (one accelerator, one forward pass at a time).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from backend.answers import shorten
from backend.config import BackendConfig
from backend.corrections import CorrectionsLog
from backend.jobs import JobRunner, Report
from backend.keyframes import keyframe_url
from backend.label_rules import record_label_rules
from backend.labelconfig import KEYFRAME_FRAMES_KEY, LabelConfigInfo, parse_label_config
from backend.lsclient import LabelStudioWriter
from backend.media import MediaConfig, resolve_media
from backend.metrics import Metrics
from backend.projects import ProjectInfo, ProjectRegistry
from backend.results import state_prediction
from backend.state import TaskState, TaskStateStore
from backend.task_inputs import RequestError, TaskInputs, project_id
from backend.versions import BASE, Version, VersionRegistry
from backend.write_ledger import WriteLedger, post_prediction_once
from plugins.base import ModelPlugin, ObjectTrack, PluginConfig
from plugins.registry import load_plugin
from vrshq.errors import VrshqError
from vrshq.masks import decode_rle
from vrshq.video.reader import VideoReader, open_video

log = logging.getLogger(__name__)


def public_host(url: str | None) -> str:
    """A Label Studio URL as it may be logged: scheme, host and port only (no credentials)."""
    from urllib.parse import urlsplit

    if not url:
        return "(none)"
    try:
        parts = urlsplit(str(url))
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(unparsable URL)"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}" if parts.scheme else "(not a URL)"


def _same_origin(a: str | None, b: str | None) -> bool:
    from backend.media import _origin

    if not a or not b:
        return False
    return _origin(a) == _origin(b)


class Backend:
    """The model plugin, the task states, the corrections log and the job runner of one process."""

    def __init__(self, config: BackendConfig, plugin: ModelPlugin | None = None) -> None:
        self.config = config
        data = config.data_path
        data.mkdir(parents=True, exist_ok=True)
        self.versions = VersionRegistry(data)
        self._serving_id: str | None = None
        self._version_checked = 0.0
        self._reload_lock = threading.Lock()
        if plugin is None:
            plugin = self._load(self._serving_version())
        else:
            self._serving_id = BASE  # a given plugin serves the configured model (not reloaded)
        self.plugin = plugin
        self.states = TaskStateStore(data)
        self.projects = ProjectRegistry(data)
        self.corrections = CorrectionsLog.for_model_dir(data)
        self.writes = WriteLedger(data)
        self.writes.prune()
        # Jobs carry JSON payloads (backend.job_functions): on Redis when REDIS_URL is set, for
        # `vrshq worker` processes to run; otherwise on a thread pool in this process.
        redis_frames = None
        if config.redis_url:
            from backend.metrics import RedisFrames
            from backend.queue_rq import RQJobRunner

            self.jobs: Any = RQJobRunner(config.redis_url, config.queue, config.max_queued)
            redis_frames = RedisFrames(self.jobs.redis, f"vrshq:frames:{config.queue}")
        else:
            self.jobs = JobRunner(workers=config.job_workers)
        self.metrics = Metrics(config.metrics_dir, redis_frames)
        self.model_lock = threading.Lock()
        log.info("model loaded: plugin %s, version %s (pid %d)", self.plugin.name,
                 self.plugin.version, os.getpid())

    # ------------------------------------------------------------------ model versions
    def _serving_version(self) -> Version | None:
        try:
            return self.versions.serving()
        except VrshqError as exc:  # a broken registry must not take the backend down
            log.warning("model versions: %s; serving the configured model", exc)
            return None

    def _load(self, version: Version | None) -> ModelPlugin:
        model_dir = str(version.path) if version is not None else self.config.model_dir
        plugin_config = PluginConfig(model_dir=model_dir, device=self.config.device,
                                     precision=self.config.precision)
        plugin = load_plugin(self.config.plugin, plugin_config)
        self._serving_id = version.id if version is not None else BASE
        return plugin

    def serving_model_dir(self) -> str | None:
        """The folder of the model being served (a registered version, or the configured one)."""
        version = self._serving_version() if self._serving_id not in (None, BASE) else None
        return str(version.path) if version is not None else self.config.model_dir

    def refresh_model(self, min_interval: float = 1.0) -> bool:
        """Swap in the version ``versions/serving.json`` names, if it changed; whether it swapped.

        Checked at most every ``min_interval`` seconds; the new model loads while requests keep
        using the old one, then replaces it under the model lock (no restart, no dropped request).
        """
        now = time.monotonic()
        if now - self._version_checked < min_interval or not self._reload_lock.acquire(blocking=False):
            return False
        try:
            self._version_checked = now
            version = self._serving_version()
            wanted = version.id if version is not None else BASE
            if wanted == self._serving_id:
                return False
            try:
                plugin = self._load(version)
            except VrshqError as exc:
                log.error("model version %s cannot be loaded, keeping %s: %s", wanted,
                          self._serving_id, exc)
                self._serving_id = wanted  # do not retry a broken version on every request
                return False
            with self.model_lock:
                self.plugin = plugin
            log.info("now serving model version %s (%s)", wanted, plugin.version)
            return True
        finally:
            self._reload_lock.release()

    def close(self) -> None:
        """Finish running jobs and close the log."""
        self.jobs.shutdown(wait=True)
        self.corrections.close()

    # ------------------------------------------------------------------ info
    @property
    def model_version(self) -> str:
        """The plugin's model version."""
        return self.plugin.version

    def health(self) -> dict[str, Any]:
        """What ``/health`` answers."""
        return {"status": "UP", "model_class": type(self.plugin).__name__,
                "model_version": self.model_version, "plugin": self.plugin.info()}

    def setup(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Check and remember a project's label config, URL and token; the model version."""
        pid = project_id(payload.get("project"))
        schema = payload.get("schema")
        if schema is not None:
            if not isinstance(schema, str):
                raise RequestError("'schema' must be the label config text")
            parse_label_config(schema)
        token = payload.get("access_token")
        hostname = payload.get("hostname")
        extra = payload.get("extra_params") or {}
        if not isinstance(extra, Mapping):
            raise RequestError("'extra_params' must be an object")
        old = self.projects.get(pid)
        new_host = hostname if isinstance(hostname, str) and hostname else None
        host = new_host or (old.hostname if old else None)
        if isinstance(token, str) and token:
            kept_token = token
        elif old is not None and old.access_token and (
                new_host is None or _same_origin(new_host, old.hostname)):
            kept_token = old.access_token
        else:
            # A token belongs to the host it came with: re-pointed elsewhere without a token of
            # its own, the project has none (the old one must never reach the new host).
            kept_token = None
            if old is not None and old.access_token:
                log.warning("project %s: Label Studio moved from %s to %s without a token; the "
                            "stored token is dropped", pid, public_host(old.hostname),
                            public_host(new_host))
        self.projects.put(ProjectInfo(
            project=pid, label_config=schema if schema is not None else (old and old.label_config),
            hostname=host, access_token=kept_token, extra_params=dict(extra)))
        log.info("project %s set up: Label Studio at %s (%s)", pid, public_host(host),
                 "with a token" if kept_token else "no token")
        return {"model_version": self.model_version, "plugin": self.plugin.info()}

    # ------------------------------------------------------------------ helpers
    def label_config_text(self, project: str, given: Any) -> str:
        """The request's label config text, else the one from the project's /setup."""
        if isinstance(given, str) and given.strip():
            return given
        info = self.projects.get(project)
        if info is None or not info.label_config:
            raise RequestError(f"the request has no label_config and project {project} was never "
                               "set up (/setup)")
        return info.label_config

    def label_config(self, project: str, given: Any) -> LabelConfigInfo:
        """The request's label config, else the one from the project's /setup, parsed."""
        return parse_label_config(self.label_config_text(project, given))

    def submit(self, kind: str, key: str, payload: dict[str, Any], **info: Any) -> Any:
        """Queue a job (backend.job_functions) with a JSON payload; (job, created)."""
        from backend.job_functions import execute

        if isinstance(self.jobs, JobRunner):
            return self.jobs.submit(kind, key, lambda report: execute(self, kind, payload, report), **info)
        return self.jobs.submit(kind, key, payload, **info)

    def job(self, job_id: str) -> Any:
        """A job's record (None when unknown)."""
        return self.jobs.get(job_id)

    def cancel_job(self, job_id: str) -> Any:
        """Cancel a job; its record (None when unknown)."""
        return self.jobs.cancel(job_id)

    def all_jobs(self) -> list:
        """Every job record the backend knows."""
        return list(self.jobs.list())

    def writer(self, project: str) -> LabelStudioWriter:
        """The Label Studio client for a project: the environment's, else /setup's."""
        url, key = self.config.label_studio_url, self.config.api_key
        if not (url and key):
            info = self.projects.get(project)
            if info is not None:
                # /setup's token goes only to /setup's host (a token belongs to its host).
                token = info.access_token if (not url or _same_origin(url, info.hostname)) else None
                url, key = url or info.hostname, key or token
        return LabelStudioWriter(url, key)

    def media_config(self, project: str) -> MediaConfig:
        """Where the project's media may come from."""
        writer = self.writer(project)
        return MediaConfig(label_studio_url=writer.url, api_key=writer._api_key,
                           local_roots=tuple(self.config.local_roots),
                           cache_dir=str(self.config.data_path / "media"))

    def open_video(self, project: str, task: int, url: str, fps: float) -> VideoReader:
        """The task's video, resolved (local root or download) and opened at Label Studio's fps.

        A video over the configured limits (VRSHQ_MAX_PIXELS, VRSHQ_MAX_FRAMES) is a VideoError.
        """
        from urllib.parse import urlsplit

        from backend.media import MediaError
        from vrshq.errors import VideoError

        # A host part with userinfo or a backslash parses differently in urllib and in requests
        # ("http://evil\\@ls:8080/" is LS to one, evil to the other): never fetch such a URL.
        netloc = urlsplit(url).netloc if isinstance(url, str) else ""
        if "@" in netloc or "\\" in netloc:
            raise MediaError(url, "a media URL may not carry a user name or a backslash in its host")
        from vrshq.video.container import declared_size

        path = resolve_media(url, self.media_config(project), task_id=task)
        limits = self.config
        # The stream's declared size first: decoding even one oversized frame costs gigabytes.
        size = declared_size(str(path))
        if size is not None and size[0] * size[1] > limits.max_pixels:
            raise VideoError(shorten(url), f"the video is {size[0]}x{size[1]}, more than the "
                                  f"{limits.max_pixels} pixels a frame may have (VRSHQ_MAX_PIXELS)")
        try:
            video = open_video(Path(path), fps=fps)
        except VideoError as exc:
            # Name the task's media, not the file it became on this server.
            raise VideoError(shorten(url), exc.reason) from None
        too_big = None
        if video.width * video.height > limits.max_pixels:
            too_big = (f"the video is {video.width}x{video.height}, more than the "
                       f"{limits.max_pixels} pixels a frame may have (VRSHQ_MAX_PIXELS)")
        elif len(video) > limits.max_frames:
            too_big = (f"the video has {len(video)} frames, more than the {limits.max_frames} "
                       "a task may have (VRSHQ_MAX_FRAMES)")
        if too_big is not None:
            video.close()
            raise VideoError(shorten(url), too_big)
        return video

    # ------------------------------------------------------------------ predict
    def predict_task(self, inputs: TaskInputs, video: VideoReader, info: LabelConfigInfo,
                     report: Report | None = None) -> dict[str, Any]:
        """Predict every prompt of a task now; saves the state, writes keyframes; the prediction."""
        with self.states.lock(inputs.project, inputs.task):
            with self.model_lock:
                objects = self.plugin.predict(video, inputs.prompts, progress=report)
            record_label_rules(objects, inputs.prompts)
            state = TaskState(project=inputs.project, task=str(inputs.task), plugin=self.plugin.name,
                              model_version=self.model_version, video=inputs.video_url,
                              fps=inputs.fps, frames_count=len(video))
            previous = self._previous_state(inputs.project, inputs.task)
            if previous is not None and (previous.video, previous.frames_count) == \
                    (state.video, state.frames_count):
                state.objects, state.earlier_tracks = previous.objects, previous.earlier_tracks
            state.replace_objects(list(objects))
            self.write_keyframes(state, video, info, inputs.data)
            self.states.save(state)
            self.metrics.frames(len(video) * max(1, len(objects)))
            return state_prediction(state, info)

    def saved_prediction(self, inputs: TaskInputs, frames_count: int,
                         info: LabelConfigInfo) -> dict[str, Any] | None:
        """The task's saved prediction if it answers this request, else None.

        It does when the same model predicted the same video (URL, frames, fps) for the same
        prompts (ids, text, labels), and completely (not a cancelled job's partial tracks);
        objects added interactively and corrections re-propagated since come with it.
        """
        state = self._previous_state(inputs.project, inputs.task)
        if state is None or (state.plugin, state.model_version) != (self.plugin.name, self.model_version):
            return None
        if (state.video, state.frames_count) != (inputs.video_url, frames_count) \
                or abs(state.fps - inputs.fps) > 1e-9:
            return None
        have = {o.obj_id: (o.details.get("prompt"), o.label) for o in state.objects}
        if any(have.get(p.obj_id) != (p.text, p.label) for p in inputs.prompts):
            return None
        if any(len(o.track.frames()) < state.frames_count for o in state.objects):
            return None
        return state_prediction(state, info)

    def _previous_state(self, project: str, task: int) -> TaskState | None:
        try:
            return self.states.load(project, task)
        except (ValueError, KeyError, TypeError, VrshqError) as exc:  # replaced by the new state
            log.warning("task %s: its previous state is unreadable (%s); starting afresh", task, exc)
            return None

    def submit_prediction_job(self, inputs: TaskInputs, label_config: str) -> dict[str, Any]:
        """Run a task's prediction as a job that writes the prediction back to Label Studio."""
        from backend.job_functions import predict_payload

        self.require_writer(inputs.project, inputs.task)
        prompts = json.dumps([(p.obj_id, p.text, p.label) for p in inputs.prompts])
        key = "predict:" + hashlib.sha256(
            f"{inputs.project}|{inputs.task}|{self.model_version}|{inputs.video_url}|{prompts}"
            .encode()).hexdigest()[:24]
        job, _ = self.submit("predict", key, predict_payload(inputs, label_config),
                             project=inputs.project, task=inputs.task)
        return {"id": job.id, "task": inputs.task, "state": job.state}

    # ------------------------------------------------------------------ keyframes
    def write_keyframes(self, state: TaskState, video: VideoReader, info: LabelConfigInfo,
                        data: Mapping[str, Any]) -> None:
        """Write each object's keyframe image and put the list into the task's data in LS."""
        if not info.has_masks or info.keyframes_key is None:
            return
        urls = [keyframe_url(state.video, state.project, state.task, o.obj_id, o.keyframe,
                             video.frame(o.keyframe), tuple(self.config.local_roots),
                             self.config.keyframe_quality) for o in state.objects]
        state.keyframe_urls = urls
        self.update_task_keyframes(state, info, data)

    def update_task_keyframes(self, state: TaskState, info: LabelConfigInfo,
                              data: Mapping[str, Any]) -> None:
        """Set the task data's keyframe list (and frames) in Label Studio when it differs."""
        new = dict(data)
        new[info.keyframes_key] = list(state.keyframe_urls)
        new[KEYFRAME_FRAMES_KEY] = [o.keyframe + 1 for o in state.objects]
        if new == dict(data):
            return
        writer = self.writer(state.project)
        if not writer.configured:
            log.warning("task %s: cannot show keyframe masks: no Label Studio URL/key to write "
                        "the keyframe images into the task data", state.task)
            return
        try:
            writer.update_task_data(int(state.task), new)
        except VrshqError as exc:
            log.warning("task %s: keyframe images not written to the task: %s", state.task, exc)

    # ------------------------------------------------------------------ corrections
    def correct_task(self, project: str, task: int, corrections: list,
                     report: Report | None = None, latest_only: bool = False) -> TaskState | None:
        """Re-propagate corrections (plugin Correction list) on the task's state and save it.

        With ``latest_only`` (queued jobs), a correction that is no longer its object's newest
        in the corrections log is skipped: jobs may run out of order (two workers, a re-run
        after a killed worker), and an older mask must not overwrite a newer one. None when
        nothing was left to apply.
        """
        with self.states.lock(project, task):
            state = self.states.load(project, task)
            if state is None:
                raise RequestError(f"task {task} has no prediction from this backend to correct")
            if latest_only:
                corrections = [c for c in corrections if self._is_latest(project, task, c)]
                if not corrections:
                    return None
            video = self.open_video(project, task, state.video, state.fps)
            try:
                with self.model_lock:
                    objects: list[ObjectTrack] = self.plugin.correct(
                        video, state.objects, corrections, progress=report)
            finally:
                video.close()
            state.replace_objects(list(objects))
            state.model_version = self.model_version
            self.states.save(state)
            self.metrics.frames(state.frames_count * len({c.obj_id for c in corrections}))
            return state

    def _is_latest(self, project: str, task: int, c: Any) -> bool:
        newest = self.corrections.latest(project, task, c.obj_id, int(c.frame), with_mask=True)
        if newest is None:
            return True  # never logged: nothing newer to protect
        return bool(np.array_equal(decode_rle(newest.corrected_mask), np.asarray(c.mask, dtype=bool)))

    def write_back(self, state: TaskState, info: LabelConfigInfo, key: str | None = None) -> dict[str, Any]:
        """Post the state's full prediction to Label Studio; the job result."""
        pid = self.post_prediction(state.project, int(state.task), state_prediction(state, info), key)
        return {"prediction": pid, "task": int(state.task)}

    def post_prediction(self, project: str, task: int, pred: Mapping[str, Any],
                        key: str | None = None) -> int:
        """Post a prediction to Label Studio; with a job's ``key``, at most once per job."""
        writer = self.writer(project)
        args = (int(task), pred["result"], pred["score"], pred["model_version"])
        if key is None:
            return writer.create_prediction(*args)
        return post_prediction_once(writer, self.writes, key, *args)

    def require_writer(self, project: str, task: int) -> LabelStudioWriter:
        """The project's Label Studio client; RequestError when a job could not write back."""
        writer = self.writer(project)
        if not writer.configured:
            raise RequestError(f"task {task}: the video is longer than the "
                               f"{self.config.sync_frame_budget}-frame budget of a request, and "
                               "the backend cannot write the result back: set LABEL_STUDIO_URL "
                               "and LABEL_STUDIO_API_KEY (or connect it from Label Studio)")
        return writer


__all__ = ["Backend"]
