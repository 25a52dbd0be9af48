"""DAVIS / YouTube-VOS label maps: palette PNGs whose pixel value is the object id.

A label map is a uint8 HxW array: 0 is background and 1..255 are object ids. A folder
of them holds one ``{frame:05d}.png`` per annotated frame, with 0-based frame indices.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vrshq.errors import MaskFormatError
from vrshq.masks.rle import ensure_mask


def _voc_colormap() -> np.ndarray:
    """The PASCAL VOC colormap that DAVIS uses: the bits of the index spread over R, G, B."""
    cmap = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        r = g = b = 0
        c = index
        for bit in range(8):
            # Low bits of the index become the high bits of each channel, so ids 1..7
            # get well-separated, saturated colours.
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        cmap[index] = (r, g, b)
    cmap.setflags(write=False)
    return cmap


DAVIS_PALETTE: np.ndarray = _voc_colormap()
"""Read-only (256, 3) uint8 array: 0 black, 1 (128, 0, 0), 2 (0, 128, 0), 3 (128, 128, 0), ..."""

_FRAME_NAME = re.compile(r"^(\d+)\.png$", re.IGNORECASE)


def write_palette_png(path: str | os.PathLike, label_map: Any) -> None:
    """Write a uint8 HxW label map as a mode-"P" PNG with the DAVIS palette."""
    labels = _check_label_map(label_map)
    image = Image.fromarray(labels)
    # putpalette turns the "L" image into a "P" image with the same pixel values.
    image.putpalette(DAVIS_PALETTE.tobytes())
    image.save(path, format="PNG")


def read_palette_png(path: str | os.PathLike) -> np.ndarray:
    """Read a palette ("P") or greyscale ("L") PNG as a uint8 HxW label map."""
    with Image.open(path) as image:
        if image.mode not in ("P", "L"):
            raise MaskFormatError(
                f"{path}: a label map must be a palette (P) or greyscale (L) image whose pixel "
                f"values are object ids, got mode {image.mode}"
            )
        # np.asarray of a P image gives the palette indices, which are the object ids.
        return np.array(image, dtype=np.uint8)


def labels_from_masks(masks: Mapping[int, Any], hw: tuple[int, int]) -> np.ndarray:
    """Paint ``{obj_id: mask}`` into a uint8 label map; on overlap the higher id wins."""
    labels = np.zeros(tuple(hw), dtype=np.uint8)
    # Ascending id order makes the result independent of the mapping's order.
    for obj_id in sorted(masks):
        if isinstance(obj_id, bool) or not isinstance(obj_id, (int, np.integer)) or not 1 <= obj_id <= 255:
            raise MaskFormatError(f"object id {obj_id!r} does not fit a palette label map (1..255)")
        labels[ensure_mask(masks[obj_id], tuple(hw))] = obj_id
    return labels


def masks_from_labels(label_map: Any) -> dict[int, np.ndarray]:
    """Split a label map into ``{obj_id: boolean mask}`` for every non-zero id present."""
    labels = _check_label_map(label_map)
    return {int(obj_id): labels == obj_id for obj_id in np.unique(labels) if obj_id != 0}


def write_palette_folder(directory: str | os.PathLike, frames: Iterable[tuple[int, Any]]) -> list[Path]:
    """Write ``(frame_idx, label_map)`` pairs as ``{frame_idx:05d}.png``; return the paths."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    written = []
    for frame_idx, label_map in frames:
        if isinstance(frame_idx, bool) or not isinstance(frame_idx, (int, np.integer)) or frame_idx < 0:
            raise MaskFormatError(f"frame index must be a non-negative int, got {frame_idx!r}")
        path = root / f"{int(frame_idx):05d}.png"
        write_palette_png(path, label_map)
        written.append(path)
    return written


def read_palette_folder(directory: str | os.PathLike) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(frame_idx, label_map)`` for every ``<digits>.png`` in a folder, by frame."""
    root = Path(directory)
    if not root.is_dir():
        raise MaskFormatError(f"{root}: not a folder of label-map PNGs")
    # The folder is listed and checked now, so a bad name fails here, not mid-iteration.
    by_frame: dict[int, Path] = {}
    for path in root.iterdir():
        if path.suffix.lower() != ".png":
            continue
        match = _FRAME_NAME.match(path.name)
        if match is None:
            raise MaskFormatError(f"{path}: label-map PNGs must be named by frame index, like 00012.png")
        frame_idx = int(match.group(1))
        if frame_idx in by_frame:
            raise MaskFormatError(f"{root}: both {by_frame[frame_idx].name} and {path.name} name frame {frame_idx}")
        by_frame[frame_idx] = path
    return ((frame_idx, read_palette_png(by_frame[frame_idx])) for frame_idx in sorted(by_frame))


def _check_label_map(label_map: Any) -> np.ndarray:
    arr = np.asarray(label_map)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise MaskFormatError(f"a label map must be a 2-D (H, W) array, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise MaskFormatError(f"a label map must be uint8 (object ids 0..255), got dtype {arr.dtype}")
    return arr
