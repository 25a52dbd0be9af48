"""Frame-exact video readers over decord (video files) and PIL (folders of JPEG/PNG frames)."""

from __future__ import annotations

import os

from vrshq.errors import VideoError
from vrshq.video.base import DEFAULT_FOLDER_FPS, FRAME_EXTENSIONS, FrameIndexError, VideoInfo, VideoReader
from vrshq.video.decord_reader import DecordVideoReader
from vrshq.video.folder import FrameFolderReader

__all__ = [
    "DEFAULT_FOLDER_FPS", "FRAME_EXTENSIONS", "DecordVideoReader", "FrameFolderReader",
    "FrameIndexError", "VideoInfo", "VideoReader", "open_video",
]


def open_video(path: str | os.PathLike, fps: float | None = None) -> VideoReader:
    """Open a video file (decord) or a folder of JPEG/PNG frames; fps overrides the file's rate."""
    path = str(path)
    if not os.path.exists(path):
        raise VideoError(path, "file not found")
    if os.path.isdir(path):
        return FrameFolderReader(path, fps=DEFAULT_FOLDER_FPS if fps is None else fps)
    return DecordVideoReader(path, fps=fps)
