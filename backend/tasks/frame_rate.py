"""A task's frame rate against its video file's own: refused, or the file's written into the task.

Label Studio draws frame N at (N-1)/fps with the fps of the label config or of the task's data,
never the file's. A prediction made for a wrong fps is drawn at the wrong times, so a task whose
fps is not the file's rate (``vrshq.video.timing.same_rate``: within 1e-5, so 29.97 is 30000/1001)
is refused with both rates (``VRSHQ_FPS_MISMATCH=refuse``, the default), or, with ``use-file``,
the file's rate is written into the task's data in Label Studio and predicted with. A rate
fixed in the label config (``frameRate="25"``) cannot be rewritten per task: always refused.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from vrshq.backend.answers import shorten
from vrshq.backend.labelstudio.labelconfig import LabelConfigInfo
from vrshq.backend.tasks.inputs import TaskInputs
from vrshq.errors import VideoError
from vrshq.video.reader import VideoReader
from vrshq.video.timing import format_rate, same_rate

log = logging.getLogger(__name__)

class FrameRateMismatch(VideoError):
    """A task whose fps is not its video file's own frame rate (HTTP 422, naming both)."""


def task_data_at_file_rate(backend: Any, project: str, task: int, data: dict[str, Any],
                           info: LabelConfigInfo, video: VideoReader, url: str) -> dict[str, Any]:
    """The task data to predict with: ``data`` itself when its fps is the video's own rate;
    else FrameRateMismatch, or (``use-file``) a copy holding the file's rate, written to Label
    Studio first so that the prediction and the editor use the same rate."""
    own = video.file_fps
    asked = info.fps(data)
    if own is None or same_rate(asked, own):  # a frame folder has no rate of its own
        return data
    file_rate = format_rate(own)
    if info.fps_key is None:
        raise FrameRateMismatch(shorten(url), (
            f"the label config's frameRate {asked:g} is not this video's own frame rate, "
            f"{file_rate} fps: set frameRate=\"{file_rate}\" in the config (or frameRate=\"$fps\" "
            "and each task's rate in its data)"))
    what = f"task {task}'s fps {asked:g} is not this video's own frame rate, {file_rate} fps"
    if backend.config.fps_mismatch != "use-file":
        raise FrameRateMismatch(shorten(url), (
            f"{what}: Label Studio would draw every box at the wrong time; set the task's "
            f"{info.fps_key!r} to {file_rate}, or let the backend write the file's rate into the "
            "task (VRSHQ_FPS_MISMATCH=use-file)"))
    writer = backend.writer(project)
    if not writer.configured:
        raise FrameRateMismatch(shorten(url), (
            f"{what}, and VRSHQ_FPS_MISMATCH=use-file cannot write it into the task without "
            "Label Studio: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY"))
    new = dict(data)
    new[info.fps_key] = int(own) if float(own).is_integer() else float(own)
    writer.update_task_data(int(task), new)
    log.info("task %s: fps %g -> %s, the video's own rate, written into the task", task, asked,
             file_rate)
    video.fps = float(own)  # the reader was opened at the task's old rate
    return new


def inputs_at_file_rate(backend: Any, inputs: TaskInputs, info: LabelConfigInfo,
                        video: VideoReader) -> TaskInputs:
    """``inputs`` with the task data and fps :func:`task_data_at_file_rate` settles on."""
    data = task_data_at_file_rate(backend, inputs.project, inputs.task, inputs.data, info, video,
                                  inputs.video_url)
    return inputs if data is inputs.data else replace(inputs, data=data, fps=info.fps(data))


__all__ = ["FrameRateMismatch", "inputs_at_file_rate", "task_data_at_file_rate"]
