"""Masks at every boundary: COCO RLE, Label Studio brush RLE, boxes, palette PNGs, tracks.

Masks are boolean HxW numpy arrays at the video's original size; frame indices are
0-based except in Label Studio ``videorectangle`` sequences (see :mod:`.labelstudio`).
"""

from vrshq.masks.boxes import PercentBox, box_to_percent, mask_to_box, mask_to_percent_box
from vrshq.masks.brush import decode_brush, decode_touches, encode_brush
from vrshq.masks.labelstudio import (
    boxes_to_sequence,
    simplify_keyframes,
    track_to_videorectangle,
    videorectangle_to_boxes,
)
from vrshq.masks.palette import (
    DAVIS_PALETTE,
    labels_from_masks,
    masks_from_labels,
    read_palette_folder,
    read_palette_png,
    write_palette_folder,
    write_palette_png,
)
from vrshq.masks.rle import (
    CocoRle,
    PixelBox,
    decode_rle,
    encode_rle,
    ensure_mask,
    normalize_rle,
    rle_area,
    rle_size,
    rle_to_bbox,
)
from vrshq.masks.track import Track, TrackSet

__all__ = [
    "DAVIS_PALETTE",
    "CocoRle",
    "PercentBox",
    "PixelBox",
    "Track",
    "TrackSet",
    "box_to_percent",
    "boxes_to_sequence",
    "decode_brush",
    "decode_touches",
    "decode_rle",
    "encode_brush",
    "encode_rle",
    "ensure_mask",
    "labels_from_masks",
    "mask_to_box",
    "mask_to_percent_box",
    "masks_from_labels",
    "normalize_rle",
    "read_palette_folder",
    "read_palette_png",
    "rle_area",
    "rle_size",
    "rle_to_bbox",
    "simplify_keyframes",
    "track_to_videorectangle",
    "videorectangle_to_boxes",
    "write_palette_folder",
    "write_palette_png",
]
