"""Drive sam2's own SAM2VideoPredictor the way its README does: the reference for parity tests."""

from __future__ import annotations

import contextlib

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


# ---------------------------------------------------------------- step-by-step driving
# The helpers below drive one object through sam2's predictor prompt by prompt, so tests can
# mirror a TrackingSession call for call (points, boxes, corrections, one-way passes).


@contextlib.contextmanager
def corrections_as_cond(predictor):
    """Run sam2 with ``add_all_frames_to_correct_as_cond=True`` (our engine's semantics).

    The predictor fixture is shared by the whole test session, so the attribute is restored
    on the way out whatever happens.
    """
    old = predictor.add_all_frames_to_correct_as_cond
    predictor.add_all_frames_to_correct_as_cond = True
    try:
        yield predictor
    finally:
        predictor.add_all_frames_to_correct_as_cond = old


def reference_prompt(predictor, state, frame_idx: int, obj_id: int = 1, *, points=None,
                     labels=None, box=None, mask=None, clear_old: bool = True) -> torch.Tensor:
    """One ``add_new_points_or_box`` / ``add_new_mask`` call: the object's video-size logits."""
    if mask is not None:
        _, obj_ids, masks = predictor.add_new_mask(state, frame_idx, obj_id, mask)
    else:
        _, obj_ids, masks = predictor.add_new_points_or_box(
            state, frame_idx, obj_id, points=points, labels=labels, box=box,
            clear_old_points=clear_old)
    return masks[list(obj_ids).index(obj_id), 0].clone()


def reference_propagate(predictor, state, direction: str = "both", obj_id: int = 1,
                        start: int | None = None) -> list[tuple[int, torch.Tensor]]:
    """(frame, video-size logits of ``obj_id``) in the order our session yields them.

    "both": forward from the default start (the earliest conditioning frame), then backward
    from the same frame, which sam2 yields again and our session does not. "forward" from the
    default start. "backward" from ``start`` (our session: the latest prompted frame).
    """
    out: list[tuple[int, torch.Tensor]] = []
    seen: set[int] = set()

    def run(**kwargs):
        for frame_idx, obj_ids, masks in predictor.propagate_in_video(state, **kwargs):
            if frame_idx not in seen:
                seen.add(frame_idx)
                out.append((frame_idx, masks[list(obj_ids).index(obj_id), 0].clone()))

    if direction in ("both", "forward"):
        run()
    if direction == "both":
        run(reverse=True)
    if direction == "backward":
        run(start_frame_idx=start, reverse=True)
    return out


def drop_non_cond_outputs(state) -> None:
    """Forget every tracked (non-conditioning) output, keeping prompts and prompted frames.

    sam2 re-propagates over its old outputs: a forward pass from a conditioning frame reads
    the memories and object pointers that the previous backward pass left on the frames
    before it. Our session re-tracks a corrected object from scratch, which is this.
    """
    for obj_output in state["output_dict_per_obj"].values():
        obj_output["non_cond_frame_outputs"].clear()
