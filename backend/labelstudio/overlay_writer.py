"""The overlay video and thumbnail strips of a task state, written where the editor reads them.

Moved out of :class:`vrshq.backend.service.Backend` so that the prediction (inline) and the
``overlay`` job that follows a correction (:mod:`vrshq.backend.jobs.overlay_job`) write them with
the same code. :func:`tracks_fingerprint` names what an overlay shows: two states with the same
fingerprint have the same overlay, so re-deliveries of one correction join one job.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from vrshq.backend.config import BackendConfig
from vrshq.backend.labelstudio.keyframes import image_url
from vrshq.backend.labelstudio.labelconfig import LabelConfigInfo
from vrshq.backend.labelstudio.overlay import encode_overlay, label_color
from vrshq.backend.labelstudio.overlay_files import write_overlay_file
from vrshq.backend.labelstudio.served_media import MediaStore
from vrshq.backend.labelstudio.strips import StripBuilder
from vrshq.backend.tasks.state import TaskState
from vrshq.video.reader import VideoReader


def shows_overlay(info: LabelConfigInfo, config: BackendConfig) -> bool:
    """Whether the label config has an overlay video or (enabled) thumbnail strips to write."""
    return info.overlay_key is not None or (info.strips_key is not None and bool(config.strip_frames))


def tracks_fingerprint(state: TaskState) -> str:
    """A hash of what the overlay and strips are drawn from: the video, its rate and frames, and
    every object's id, label and track (pages, reviews and URLs do not change the picture)."""
    doc = [state.project, state.task, state.video, state.fps, state.frames_count,
           [[o.obj_id, o.label, o.track.to_json()] for o in state.objects]]
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:24]


def overlay_data(state: TaskState, video: VideoReader, info: LabelConfigInfo, config: BackendConfig,
                 media: MediaStore | None) -> dict[str, Any]:
    """Write the overlay video and the strips of the state's tracks; their task data keys ({}
    when the config has neither)."""
    if not shows_overlay(info, config):
        return {}
    colors = [label_color(o.label, o.obj_id, info.label_colors) for o in state.objects]
    roots = tuple(config.local_roots)
    new: dict[str, Any] = {}
    strips = (StripBuilder(video, state.objects, colors, config.strip_frames)
              if info.strips_key is not None and config.strip_frames else None)
    overlay_url = None
    if info.overlay_key is not None:  # first: its in-order pass feeds the strips' frames
        overlay_url = write_overlay_file(
            state.video, state.project, state.task,
            lambda path: encode_overlay(video, state.objects, colors, state.fps, path,
                                        on_frame=strips.add if strips else None),
            roots, media)
    if strips is not None:
        urls = []
        for o, img in zip(state.objects, strips.images(video)):
            # A content hash in the name: a new strip gets a new URL; the old one goes.
            name = f"strip-obj{o.obj_id}-{hashlib.sha256(img.tobytes()).hexdigest()[:16]}.jpg"
            urls.append(image_url(state.video, state.project, state.task, name, img, roots,
                                  config.keyframe_quality, replaces=f"strip-obj{o.obj_id}-",
                                  media=media, kind=f"strip-obj{o.obj_id}"))
        new[info.strips_key] = urls
    if overlay_url is not None:
        new[info.overlay_key] = overlay_url
    return new


__all__ = ["overlay_data", "shows_overlay", "tracks_fingerprint"]
