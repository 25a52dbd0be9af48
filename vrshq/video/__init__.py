"""Video input: frame-exact readers and the geometry of the SAM-2 model input."""

from __future__ import annotations

from typing import Any

from vrshq.video.reader import (
    DecordVideoReader,
    FrameFolderReader,
    FrameIndexError,
    VideoInfo,
    VideoReader,
    open_video,
)

__all__ = [
    "DecordVideoReader",
    "FrameFolderReader",
    "FrameIndexError",
    "FrameTransform",
    "ResizeMode",
    "VideoInfo",
    "VideoReader",
    "open_video",
]

_TRANSFORMS = ("FrameTransform", "ResizeMode")


def __getattr__(name: str) -> Any:
    # transforms import torch; readers alone (e.g. the CLI's sample video) should not pay for it
    if name in _TRANSFORMS:
        from vrshq.video import transforms

        return getattr(transforms, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
