"""VRS-HQ's anchor-aligned frame grid: the <= 11 frames the MLLM sees and TKS scores.

Follows ``sample_frames`` of upstream ``model/VISA_multiseg_cliptree_bf16.py`` (L182-195):
stride = ceil(T / 11), start = anchor mod stride, frames start, start + stride, ... < T.
The anchor is always on the grid, and T <= 11 gives every frame.
"""

from __future__ import annotations

import math

MAX_FRAMES = 11


def sample_frames(anchor: int, num_frames: int, max_frames: int = MAX_FRAMES) -> list[int]:
    """The ascending frame indices of the grid through ``anchor`` (stride ceil(T/max_frames))."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    if max_frames < 1:
        raise ValueError(f"max_frames must be positive, got {max_frames}")
    if not 0 <= anchor < num_frames:
        raise ValueError(f"anchor {anchor} is outside the video (0..{num_frames - 1})")
    stride = math.ceil(num_frames / max_frames)
    return list(range(anchor % stride, num_frames, stride))
