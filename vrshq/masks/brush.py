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
