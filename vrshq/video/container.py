"""Cheap checks of a video container's own size fields: a truncated file fails at open, not late."""

from __future__ import annotations

import os
import struct
from typing import Any


from vrshq.errors import VideoError

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


def check_video_file(path: str) -> None:
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


def declared_size(path: str) -> tuple[int, int] | None:
    """The (width, height) a video file's first video stream declares, read from the container
    and codec headers without decoding a frame (PyAV); for a folder of frames, the first frame
    file's header (PIL, lazy). None when it cannot be told: the decoder decides then.

    Checked against a pixel limit before decoding, so an oversized stream costs a header read,
    not a decoded frame (12000x12000 RGB is 432 MB).
    """
    if os.path.isdir(path):
        return _first_frame_size(path)
    try:
        import av

        with av.open(path, metadata_errors="ignore") as container:
            streams = container.streams.video
            if not streams:
                return None
            ctx = streams[0].codec_context
            width, height = int(ctx.width or 0), int(ctx.height or 0)
    except Exception:  # noqa: BLE001 - any probe failure: leave the verdict to the decoder
        return None
    return (width, height) if width > 0 and height > 0 else None


def _first_frame_size(folder: str) -> tuple[int, int] | None:
    from PIL import Image

    from vrshq.video.base import FRAME_EXTENSIONS

    try:
        names = sorted(n for n in os.listdir(folder)
                       if not n.startswith(".") and os.path.splitext(n)[1].lower() in FRAME_EXTENSIONS)
        if not names:
            return None
        with Image.open(os.path.join(folder, names[0])) as image:  # reads the header only
            return int(image.width), int(image.height)
    except Exception:  # noqa: BLE001 - the reader reports unreadable frames itself
        return None
