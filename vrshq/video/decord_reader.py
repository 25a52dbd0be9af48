"""Video files through decord, frame-exact: an in-order cursor with CRC-checked seeks."""

from __future__ import annotations

import os
import re
import threading
import zlib
from typing import Any

import numpy as np

from vrshq.errors import VideoError
from vrshq.video.base import VideoReader, check_fps
from vrshq.video.container import check_video_file
from vrshq.video.timing import check_constant_rate

_DECORD_PREFIX = re.compile(r"^\s*\[[\d:]+\]\s+\S+:\d+:\s*")
_DECORD_CHECK = re.compile(r"^Check failed: .*?\(-?\d+ vs\. -?\d+\)\s*(.*)$")
# decord's internal wording -> what a user can act on
_DECORD_PHRASES = {
    "Cannot create buffer source": "no decodable video stream",
    "Error while feeding the filter graph": "damaged frame data",
    "Error sending packet": "damaged packet data",
    "cannot find video stream": "no video stream with frames",
}


def _decord_reason(e: BaseException) -> str:
    """decord's error text without its log prefixes, internals and stack trace."""
    lines = str(e).strip().splitlines()
    text = lines[0] if lines else type(e).__name__
    while _DECORD_PREFIX.match(text):
        text = _DECORD_PREFIX.sub("", text, count=1)
    if "1094995529" in text:  # AVERROR_INVALIDDATA
        return "invalid data in the stream"
    if text.startswith("Error reading "):
        return "unrecognised or damaged container"
    check = _DECORD_CHECK.match(text)
    if check:
        text = check.group(1) or "decoder check failed"
    elif text.startswith("Check failed"):
        text = "decoder check failed"
    for phrase, plain in _DECORD_PHRASES.items():
        if phrase in text:
            return plain
    text = re.sub(r"^\[[^\]]*\]\s*", "", text)  # "[<path>] ..." repeats the path
    return text.rstrip(".") or type(e).__name__


def _to_numpy(raw: Any) -> np.ndarray:
    # sam2's mp4 loader switches decord's global bridge to torch, so accept either output
    arr = raw.asnumpy() if hasattr(raw, "asnumpy") else np.asarray(raw)
    if arr.ndim == 3 and arr.shape[2] > 3:
        # ffmpeg pads each RGB row (to 32 pixels here); when the padded row is a whole multiple
        # of the width, decord 0.6 shapes the frame (h, w, row_bytes // w): (16, 16, 6) for a
        # 16x16 video. Each row still starts with its w RGB pixels, so keep those.
        h, w = arr.shape[:2]
        arr = arr.reshape(h, -1)[:, : 3 * w].reshape(h, w, 3)
    return np.ascontiguousarray(arr, dtype=np.uint8)


_NOT_REPEATABLE = "decoding is not repeatable; the file may be corrupt"


class _Misaligned(Exception):
    """A decoded frame did not match the fingerprint recorded for its index."""


class DecordVideoReader(VideoReader):
    """A video file decoded with decord on the CPU, with exact random access.

    decord's seeks are wrong on some files (B-frames in AVI, open-GOP H.264, ...), so the
    reader treats a plain sequential decode as the truth: it keeps a cursor and decodes
    forward, records a CRC of every frame it has decoded in order, and only uses decord's
    seek to return to a frame whose CRC it knows. A seek that lands on a different frame
    switches the file to sequential-only mode (re-decoding from frame 0 for backward jumps).
    """

    # forward jumps up to this many frames decode through instead of seeking
    SEQUENTIAL_WINDOW = 32

    def __init__(
        self, path: str | os.PathLike, fps: float | None = None, *, num_threads: int = 0
    ) -> None:
        self.path = str(path)
        check_video_file(self.path)
        if fps is not None:
            fps = check_fps(self.path, fps, "the requested")
        # From the packets' timestamps, before any decoding: a variable-rate file is refused,
        # a constant-rate one gets its exact rate (30000/1001, not decord's rounded average).
        timing = check_constant_rate(self.path)
        self._num_threads = num_threads
        self._lock = threading.RLock()
        self._vr: Any = self._open_decord()
        n = len(self._vr)
        if n <= 0:
            raise VideoError(self.path, "the video has no frames")
        self.num_frames = n
        self.file_fps = float(timing.fps) if timing is not None else self._native_fps()
        self.fps = fps if fps is not None else check_fps(self.path, self.file_fps, "the file's")
        self._prints = np.zeros(n, dtype=np.uint32)
        self._frontier = 0  # frames [0, frontier) have a recorded CRC
        self._cursor: int | None = 0  # index the next decord next() returns; None if unknown
        # how the decoder reached its position: open | seek | restart (seek(0)) | reopen
        self._origin = "open"
        self._seek_trusted = True
        self._seek0_trusted = True
        self._last: tuple[int, np.ndarray] | None = None
        first = self._read_next()
        self.height, self.width = first.shape[:2]
        self._last = (0, first)
        self._check_last_frame()

    def _open_decord(self) -> Any:
        # importing decord before sam2.build_sam can segfault, so import it only here
        import decord

        try:
            return decord.VideoReader(self.path, ctx=decord.cpu(0), num_threads=self._num_threads)
        except Exception as e:
            raise VideoError(
                self.path, f"not a readable video file ({_decord_reason(e)})"
            ) from None

    def _native_fps(self) -> float | None:
        try:
            return float(self._vr.get_avg_fps())
        except Exception:
            return None

    def _check_last_frame(self) -> None:
        """Decode the last frame once: truncated files often index frames they cannot decode."""
        n = self.num_frames
        if n == 1:
            return
        try:
            last = _to_numpy(self._vr[n - 1])
        except Exception:
            # decord's seek can fail where decoding in order works: settle it the slow way,
            # which raises a VideoError naming the first frame that does not decode
            self._restart(fresh=True)
            try:
                while self._cursor < n:
                    self._read_next()
            except _Misaligned:
                raise VideoError(self.path, _NOT_REPEATABLE) from None
            self._origin = "open"
            return
        if last.shape != (self.height, self.width, 3):
            raise VideoError(self.path, f"corrupt video: the last frame has shape {last.shape}")
        self._cursor = None  # the probe moved the decoder

    def close(self) -> None:
        """Release the decoder; later reads raise ValueError."""
        with self._lock:
            super().close()
            self._vr = None
            self._last = None

    # -- sequential core -----------------------------------------------------------------

    def _read_next(self) -> np.ndarray:
        """Decode the frame at the cursor, checking or recording its CRC."""
        idx = self._cursor
        assert idx is not None and idx <= self._frontier
        from_seek = self._origin == "seek"
        try:
            raw = self._vr.next()
        except StopIteration:
            if from_seek:
                raise _Misaligned() from None
            raise VideoError(
                self.path,
                f"corrupt or truncated video: decoding stopped after {idx} of "
                f"{self.num_frames} frames",
            ) from None
        except Exception as e:
            if from_seek:
                raise _Misaligned() from None
            raise VideoError(
                self.path,
                f"decoding failed at or near frame {idx} ({_decord_reason(e)}); "
                "the file may be corrupt",
            ) from None
        arr = _to_numpy(raw)
        if idx > 0 and arr.shape != (self.height, self.width, 3):
            raise VideoError(
                self.path,
                f"frame {idx} has shape {arr.shape}, not ({self.height}, {self.width}, 3)",
            )
        crc = zlib.crc32(arr)
        if idx < self._frontier:
            if crc != self._prints[idx]:
                raise _Misaligned()
        else:
            self._prints[idx] = crc
            self._frontier = idx + 1
        self._cursor = idx + 1
        return arr

    def _restart(self, fresh: bool = False) -> None:
        """Go back to frame 0 with decord's seek(0), or with a fresh decoder if `fresh`."""
        if not fresh and self._seek0_trusted:
            try:
                self._vr.seek(0)
                self._origin = "restart"
                self._cursor = 0
                return
            except Exception:
                pass
        self._vr = None
        self._vr = self._open_decord()
        self._origin = "reopen"
        self._cursor = 0

    def _seek(self, target: int) -> None:
        try:
            self._vr.seek_accurate(target)
        except Exception:
            self._seek_trusted = False
            self._restart()
            return
        self._cursor = target
        self._origin = "seek"

    def _position_for(self, i: int) -> None:
        """Put the decoder at or shortly before frame i (in the CRC-known region when seeking)."""
        c = self._cursor
        if c is not None and c <= i:
            if i - c <= self.SEQUENTIAL_WINDOW or not self._seek_trusted:
                return
            if i >= self._frontier and c >= self._frontier - self.SEQUENTIAL_WINDOW:
                return
        if not self._seek_trusted:
            self._restart()
            return
        # land on a frame whose CRC we know, so the landing can be verified
        target = i if i < self._frontier else self._frontier - 1
        if target == 0:
            self._restart()
        else:
            self._seek(target)

    def _read(self, index: int) -> np.ndarray:
        with self._lock:
            if self._closed or self._vr is None:
                raise ValueError(f"{self.path}: reader is closed")
            if self._last is not None and self._last[0] == index:
                return self._last[1].copy()
            while True:
                try:
                    self._position_for(index)
                    while True:
                        at = self._cursor
                        arr = self._read_next()
                        if at == index:
                            break
                    break
                except _Misaligned:
                    if self._origin == "seek":
                        # decord's seek is inexact on this file: only decode forward from now on
                        self._seek_trusted = False
                        self._restart()
                    elif self._origin == "restart":
                        self._seek0_trusted = False
                        self._restart(fresh=True)
                    else:
                        raise VideoError(self.path, _NOT_REPEATABLE) from None
            self._last = (index, arr)
            return arr.copy()
