"""Label Studio brush RLE (the ``brushlabels`` ``value.rle`` list), via label-studio-sdk."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from label_studio_sdk.converter import brush as ls_brush

from vrshq.errors import MaskFormatError
from vrshq.masks.rle import ensure_mask


def encode_brush(mask: Any) -> list[int]:
    """Encode a boolean HxW mask as Label Studio brush RLE (a list of byte values)."""
    m = ensure_mask(mask)
    # 0/255 like Label Studio's own examples: the editor draws the alpha channel, and
    # 0/1 values would render almost transparent.
    return [int(b) for b in ls_brush.mask2rle(m.astype(np.uint8) * 255)]


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
