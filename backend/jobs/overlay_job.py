"""The ``overlay`` job: a correction's overlay video and strips, written after its answer.

Label Studio 1.23.2 reads a task's data (the overlay URL among it) once, when the editor loads
the task, so an overlay written while a fix's answer waits is never seen by the open editor:
it is seen on the next load. A correction therefore answers first (its page list written as
before) and queues this job, which re-encodes the overlay off the fix's critical path.

The job is keyed by project, task and :func:`tracks_fingerprint` of the corrected state, so
re-deliveries of one correction join one job. It runs under the task's lock (as every task job,
:func:`vrshq.backend.jobs.execute.execute`), reloads the newest state and, when a newer
correction replaced the one it was queued for, skips: that correction queued its own job. It
sets only the overlay and strips keys of the task data (read, merge, write), so a page list
written meanwhile stays. A failure is the job's record; the correction was saved before.
"""

from __future__ import annotations

import logging
from typing import Any

from vrshq.backend.labelstudio.labelconfig import parse_label_config
from vrshq.backend.labelstudio.overlay_writer import shows_overlay, tracks_fingerprint
from vrshq.backend.tasks.state import TaskState

log = logging.getLogger(__name__)


def overlay_payload(state: TaskState, label_config: str) -> dict[str, Any]:
    """The payload of an overlay job for ``state`` (saved) under ``label_config``."""
    return {"project": state.project, "task": int(state.task), "label_config": label_config,
            "tracks": tracks_fingerprint(state)}


def queue_overlay(backend: Any, state: TaskState, label_config: str) -> Any:
    """Queue the overlay job of a saved, corrected ``state``; the job, or None when the config
    shows no overlay or strips, or no Label Studio client could take their URLs."""
    info = parse_label_config(label_config)
    if not shows_overlay(info, backend.config):
        return None
    if not backend.writer(state.project).configured:
        log.warning("task %s: no overlay video or strips: no Label Studio URL/key to put "
                    "them into the task data", state.task)
        return None
    payload = overlay_payload(state, label_config)
    key = f"overlay:{state.project}:{state.task}:{payload['tracks']}"
    job, _ = backend.submit("overlay", key, payload, project=state.project, task=int(state.task))
    return job


def overlay_job(backend: Any, payload: dict[str, Any], report: Any = None) -> dict[str, Any]:
    """Write the overlay and strips of the task's newest state (the caller holds the task's lock)."""
    project, task = str(payload["project"]), int(payload["task"])
    state = backend.states.load(project, task)
    if state is None:
        return {"task": task, "overlay": None, "skipped": "the task has no state"}
    if tracks_fingerprint(state) != payload["tracks"]:
        return {"task": task, "overlay": None,
                "skipped": "a newer correction replaced this state; its own overlay job writes it"}
    info = parse_label_config(payload["label_config"])
    if report is not None:
        report("overlay", 0, state.frames_count)
    video = backend.open_video(project, task, state.video, state.fps)
    try:
        new = backend.overlay_data(state, video, info)
    finally:
        video.close()
    if new:  # only these keys: a page list written since the correction stays
        backend.update_task_data(state, None, new)
    if report is not None:
        report("overlay", state.frames_count, state.frames_count)
    return {"task": task, "overlay": new.get(info.overlay_key) if info.overlay_key else None,
            "strips": new.get(info.strips_key) if info.strips_key else None}


__all__ = ["overlay_job", "overlay_payload", "queue_overlay"]
