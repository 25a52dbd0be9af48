"""Drive sam2's own SAM2VideoPredictor the way its README does: the reference for parity tests.

Every helper returns, per frame, what sam2 computed for the object: the video-size logits that
``propagate_in_video`` / ``add_new_*`` yield, the low-res logits (``pred_masks``) and the
object-score logits it stores for the frame. ``assert_same_frame`` compares one of our
``ObjectFrame`` results with it by value.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class RefFrame:
    """sam2's output for one object on one frame."""

    logits: torch.Tensor  # [H, W] video-size mask logits, as sam2 yields them
    low_res: torch.Tensor  # [1, 1, S/4, S/4] pred_masks, as sam2 stores them
    score: torch.Tensor  # [1, 1] object_score_logits


def _stored(state, obj_idx: int, frame_idx: int, temp: bool = False) -> dict:
    """The output sam2 keeps for (object, frame): the one its last call used and yielded."""
    if temp:  # add_new_points_or_box / add_new_mask keep theirs here until propagation
        for key in ("cond_frame_outputs", "non_cond_frame_outputs"):
            out = state["temp_output_dict_per_obj"][obj_idx][key].get(frame_idx)
            if out is not None:
                return out
    outputs = state["output_dict_per_obj"][obj_idx]
    out = outputs["cond_frame_outputs"].get(frame_idx)
    return out if out is not None else outputs["non_cond_frame_outputs"][frame_idx]


def _record(state, obj_idx: int, frame_idx: int, logits: torch.Tensor, temp: bool = False
            ) -> RefFrame:
    out = _stored(state, obj_idx, frame_idx, temp)
    return RefFrame(logits.clone(), out["pred_masks"].clone(), out["object_score_logits"].clone())


def max_differences(mine, ref: RefFrame) -> tuple[float, float, float]:
    """(video-size logits, low-res logits, object score): max abs difference of ours and sam2's."""
    def diff(a: torch.Tensor, b: torch.Tensor) -> float:
        return (a.float().cpu() - b.float().cpu()).abs().max().item()

    return (diff(mine.logits(), ref.logits), diff(mine.low_res_logits, ref.low_res),
            abs(mine.score - float(ref.score.float().reshape(-1)[0])))


def assert_same_frame(mine, ref: RefFrame, what: str) -> None:
    """Our ObjectFrame equals sam2's output bit for bit: logits at both sizes and object score.

    Both sides run the same sam2 modules on the same weights, the same (identically decoded and
    preprocessed) JPEG frames and the same prompts, in float32 on the CPU, in the same order of
    operations: measured, every difference is exactly 0.0, so nothing is tolerated. A planted
    bug of one float32 ulp in the logits fails here.
    """
    low_res = mine.low_res_logits
    assert low_res.shape == ref.low_res.shape, f"{what}: low-res shape"
    logits = mine.logits()
    assert logits.shape == ref.logits.shape, f"{what}: video-size shape"
    same = (torch.equal(logits, ref.logits.float().cpu())
            and torch.equal(low_res, ref.low_res.float().cpu())
            and mine.score == float(ref.score.float().reshape(-1)[0]))
    assert same, "{}: differs from sam2 (max abs diff: logits {:.3g}, low-res {:.3g}, " \
                 "object score {:.3g})".format(what, *max_differences(mine, ref))


def reference_track(predictor, frame_dir: str, prompts: list[tuple[int, np.ndarray]],
                    obj_id: int = 1, direction: str = "both") -> dict[int, RefFrame]:
    """sam2's output per frame for one object prompted with (frame, mask) pairs."""
    state = predictor.init_state(frame_dir)
    for frame_idx, mask in prompts:
        predictor.add_new_mask(state, frame_idx, obj_id, mask)
    obj_idx = state["obj_id_to_idx"][obj_id]
    out: dict[int, RefFrame] = {}
    if direction in ("both", "forward"):
        for frame_idx, _, masks in predictor.propagate_in_video(state):
            out[frame_idx] = _record(state, obj_idx, frame_idx, masks[0, 0])
    if direction in ("both", "backward"):
        start = None if direction == "both" else max(f for f, _ in prompts)
        for frame_idx, _, masks in predictor.propagate_in_video(state, start_frame_idx=start,
                                                                reverse=True):
            if frame_idx not in out:
                out[frame_idx] = _record(state, obj_idx, frame_idx, masks[0, 0])
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
                     labels=None, box=None, mask=None, clear_old: bool = True) -> RefFrame:
    """One ``add_new_points_or_box`` / ``add_new_mask`` call: sam2's output for the object."""
    if mask is not None:
        _, obj_ids, masks = predictor.add_new_mask(state, frame_idx, obj_id, mask)
    else:
        _, obj_ids, masks = predictor.add_new_points_or_box(
            state, frame_idx, obj_id, points=points, labels=labels, box=box,
            clear_old_points=clear_old)
    obj_idx = state["obj_id_to_idx"][obj_id]
    return _record(state, obj_idx, frame_idx, masks[list(obj_ids).index(obj_id), 0], temp=True)


def reference_propagate(predictor, state, direction: str = "both", obj_id: int = 1,
                        start: int | None = None) -> list[tuple[int, RefFrame]]:
    """(frame, sam2's output for ``obj_id``) in the order our session yields them.

    "both": forward from the default start (the earliest conditioning frame), then backward
    from the same frame, which sam2 yields again and our session does not. "forward" from the
    default start. "backward" from ``start`` (our session: the latest prompted frame).
    """
    out: list[tuple[int, RefFrame]] = []
    seen: set[int] = set()
    obj_idx = state["obj_id_to_idx"][obj_id]

    def run(**kwargs):
        for frame_idx, obj_ids, masks in predictor.propagate_in_video(state, **kwargs):
            if frame_idx not in seen:
                seen.add(frame_idx)
                logits = masks[list(obj_ids).index(obj_id), 0]
                out.append((frame_idx, _record(state, obj_idx, frame_idx, logits)))

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
