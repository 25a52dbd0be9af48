"""A task's video: its media URL resolved (local root or download) and opened at the task's fps,
refused before decoding when it is over the configured limits."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from vrshq.backend.answers import shorten
from vrshq.backend.config import BackendConfig
from vrshq.backend.labelstudio.media import MediaConfig, MediaError, resolve_media
from vrshq.errors import VideoError
from vrshq.video.container import declared_size
from vrshq.video.reader import VideoReader, open_video


def open_task_video(url: str, media: MediaConfig, task: int, fps: float,
                    limits: BackendConfig) -> VideoReader:
    """The task's video at Label Studio's fps; over VRSHQ_MAX_PIXELS or VRSHQ_MAX_FRAMES, a VideoError."""
    # A host part with userinfo or a backslash parses differently in urllib and in requests
    # ("http://evil\\@ls:8080/" is LS to one, evil to the other): never fetch such a URL.
    netloc = urlsplit(url).netloc if isinstance(url, str) else ""
    if "@" in netloc or "\\" in netloc:
        raise MediaError(url, "a media URL may not carry a user name or a backslash in its host")
    path = resolve_media(url, media, task_id=task)
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


__all__ = ["open_task_video"]
