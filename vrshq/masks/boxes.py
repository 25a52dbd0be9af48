"""Bounding boxes of masks, in pixels and in Label Studio's percent coordinates.

Pixel boxes are ``(x0, y0, x1, y1)`` with x1 and y1 **exclusive**: a mask whose only
pixel is (row r, column c) has the box ``(c, r, c + 1, r + 1)``.

Percent boxes are Label Studio's ``{"x", "y", "width", "height"}``: (x, y) is the
top-left corner in percent of the frame width and height, and width/height are the
box size in percent, so a single pixel is ``100 / W`` wide and ``100 / H`` high.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vrshq.masks.rle import PixelBox, ensure_mask

PercentBox = dict[str, float]
"""``{"x", "y", "width", "height"}`` in percent of the frame width/height."""


def mask_to_box(mask: Any) -> PixelBox | None:
    """Pixel box ``(x0, y0, x1, y1)`` (x1, y1 exclusive) of a mask; ``None`` when it is empty."""
    m = ensure_mask(mask)
    cols = np.flatnonzero(m.any(axis=0))
    if cols.size == 0:
        return None
    rows = np.flatnonzero(m.any(axis=1))
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def box_to_percent(box: PixelBox, height: int, width: int) -> PercentBox:
    """Convert a pixel box (x1, y1 exclusive) in an HxW frame to a Label Studio percent box."""
    x0, y0, x1, y1 = box
    return {
        "x": 100.0 * x0 / width,
        "y": 100.0 * y0 / height,
        "width": 100.0 * (x1 - x0) / width,
        "height": 100.0 * (y1 - y0) / height,
    }


def mask_to_percent_box(mask: Any) -> PercentBox | None:
    """Label Studio percent box of a mask; ``None`` when it is empty."""
    m = ensure_mask(mask)
    box = mask_to_box(m)
    return None if box is None else box_to_percent(box, m.shape[0], m.shape[1])
