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
from collections.abc import Mapping
from typing import Any

import numpy as np

from vrshq.backend.config import BackendConfig
from vrshq.backend.corrections import CorrectionsLog
from vrshq.backend.jobs.execute import execute
from vrshq.backend.jobs.payloads import predict_payload
from vrshq.backend.jobs.redis_queue import RQJobRunner
from vrshq.backend.jobs.runner import JobRunner, Report
from vrshq.backend.labelstudio.connections import project_media, project_writer, setup_project
from vrshq.backend.labelstudio.label_rules import record_label_rules
from vrshq.backend.labelstudio.labelconfig import LabelConfigInfo, parse_label_config
from vrshq.backend.labelstudio.media import MediaConfig
from vrshq.backend.labelstudio.overlay_writer import overlay_data, shows_overlay
from vrshq.backend.labelstudio.page_images import write_page_images
from vrshq.backend.labelstudio.pages import put_back_corrections, refresh_pages, remember_shown
from vrshq.backend.labelstudio.results import state_prediction
from vrshq.backend.labelstudio.served_media import MediaStore
from vrshq.backend.labelstudio.task_video import open_task_video
from vrshq.backend.labelstudio.writer import LabelStudioWriter
from vrshq.backend.metrics import Metrics, RedisFrames
from vrshq.backend.serving import ModelServing
from vrshq.backend.tasks.features import task_slot
from vrshq.backend.tasks.inputs import RequestError, TaskInputs
from vrshq.backend.tasks.projects import ProjectRegistry
from vrshq.backend.tasks.state import TaskState, TaskStateStore, prompt_signature
from vrshq.backend.tasks.write_ledger import WriteLedger, post_prediction_once
from vrshq.engine.persist import use_slot
from vrshq.errors import VrshqError
from vrshq.masks import decode_rle
from vrshq.plugins.base import ModelPlugin, ObjectTrack
from vrshq.video.reader import VideoReader


log = logging.getLogger(__name__)


class Backend:
    """The model plugin, the task states, the corrections log and the job runner of one process."""

    def __init__(self, config: BackendConfig, plugin: ModelPlugin | None = None) -> None:
        self.config = config
        data = config.data_path
        data.mkdir(parents=True, exist_ok=True)
        self.serving = ModelServing(config, plugin)
        self.states = TaskStateStore(data)
        self.projects = ProjectRegistry(data)
        self.corrections = CorrectionsLog.for_model_dir(data)
        self.writes = WriteLedger(data)
        self.writes.prune()
        # Media of tasks whose video has no writable folder, served at /media (VRSHQ_MEDIA_URL).
        self.media = MediaStore(data, config.media_url) if config.media_url else None
        # Jobs carry JSON payloads (vrshq.backend.jobs.payloads): on Redis when REDIS_URL is set,
        # for `vrshq worker` processes to run; otherwise on a thread pool in this process.
        redis_frames = None
        if config.redis_url:
            self.jobs: Any = RQJobRunner(config.redis_url, config.queue, config.max_queued)
            redis_frames = RedisFrames(self.jobs.redis, f"vrshq:frames:{config.queue}")
        else:
            self.jobs = JobRunner(workers=config.job_workers)
        self.metrics = Metrics(config.metrics_dir, redis_frames)
        log.info("model loaded: plugin %s, version %s (pid %d)", self.plugin.name,
                 self.plugin.version, os.getpid())

    # ------------------------------------------------------------------ the served model
    @property
    def plugin(self) -> ModelPlugin:
        """The model plugin being served now."""
        return self.serving.plugin

    @property
    def model_lock(self) -> Any:
        """Held around every call into the model."""
        return self.serving.lock

    @property
    def versions(self) -> Any:
        """The model-version registry under the data folder."""
        return self.serving.versions

    def serving_model_dir(self) -> str | None:
        """The folder of the model being served (a registered version, or the configured one)."""
        return self.serving.model_dir()

    def refresh_model(self, min_interval: float = 1.0) -> bool:
        """Swap in a newly served model version (see :meth:`ModelServing.refresh`)."""
        return self.serving.refresh(min_interval)

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
        setup_project(self.projects, payload)
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
        """Queue a job (:mod:`vrshq.backend.jobs.execute`) with a JSON payload; (job, created)."""
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
        return project_writer(self.config, self.projects, project)

    def media_config(self, project: str) -> MediaConfig:
        """Where the project's media may come from."""
        return project_media(self.config, self.writer(project))

    def open_video(self, project: str, task: int, url: str, fps: float) -> VideoReader:
        """The task's video, resolved and opened at Label Studio's fps, within the configured limits."""
        return open_task_video(url, self.media_config(project), task, fps, self.config)

    # ------------------------------------------------------------------ predict
    def predict_task(self, inputs: TaskInputs, video: VideoReader, info: LabelConfigInfo,
                     report: Report | None = None) -> dict[str, Any]:
        """Predict every prompt of a task now; saves the state, writes keyframes; the prediction."""
        with self.states.lock(inputs.project, inputs.task):
            slot = task_slot(self.config, inputs.project, inputs.task, inputs.video_url, inputs.fps,
                             video, self.model_version, "write")
            # the prediction's image features are kept for the task's corrections
            with self.model_lock, use_slot(slot):
                objects = self.plugin.predict(video, inputs.prompts, progress=report)
                slot.commit()
            record_label_rules(objects, inputs.prompts)
            state = TaskState(project=inputs.project, task=str(inputs.task), plugin=self.plugin.name,
                              model_version=self.model_version, video=inputs.video_url,
                              fps=inputs.fps, frames_count=len(video),
                              prompts=prompt_signature(inputs.prompts))
            previous = self._previous_state(inputs.project, inputs.task)
            if previous is not None and (previous.video, previous.frames_count) == \
                    (state.video, state.frames_count):
                state.objects, state.earlier_tracks = previous.objects, previous.earlier_tracks
                # What annotators submitted stays true of the video; a reviewed mask the new
                # prediction changes is no longer reviewed (vrshq.backend.export.final checks).
                state.submissions, state.reviews = previous.submissions, previous.reviews
            state.replace_objects(list(objects))
            refresh_pages(state, self.config.mask_pages, reset=True)
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
        if self.plugin.labels_as_prompts:
            # A concept's instances are numbered on from its prompt and each holds only the frames
            # it was found on (a cancelled concept run raises, leaving no partial state), so the
            # objects cannot tell what was asked: the prompts the state recorded do.
            same = state.prompts is not None and state.prompts == prompt_signature(inputs.prompts)
            return state_prediction(state, info) if same else None
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
        self.require_writer(inputs.project, inputs.task)
        prompts = json.dumps([(p.obj_id, p.text, p.label) for p in inputs.prompts])
        key = "predict:" + hashlib.sha256(
            f"{inputs.project}|{inputs.task}|{self.model_version}|{inputs.video_url}|{prompts}"
            .encode()).hexdigest()[:24]
        job, _ = self.submit("predict", key, predict_payload(inputs, label_config),
                             project=inputs.project, task=inputs.task)
        return {"id": job.id, "task": inputs.task, "state": job.state}

    # ------------------------------------------------------------------ keyframes, overlay
    def write_keyframes(self, state: TaskState, video: VideoReader, info: LabelConfigInfo,
                        data: Mapping[str, Any] | None = None, reuse: bool = False) -> None:
        """Write each object's keyframe image, its extra mask pages' images and the overlay
        video; put their URLs into the task's data in LS (``data``: the task's data; None reads
        it from Label Studio)."""
        new = self._pages_data(state, video, info, reuse)
        new.update(self.overlay_data(state, video, info))
        if new:
            self.update_task_data(state, data, new)

    def write_pages(self, state: TaskState, video: VideoReader, info: LabelConfigInfo,
                    data: Mapping[str, Any] | None = None, reuse: bool = False) -> None:
        """Write the mask pages' images (not the overlay); put the page list into the task's
        data (``reuse``: see :meth:`_pages_data`)."""
        new = self._pages_data(state, video, info, reuse)
        if new:
            self.update_task_data(state, data, new)

    def _pages_data(self, state: TaskState, video: VideoReader, info: LabelConfigInfo,
                    reuse: bool = False) -> dict[str, Any]:
        """Write the mask pages' images (:func:`write_page_images`); the page list's task data."""
        return write_page_images(state, video, info, tuple(self.config.local_roots),
                                 self.config.keyframe_quality, reuse, self.media,
                                 demand=self.config.demand_page and info.prompt_name is not None)

    def write_overlay(self, state: TaskState, video: VideoReader, info: LabelConfigInfo,
                      data: Mapping[str, Any] | None = None) -> None:
        """Write the overlay video and thumbnail strips of the state's tracks; put their URLs
        into the task's data."""
        new = self.overlay_data(state, video, info)
        if new:
            self.update_task_data(state, data, new)

    def overlay_data(self, state: TaskState, video: VideoReader, info: LabelConfigInfo) -> dict[str, Any]:
        """Write the overlay video and strips (:func:`overlay_data`); their task data keys; {}
        when the config has neither, or when no URL could reach the task (no LS client: skip
        the work, which decodes the video)."""
        if not shows_overlay(info, self.config):
            return {}
        if not self.writer(state.project).configured:
            log.warning("task %s: no overlay video or strips: no Label Studio URL/key to put "
                        "them into the task data", state.task)
            return {}
        return overlay_data(state, video, info, self.config, self.media)

    def update_task_data(self, state: TaskState, data: Mapping[str, Any] | None,
                         changes: Mapping[str, Any]) -> None:
        """Set keys of the task's data in Label Studio (keyframes, overlay) when they differ."""
        writer = self.writer(state.project)
        if not writer.configured:
            log.warning("task %s: cannot show keyframe masks or the overlay: no Label Studio "
                        "URL/key to write their URLs into the task data", state.task)
            return
        try:
            old = dict(writer.get_task_data(int(state.task)) if data is None else data)
            new = {**old, **changes}
            if new != old:
                writer.update_task_data(int(state.task), new)
        except VrshqError as exc:
            log.warning("task %s: keyframe images or overlay not written to the task: %s",
                        state.task, exc)

    # ------------------------------------------------------------------ corrections
    def correct_task(self, project: str, task: int, corrections: list,
                     report: Report | None = None, latest_only: bool = False,
                     info: LabelConfigInfo | None = None) -> TaskState | None:
        """Re-propagate corrections (plugin Correction list) on the task's state and save it.

        With ``latest_only`` (queued jobs), a correction that is no longer its object's newest
        in the corrections log is skipped: jobs may run out of order (two workers, a re-run
        after a killed worker), and an older mask must not overwrite a newer one. None when
        nothing was left to apply. With the label config's ``info``, the mask pages are written
        again for the new tracks; the overlay video and strips are not: the caller queues them
        after its answer (:func:`vrshq.backend.jobs.overlay_job.queue_overlay`).
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
                slot = task_slot(self.config, project, task, state.video, state.fps, video,
                                 self.model_version, "read")
                with self.model_lock, use_slot(slot):  # the prediction's features, not the encoder
                    objects: list[ObjectTrack] = self.plugin.correct(
                        video, state.objects, corrections, progress=report)
                    if slot is not None:
                        slot.keep_filled()  # features a plugin computed when none were stored
                put_back_corrections(objects, {c.obj_id for c in corrections})
                remember_shown(state, {c.obj_id for c in corrections})
                state.replace_objects(list(objects))
                refresh_pages(state, self.config.mask_pages, {c.obj_id for c in corrections})
                if info is not None:  # same objects and keyframes; pages only appended
                    self.write_pages(state, video, info, reuse=True)
            finally:
                video.close()
            state.model_version = self.model_version
            self.states.save(state)
            self.metrics.frames(state.frames_count * len({c.obj_id for c in corrections}))
            return state

    def _is_latest(self, project: str, task: int, c: Any) -> bool:
        if c.points is not None:
            # A clicks row is a row of its frame: a job whose clicks a newer clicks row of the
            # frame replaced skips them (a later mask of the frame is protected by its own job).
            newest = self.corrections.latest(project, task, c.obj_id, int(c.frame))
            if newest is None or newest.corrected_clicks is None:
                return True
            logged = [(k["x"], k["y"], k["label"]) for k in newest.corrected_clicks]
            mine = [(float(x), float(y), int(lb)) for (x, y), lb in zip(c.points, c.point_labels or [])]
            return len(logged) == len(mine) and bool(np.allclose(logged, mine, rtol=0, atol=1e-6))
        if c.mask is None:
            # A box correction's log row is the object's box track (on its keyframe's row), not
            # a row of its frame: nothing to compare; the state's merge order decides.
            return True
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
