"""The reader interface every video source implements: count, fps, size, exact frame access."""

from __future__ import annotations

import math
import operator
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vrshq.errors import VideoError

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
DEFAULT_FOLDER_FPS = 30.0


class FrameIndexError(VideoError, IndexError):
    """A frame index outside 0..num_frames-1 (also an IndexError, for generic callers)."""


@dataclass(frozen=True)
class VideoInfo:
    """What a reader knows about its video without decoding it."""

    path: str
    num_frames: int
    fps: float
    width: int
    height: int


class VideoReader(ABC):
    """Random and sequential access to the RGB frames of one video, 0-based."""

    path: str
    num_frames: int
    fps: float
    width: int
    height: int
    # The rate the file itself has (its timestamps), whatever fps= a caller set; None for a
    # source without one (a folder of frames gets its rate from the caller).
    file_fps: float | None = None

    _closed: bool = False

    @abstractmethod
    def _read(self, index: int) -> np.ndarray:
        """Decode frame `index` (already validated) into a fresh HxWx3 uint8 array."""

    def __len__(self) -> int:
        return self.num_frames

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.path!r}, {self.num_frames} frames, "
            f"{self.width}x{self.height} @ {self.fps:g} fps)"
        )

    def close(self) -> None:
        """Release the decoder; later reads raise ValueError."""
        self._closed = True

    def info(self) -> VideoInfo:
        """The path, frame count, frame rate and size as a frozen VideoInfo."""
        return VideoInfo(self.path, self.num_frames, self.fps, self.width, self.height)

    def frame(self, index: int) -> np.ndarray:
        """Frame `index` (0-based) as an HxWx3 uint8 RGB array."""
        return self._read(self._check_index(index))

    def frames(self, indices: Sequence[int]) -> np.ndarray:
        """The frames at `indices` (any order, repeats allowed) as an NxHxWx3 uint8 array."""
        checked = [self._check_index(i) for i in indices]
        out = np.empty((len(checked), self.height, self.width, 3), dtype=np.uint8)
        positions: dict[int, list[int]] = {}
        for pos, i in enumerate(checked):
            positions.setdefault(i, []).append(pos)
        # ascending order lets sequential decoders stream through the batch
        for i in sorted(positions):
            out[positions[i]] = self._read(i)
        return out

    def iter_frames(
        self,
        start: int | None = None,
        stop: int | None = None,
        step: int = 1,
        batch_size: int = 16,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (index, frame) like range(start, stop, step), decoding batch_size frames at once.

        start defaults to the first frame (the last one when step < 0) and stop to just past
        the end in the direction of step; at most one batch of frames is held at a time.
        """
        indices = self._iter_range(start, stop, step)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        for b in range(0, len(indices), batch_size):
            chunk = indices[b : b + batch_size]
            batch = self.frames(chunk)
            for k, i in enumerate(chunk):
                yield i, batch[k]

    def _iter_range(self, start: int | None, stop: int | None, step: int) -> range:
        step = operator.index(step)
        if step == 0:
            raise ValueError("step must not be zero")
        n = self.num_frames
        if start is None:
            start = 0 if step > 0 else n - 1
        elif n > 0:
            start = self._check_index(start)
        if stop is None:
            stop = n if step > 0 else -1
        else:
            stop = operator.index(stop)
            if stop < 0:
                raise ValueError(f"stop must be >= 0 or None, got {stop}")
            stop = min(stop, n)
        return range(start, stop, step)

    def _check_index(self, index: Any) -> int:
        if self._closed:
            raise ValueError(f"{self.path}: reader is closed")
        try:
            i = operator.index(index)
        except TypeError:
            raise TypeError(f"frame index must be an integer, got {type(index).__name__}") from None
        if not 0 <= i < self.num_frames:
            raise FrameIndexError(
                self.path, f"frame index {i} out of range (the video has {self.num_frames} frames)"
            )
        return i


def check_fps(path: str, fps: float | None, what: str) -> float:
    if fps is None or not math.isfinite(float(fps)) or float(fps) <= 0:
        raise VideoError(
            path, f"{what} frame rate is zero or missing ({fps!r}); pass fps= to set one"
        )
    return float(fps)
