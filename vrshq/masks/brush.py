"""Label Studio brush RLE (the ``brushlabels`` ``value.rle`` list), via label-studio-sdk."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from label_studio_sdk.converter import brush as ls_brush

from vrshq.errors import MaskFormatError
from vrshq.masks.rle import ensure_mask


# The stream's header: the RGBA value count (32 bits), word size - 1 (5 bits: 8-bit words) and
# the four run-length field sizes - 1 (4 bits each: 3, 4, 8 and 16 bits), as the SDK writes it.
_WORD_BITS = 8
_RUN_BITS = (3, 4, 8, 16)
_LONGEST = 1 << _RUN_BITS[-1]  # the longest run one token holds


def encode_brush(mask: Any) -> list[int]:
    """Encode a boolean HxW mask as Label Studio brush RLE (a list of byte values)."""
    m = ensure_mask(mask)
    # The same bytes as label-studio-sdk's mask2rle(mask * 255) (tests/test_masks_brush.py
    # compares them), built with numpy: the SDK's per-run string building cost ~50 ms per
    # 320x240 page, the largest non-model share of a correction's answer.
    # 0/255 like Label Studio's own examples: the editor draws the alpha channel, and
    # 0/1 values would render almost transparent.
    flat = m.reshape(-1)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate(([0], change))
    runs = np.diff(np.concatenate((starts, [flat.size]))) * 4  # each pixel is 4 RGBA values
    values = np.where(flat[starts], 255, 0).astype(np.int64)
    return _pack(flat.size * 4, runs.astype(np.int64), values)


def _pack(count: int, runs: np.ndarray, values: np.ndarray) -> list[int]:
    """The brush byte stream of runs of ``values``: one token per run (longer runs split)."""
    # A run longer than 2**16 is cut into full 2**16 tokens and the rest (the SDK's loop).
    chunks = np.maximum(runs - 1, 0) // _LONGEST
    pieces = np.repeat(runs, chunks + 1)
    vals = np.repeat(values, chunks + 1)
    last = np.cumsum(chunks + 1) - 1  # each run's rest token; the ones before are full
    pieces[:] = _LONGEST
    pieces[last] = runs - chunks * _LONGEST
    # token: series flag (1), size index (2), length - 1 (3/4/8/16), value (8); a run of one
    # is flag 0, index 0 and a 3-bit zero length. The field size follows the whole run (a
    # long run's rest keeps the 16-bit field, as in the SDK).
    index = np.minimum(np.searchsorted(np.array([1 << b for b in _RUN_BITS]), runs), 3)
    index = np.repeat(index, chunks + 1)
    size_bits = np.array(_RUN_BITS)[index]
    flag = np.repeat(runs > 1, chunks + 1).astype(np.int64)
    lengths = pieces - 1
    widths = 3 + size_bits + _WORD_BITS
    tokens = (((flag << 2 | index) << size_bits | lengths) << _WORD_BITS) | vals
    header = (count << 5 | (_WORD_BITS - 1)) << 16
    for i, b in enumerate(_RUN_BITS):
        header |= (b - 1) << (12 - 4 * i)
    bits = np.concatenate((_bits(np.array([header]), np.array([32 + 5 + 16])), _bits(tokens, widths)))
    # The SDK pads to whole bytes, with a full zero byte when already whole.
    bits = np.concatenate((bits, np.zeros(8 - bits.size % 8, np.uint8)))
    return np.packbits(bits).tolist()


def _bits(values: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """The big-endian bits of each value in its width, concatenated."""
    longest = int(widths.max()) if widths.size else 0
    shifts = np.arange(longest - 1, -1, -1, dtype=np.int64)
    grid = (values[:, None].astype(np.int64) >> shifts) & 1
    keep = shifts[None, :] < widths[:, None]
    return grid[keep].astype(np.uint8)


def decode_brush(rle: Sequence[int], height: int, width: int) -> np.ndarray:
    """Decode Label Studio brush RLE to a boolean ``(height, width)`` mask."""
    data = _check_bytes(rle)
    if height < 1 or width < 1:
        raise MaskFormatError(f"brush RLE needs a positive height and width, got {height}x{width}")
    # The stream stores only the RGBA value count; check it before the SDK allocates it.
    num = int.from_bytes(bytes(data[:4]), "big")
    if num != height * width * 4:
        raise MaskFormatError(
            f"brush RLE holds {num} RGBA values, but a {height}x{width} mask needs {height * width * 4}"
        )
    # The 5 bits after the count hold the word size - 1; RGBA values are bytes (the SDK decodes
    # into uint8 and would overflow on a wider word).
    word = (data[4] >> 3) + 1
    if word > 8:
        raise MaskFormatError(f"brush RLE word size {word} is not supported (RGBA values are 8-bit)")
    try:
        flat = ls_brush.decode_rle(data)
    except (ValueError, IndexError) as exc:
        # A truncated stream runs out of bits inside the SDK's bit reader.
        raise MaskFormatError(f"brush RLE is truncated or malformed: {exc}") from exc
    return flat.reshape(height, width, 4)[:, :, 3] > 0


def _check_bytes(rle: Any) -> list[int]:
    if isinstance(rle, (str, bytes)) or not isinstance(rle, (Sequence, np.ndarray)):
        raise MaskFormatError(f"brush RLE must be a list of ints, got {type(rle).__name__}")
    data = list(rle)
    if len(data) < 7:  # 32-bit count, 5-bit word size and four 4-bit run sizes
        raise MaskFormatError(f"brush RLE is too short to hold its header ({len(data)} bytes)")
    if not all(isinstance(b, (int, np.integer)) and not isinstance(b, bool) and 0 <= b <= 255 for b in data):
        raise MaskFormatError("brush RLE must hold byte values (ints 0..255)")
    return [int(b) for b in data]


# Label Studio 1.23.2 saves a brush region whose page was not drawn on screen (a stroke from an
# autosaved draft, restored and never shown again before the save) as its strokes, ``touches``,
# without ``rle`` (BrushRegion.serialize with ``fast``, web/libs/editor/src/regions/BrushRegion.jsx).
# Each touch: ``relativePoints`` (x, y pairs in percent of the picture), ``relativeStrokeWidth``
# (percent of its width) and ``type`` ("add", or "eraser"); round ends and joins, like Konva's.
def decode_touches(touches: Sequence[Any], height: int, width: int,
                   base: np.ndarray | None = None) -> np.ndarray:
    """Label Studio brush ``touches`` drawn, in order, over ``base`` (or an empty mask)."""
    from PIL import Image, ImageDraw

    if height < 1 or width < 1:
        raise MaskFormatError(f"brush touches need a positive height and width, got {height}x{width}")
    img = Image.fromarray((np.zeros((height, width), bool) if base is None else base).astype(np.uint8) * 255)
    draw = ImageDraw.Draw(img)
    for touch in touches:
        if not isinstance(touch, dict):
            raise MaskFormatError("a brush touch must be an object")
        pts, size = touch.get("relativePoints"), touch.get("relativeStrokeWidth")
        if not isinstance(pts, list) or len(pts) < 2 or len(pts) % 2 \
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in [*pts, size]):
            raise MaskFormatError("a brush touch needs relativePoints (x, y pairs) and a relativeStrokeWidth")
        # (PIL puts pixel i at i; Label Studio paints pixel i for coordinates in [i, i + 1))
        xy = [(pts[i] * width / 100, pts[i + 1] * height / 100) for i in range(0, len(pts), 2)]
        # Label Studio keeps a pixel the anti-aliased stroke touches: half a pixel wider each side
        r = max(float(size) * width / 100, 1.0) / 2 + 0.5
        fill = 0 if touch.get("type") == "eraser" else 255
        if len(xy) > 1:
            draw.line(xy, fill=fill, width=round(2 * r), joint="curve")
        for x, y in (xy[0], xy[-1]):
            draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    return np.asarray(img) > 127
