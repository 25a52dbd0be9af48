"""The engine reproduces sam2's own video predictor on the same weights, frames and prompts.

Every frame of every object is compared by value with sam2's ``SAM2VideoPredictor``
(tests/sam2_reference.py ``assert_same_frame``): the video-size logits, the low-res logits and
the object-score logit must be bit-identical (measured difference 0.0; see that function for
why no tolerance is needed). Mask prompts on the default (non-isolated) passes are the path the
sam2 plugin's mask corrections take, and these tests are the only value check of it.

Both sides run without hole filling (tests.engine_fixtures.PARITY: sam2 cannot fill without
its CUDA extension); tests/test_hole_filling.py covers the filling.
"""

from __future__ import annotations

import numpy as np
import torch

from tests.engine_fixtures import PARITY
from tests.sam2_reference import RefFrame, assert_same_frame, reference_track
from vrshq.engine.session import ObjectFrame, TrackingSession
from vrshq.video.reader import open_video


def _collect(session: TrackingSession, direction: str = "both") -> dict[tuple[int, int], ObjectFrame]:
    out = {}
    for result in session.propagate(direction):
        for obj_id, of in result.objects.items():
            assert (obj_id, result.frame_idx) not in out
            out[(obj_id, result.frame_idx)] = of
    return out


def _present(gt: np.ndarray, obj_id: int) -> np.ndarray:
    # Frames where the object is clearly visible (a sliver at the border can vanish at 128 px).
    return (gt == obj_id).sum(axis=(1, 2)) >= 200


def _assert_same(ours: dict[int, ObjectFrame], ref: dict[int, RefFrame], gt_present: np.ndarray):
    assert sorted(ours) == sorted(ref)
    for frame_idx in ref:
        assert_same_frame(ours[frame_idx], ref[frame_idx], f"frame {frame_idx}")
    # Equal to sam2 and still tracking something: wherever the object is in the ground truth,
    # the mask is non-empty (the tiny random model cannot tell absence, so no converse).
    for frame_idx in ref:
        if gt_present[frame_idx]:
            assert (ours[frame_idx].logits() > 0).any(), f"frame {frame_idx}: empty mask"


def test_mask_on_frame_zero(tiny_sam2_predictor, jpeg_clip):
    folder, gt = jpeg_clip
    ref = reference_track(tiny_sam2_predictor, str(folder), [(0, gt[0] == 1)], direction="forward")
    with TrackingSession(tiny_sam2_predictor, open_video(folder), config=PARITY) as session:
        session.add_mask(1, 0, gt[0] == 1)
        ours = {f: v for (o, f), v in _collect(session, "forward").items()}
    assert len(ours) == len(gt)
    _assert_same(ours, ref, _present(gt, 1))


def test_middle_frame_both_directions(tiny_sam2_predictor, jpeg_clip):
    folder, gt = jpeg_clip
    k = len(gt) // 2
    ref = reference_track(tiny_sam2_predictor, str(folder), [(k, gt[k] == 1)])
    with TrackingSession(tiny_sam2_predictor, open_video(folder), config=PARITY) as session:
        session.add_mask(1, k, gt[k] == 1)
        ours = {f: v for (o, f), v in _collect(session).items()}
        encoder_calls = session.features.stats.encoder_calls
    assert len(ours) == len(gt)
    _assert_same(ours, ref, _present(gt, 1))
    # The reverse pass reuses the forward pass's features: one encoder call per frame.
    assert encoder_calls == len(gt)


def test_two_objects_on_different_frames(tiny_sam2_predictor, jpeg_clip):
    folder, gt = jpeg_clip
    first = 0
    # Object 2 leaves the frame mid-clip: prompt it where it is back and fully visible.
    second = len(gt) // 2 + int(np.argmax((gt[len(gt) // 2:] == 2).sum(axis=(1, 2))))
    with TrackingSession(tiny_sam2_predictor, open_video(folder), config=PARITY) as session:
        session.add_mask(1, first, gt[first] == 1)
        session.add_mask(2, second, gt[second] == 2)
        ours = _collect(session)
    assert sorted(ours) == sorted((o, f) for o in (1, 2) for f in range(len(gt)))
    for obj_id, frame_idx in ((1, first), (2, second)):
        ref = reference_track(tiny_sam2_predictor, str(folder), [(frame_idx, gt[frame_idx] == obj_id)])
        mine = {f: v for (o, f), v in ours.items() if o == obj_id}
        _assert_same(mine, ref, _present(gt, obj_id))


def test_correction_on_later_frame(tiny_sam2_predictor, jpeg_clip):
    folder, gt = jpeg_clip
    a, k = 2, (2 * len(gt)) // 3
    correction = gt[k] == 1
    # The reference gets both prompts from the start (a correction is a conditioning frame).
    ref = reference_track(tiny_sam2_predictor, str(folder), [(a, gt[a] == 1), (k, correction)])
    with TrackingSession(tiny_sam2_predictor, open_video(folder), config=PARITY) as session:
        session.add_mask(1, a, gt[a] == 1)
        first = {f: v.logits() for (o, f), v in _collect(session).items()}
        calls_before = session.features.stats.encoder_calls
        session.add_mask(1, k, correction)
        corrected = {f: v for (o, f), v in _collect(session).items()}
        assert session.features.stats.encoder_calls == calls_before, "a correction re-ran the encoder"
    _assert_same(corrected, ref, _present(gt, 1))
    # The correction is kept on its frame and changes the track (it is not silently dropped).
    kept = corrected[k].logits().numpy() > 0
    iou = (kept & correction).sum() / max(1, (kept | correction).sum())
    assert iou > 0.8, f"corrected frame IoU with the correction is {iou:.2f}"
    assert any(not torch.equal(first[f], corrected[f].logits()) for f in first)
