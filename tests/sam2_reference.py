"""Drive sam2's own SAM2VideoPredictor the way its README does: the reference for parity tests."""

from __future__ import annotations

import numpy as np
import torch


def reference_track(predictor, frame_dir: str, prompts: list[tuple[int, np.ndarray]],
                    obj_id: int = 1, direction: str = "both") -> dict[int, torch.Tensor]:
    """Full-size mask logits per frame for one object prompted with (frame, mask) pairs."""
    state = predictor.init_state(frame_dir)
    for frame_idx, mask in prompts:
        predictor.add_new_mask(state, frame_idx, obj_id, mask)
    out: dict[int, torch.Tensor] = {}
    if direction in ("both", "forward"):
        for frame_idx, _, masks in predictor.propagate_in_video(state):
            out[frame_idx] = masks[0, 0].clone()
    if direction in ("both", "backward"):
        start = None if direction == "both" else max(f for f, _ in prompts)
        for frame_idx, _, masks in predictor.propagate_in_video(state, start_frame_idx=start,
                                                                reverse=True):
            out.setdefault(frame_idx, masks[0, 0].clone())
    return out
