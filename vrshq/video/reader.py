"""Frame-exact video readers over decord (video files) and PIL (folders of JPEG/PNG frames)."""

from __future__ import annotations

import math
import operator
import os
import re
import struct
import threading
import zlib
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


def _check_fps(path: str, fps: float | None, what: str) -> float:
    if fps is None or not math.isfinite(float(fps)) or float(fps) <= 0:
        raise VideoError(
            path, f"{what} frame rate is zero or missing ({fps!r}); pass fps= to set one"
        )
    return float(fps)


# --- frame folders ---------------------------------------------------------------------


def _frame_sort_key(names: list[str]) -> list[str]:
    stems = [os.path.splitext(n)[0] for n in names]
    if all(re.fullmatch(r"\d+", s, re.ASCII) for s in stems):
        return sorted(names, key=lambda n: (int(os.path.splitext(n)[0]), n))

    def natural(name: str) -> tuple[list[Any], str]:
        # re.split with a group alternates text/number, so the lists compare type-safely
        parts = re.split(r"(\d+)", name)
        return [int(p) if k % 2 else p.lower() for k, p in enumerate(parts)], name

    return sorted(names, key=natural)


class FrameFolderReader(VideoReader):
    """A folder of JPEG/PNG frames, ordered by the number in their names."""

    def __init__(self, path: str | os.PathLike, fps: float = DEFAULT_FOLDER_FPS) -> None:
        self.path = str(path)
        if not os.path.exists(self.path):
            raise VideoError(self.path, "folder not found")
        if not os.path.isdir(self.path):
            raise VideoError(self.path, "not a folder")
        self.fps = _check_fps(self.path, fps, "the")
        try:
            with os.scandir(self.path) as entries:
                frames = [
                    e.name
                    for e in entries
                    # dotfiles are OS droppings such as macOS "._0001.jpg"
                    if not e.name.startswith(".")
                    and os.path.splitext(e.name)[1].lower() in FRAME_EXTENSIONS
                    and e.is_file()
                ]
        except PermissionError:
            raise VideoError(self.path, "permission denied: cannot list the folder") from None
        except OSError as e:
            raise VideoError(self.path, f"cannot list the folder ({e.strerror or e})") from None
        if not frames:
            raise VideoError(self.path, "no JPEG/PNG frames")
        self._files = [os.path.join(self.path, n) for n in _frame_sort_key(frames)]
        self.num_frames = len(self._files)
        first = self._load(0)
        self.height, self.width = first.shape[:2]

    @property
    def files(self) -> list[str]:
        """The frame files in frame order."""
        return list(self._files)

    def _load(self, index: int) -> np.ndarray:
        from PIL import Image

        file = self._files[index]
        try:
            with Image.open(file) as image:
                rgb = np.array(image.convert("RGB"))
        except PermissionError:
            raise VideoError(file, "permission denied") from None
        except FileNotFoundError:
            raise VideoError(file, "frame file disappeared") from None
        except Exception as e:  # PIL raises OSError, SyntaxError, struct.error, ... on bad data
            raise VideoError(file, f"not a readable image ({e})") from None
        return rgb

    def _read(self, index: int) -> np.ndarray:
        rgb = self._load(index)
        if rgb.shape[:2] != (self.height, self.width):
            h, w = rgb.shape[:2]
            raise VideoError(
                self._files[index],
                f"frame size {w}x{h} differs from the first frame's {self.width}x{self.height}",
            )
        return rgb


# --- video files -----------------------------------------------------------------------

_MP4_BOXES = {
    b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid",
    b"moof", b"styp", b"sidx", b"pdin", b"meta",
}  # fmt: skip


def _declared_end(f: Any, head: bytes) -> int | None:
    """The byte count the container's own size fields promise, or None when unknown."""
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        size = struct.unpack("<I", head[4:8])[0]
        return 8 + size if size else None  # 0: a writer that never finalised the header
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return _ebml_segment_end(head)
    if len(head) >= 8 and head[4:8] in _MP4_BOXES:
        return _mp4_end(f)
    return None


def _ebml_vint(buf: bytes, pos: int, keep_marker: bool) -> tuple[int, int, bool]:
    """(value, new position, all-ones) of the EBML variable-length integer at pos."""
    first = buf[pos]
    length = 9 - first.bit_length()
    if not 1 <= length <= 8 or pos + length > len(buf):
        raise ValueError("bad EBML number")
    value = first if keep_marker else first & (0xFF >> length)
    for b in buf[pos + 1 : pos + length]:
        value = (value << 8) | b
    all_ones = value == (1 << (7 * length)) - 1
    return value, pos + length, all_ones


def _ebml_segment_end(head: bytes) -> int | None:
    try:
        _, pos, _ = _ebml_vint(head, 0, keep_marker=True)
        size, pos, _ = _ebml_vint(head, pos, keep_marker=False)
        seg_id, pos, _ = _ebml_vint(head, pos + size, keep_marker=True)
        if seg_id != 0x18538067:
            return None
        seg_size, pos, unknown = _ebml_vint(head, pos, keep_marker=False)
    except (ValueError, IndexError):
        return None
    return None if unknown else pos + seg_size  # unknown size: a live-streamed file


def _mp4_end(f: Any) -> int | None:
    file_size = os.fstat(f.fileno()).st_size
    offset = 0
    for _ in range(100_000):
        f.seek(offset)
        header = f.read(16)
        if len(header) < 8:
            return None  # a few stray bytes at the end are not worth rejecting a file for
        size, kind = struct.unpack(">I4s", header[:8])
        if not all(32 <= c < 127 for c in kind):
            return None  # not a box structure we understand; leave the verdict to the decoder
        if size == 1:
            if len(header) < 16:
                return offset + 16
            size = struct.unpack(">Q", header[8:16])[0]
        elif size == 0:  # the last box runs to the end of the file
            return None
        if size < 8:
            return None
        offset += size
        if offset >= file_size:
            return offset if offset > file_size else None
    return None


def _check_video_file(path: str) -> None:
    """Cheap checks decord handles badly: missing, special, empty, unreadable or truncated files."""
    if not os.path.exists(path):
        raise VideoError(path, "file not found")
    if os.path.isdir(path):
        raise VideoError(path, "is a folder, not a video file")
    if not os.path.isfile(path):
        # a FIFO or device would block or stream forever inside the decoder
        raise VideoError(path, "not a regular file")
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise VideoError(path, "empty file (0 bytes)")
            head = f.read(4096)
            end = _declared_end(f, head)
    except PermissionError:
        raise VideoError(path, "permission denied") from None
    except OSError as e:
        raise VideoError(path, f"cannot read the file ({e.strerror or e})") from None
    if end is not None and end > size:
        raise VideoError(
            path, f"file is truncated: the container declares {end} bytes, the file has {size}"
        )
    if head[:8] == b"\x89PNG\r\n\x1a\n" or head[:3] == b"\xff\xd8\xff":
        raise VideoError(path, "is a single image, not a video; put frames in a folder instead")


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
        _check_video_file(self.path)
        if fps is not None:
            fps = _check_fps(self.path, fps, "the requested")
        self._num_threads = num_threads
        self._lock = threading.RLock()
        self._vr: Any = self._open_decord()
        n = len(self._vr)
        if n <= 0:
            raise VideoError(self.path, "the video has no frames")
        self.num_frames = n
        self.fps = (
            fps if fps is not None else _check_fps(self.path, self._native_fps(), "the file's")
        )
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


def open_video(path: str | os.PathLike, fps: float | None = None) -> VideoReader:
    """Open a video file (decord) or a folder of JPEG/PNG frames; fps overrides the file's rate."""
    path = str(path)
    if not os.path.exists(path):
        raise VideoError(path, "file not found")
    if os.path.isdir(path):
        return FrameFolderReader(path, fps=DEFAULT_FOLDER_FPS if fps is None else fps)
    return DecordVideoReader(path, fps=fps)
