"""COCO run-length encoding of boolean masks (pycocotools), in a JSON-ready form.

A COCO RLE here is ``{"size": [h, w], "counts": str}``: column-major (Fortran order) runs
of 0s and 1s, compressed to pycocotools' ASCII string. Readers also accept ``counts`` as
bytes or as the uncompressed list of run lengths.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from vrshq.errors import MaskFormatError

CocoRle = dict[str, Any]
"""``{"size": [h, w], "counts": str}``, as returned by :func:`encode_rle`."""

PixelBox = tuple[int, int, int, int]
"""``(x0, y0, x1, y1)`` in pixels; x1 and y1 are exclusive (width = x1 - x0)."""


def ensure_mask(mask: Any, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Return ``mask`` as a 2-D boolean array, checking its dtype and optionally its shape."""
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise MaskFormatError(f"a mask must be a 2-D (H, W) array, got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise MaskFormatError(f"a mask must have at least one pixel, got shape {arr.shape}")
    if arr.dtype != np.bool_:
        # Integer 0/1 or 0/255 masks are unambiguous; float masks (probabilities, logits)
        # need a threshold the caller must choose, so they are refused.
        if not np.issubdtype(arr.dtype, np.integer):
            raise MaskFormatError(f"a mask must be boolean or integer, got dtype {arr.dtype}")
        arr = arr != 0
    if shape is not None and arr.shape != tuple(shape):
        raise MaskFormatError(f"mask has shape {arr.shape}, expected {tuple(shape)}")
    return arr


def encode_rle(mask: Any) -> CocoRle:
    """Encode a boolean HxW mask as COCO RLE with ``counts`` as a str (JSON-serialisable)."""
    m = ensure_mask(mask)
    rle = mask_utils.encode(np.asfortranarray(m, dtype=np.uint8))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: Mapping[str, Any]) -> np.ndarray:
    """Decode a COCO RLE (counts as str, bytes or run-length list) to a boolean HxW array."""
    coco = _to_pycocotools(rle)
    try:
        decoded = mask_utils.decode(coco)
    except (ValueError, TypeError) as exc:
        raise MaskFormatError(f"COCO RLE does not decode: {exc}") from exc
    return np.ascontiguousarray(decoded, dtype=bool)


def normalize_rle(rle: Mapping[str, Any]) -> CocoRle:
    """Validate a COCO RLE and return it in the canonical ``{"size", "counts": str}`` form."""
    coco = _to_pycocotools(rle)
    return {"size": [int(coco["size"][0]), int(coco["size"][1])], "counts": coco["counts"].decode("ascii")}


def rle_size(rle: Mapping[str, Any]) -> tuple[int, int]:
    """Return ``(height, width)`` of a COCO RLE after checking its ``size`` field."""
    return _check_size(rle)


def rle_area(rle: Mapping[str, Any]) -> int:
    """Number of foreground pixels of a COCO RLE, computed without decoding it."""
    return int(mask_utils.area(_to_pycocotools(rle)))


def rle_to_bbox(rle: Mapping[str, Any]) -> PixelBox | None:
    """Pixel box ``(x0, y0, x1, y1)`` (x1, y1 exclusive) of a COCO RLE; ``None`` when empty."""
    coco = _to_pycocotools(rle)
    if int(mask_utils.area(coco)) == 0:
        return None
    x, y, w, h = (int(v) for v in mask_utils.toBbox(coco))
    return (x, y, x + w, y + h)


def _check_size(rle: Any) -> tuple[int, int]:
    if not isinstance(rle, Mapping):
        raise MaskFormatError(f"a COCO RLE must be a dict with 'size' and 'counts', got {type(rle).__name__}")
    if "size" not in rle or "counts" not in rle:
        raise MaskFormatError(f"a COCO RLE needs 'size' and 'counts', got keys {sorted(rle)}")
    size = rle["size"]
    if (
        not isinstance(size, (list, tuple))
        or len(size) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size)
        or min(size) < 1
    ):
        raise MaskFormatError(f"COCO RLE 'size' must be [height, width] of positive ints, got {size!r}")
    return int(size[0]), int(size[1])


def _to_pycocotools(rle: Any) -> dict[str, Any]:
    """Validate ``rle`` and convert it to what pycocotools takes: compressed bytes counts."""
    h, w = _check_size(rle)
    counts = rle["counts"]
    if isinstance(counts, str):
        try:
            counts = counts.encode("ascii")
        except UnicodeEncodeError as exc:
            raise MaskFormatError("COCO RLE 'counts' string is not ASCII") from exc
    if isinstance(counts, (bytes, bytearray)):
        total = _compressed_counts_total(bytes(counts))
        if total != h * w:
            raise MaskFormatError(f"COCO RLE runs cover {total} pixels, but size {h}x{w} has {h * w}")
        return {"size": [h, w], "counts": bytes(counts)}
    if isinstance(counts, (list, tuple, np.ndarray)):
        runs = np.asarray(counts)
        if runs.ndim != 1 or (runs.size and not np.issubdtype(runs.dtype, np.integer)) or (runs < 0).any():
            raise MaskFormatError("uncompressed COCO RLE 'counts' must be a list of non-negative ints")
        if int(runs.sum()) != h * w:
            raise MaskFormatError(f"COCO RLE runs cover {int(runs.sum())} pixels, but size {h}x{w} has {h * w}")
        return mask_utils.frPyObjects({"size": [h, w], "counts": [int(v) for v in runs]}, h, w)
    raise MaskFormatError(f"COCO RLE 'counts' must be str, bytes or a list of ints, got {type(counts).__name__}")


# A track's RLEs are checked each time one is read (state load, boxes, areas, results): a
# correction's answer re-checked the same strings thousands of times. The check is a pure
# function of the bytes, so recent answers are kept, for strings short enough that the
# cache stays small (8192 x 4 KiB at most).
_CACHED_COUNTS = 8192
_CACHED_BYTES = 4096


def _compressed_counts_total(counts: bytes) -> int:
    """Sum of the run lengths in a compressed COCO counts string, or -1 if it is malformed."""
    if len(counts) > _CACHED_BYTES:
        return _counts_total(counts)
    return _cached_counts_total(counts)


@functools.lru_cache(maxsize=_CACHED_COUNTS)
def _cached_counts_total(counts: bytes) -> int:
    return _counts_total(counts)


def _counts_total(counts: bytes) -> int:
    """Sum of the run lengths in a compressed COCO counts string, or -1 if it is malformed.

    pycocotools checks runs that overflow the mask but decodes short ones into
    uninitialised memory, so the total is checked here before it decodes anything.
    """
    if not counts:
        return 0
    chars = np.frombuffer(counts, dtype=np.uint8).astype(np.int64) - 48
    if (chars < 0).any() or (chars > 63).any():
        return -1
    # Each value is little-endian 5-bit groups; bit 0x20 means "more groups follow".
    last = (chars & 0x20) == 0
    if not last[-1]:
        return -1
    starts = np.flatnonzero(np.concatenate(([True], last[:-1])))
    group = np.cumsum(np.concatenate(([0], last[:-1].astype(np.int64))))
    shift = 5 * (np.arange(chars.size) - starts[group])
    if shift.max() > 40:  # far more than any 32-bit run needs
        return -1
    values = np.add.reduceat((chars & 0x1F) << shift, starts)
    # Bit 0x10 of a value's last group is its sign bit.
    ends = np.flatnonzero(last)
    negative = (chars[ends] & 0x10) != 0
    values = values - negative * (np.int64(1) << (shift[ends] + 5))
    # From the fourth run on, each run is stored as a delta to the run two places before.
    runs = values.copy()
    runs[3::2] = np.cumsum(values[1::2])[1:]
    if runs.size > 4:
        runs[4::2] = values[2] + np.cumsum(values[4::2])
    if (runs < 0).any():
        return -1
    return int(runs.sum())
