"""Which passes propagate runs: eager argument checks, resumable directions, spill cleanup."""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest
import torch

from tests.engine_fixtures import PARITY
from tests.sam2_reference import assert_same_frame, reference_prompt, reference_propagate
from vrshq.engine import EngineConfig, TrackingSession
from vrshq.engine.store import DiskSpill
from vrshq.errors import PromptError
from vrshq.video.reader import open_video


def test_bad_arguments_fail_at_the_call_not_at_iteration(tiny_sam2_predictor, jpeg_clip):
    folder, gt = jpeg_clip
    with TrackingSession(tiny_sam2_predictor, open_video(folder)) as session:
        session.add_mask(1, 0, gt[0] == 1)
        with pytest.raises(PromptError, match="direction must be"):
            session.propagate("sideways")
        with pytest.raises(PromptError, match="no object 7"):
            session.propagate(obj_ids=[7])


def test_forward_then_backward_keeps_the_forward_pass(tiny_sam2_predictor, jpeg_clip):
    folder, gt = jpeg_clip
    k = len(gt) // 2
    with TrackingSession(tiny_sam2_predictor, open_video(folder)) as both:
        both.add_mask(1, k, gt[k] == 1)
        reference = {r.frame_idx: r.objects[1].logits() for r in both.propagate("both")}
    with TrackingSession(tiny_sam2_predictor, open_video(folder)) as session:
        session.add_mask(1, k, gt[k] == 1)
        forward = {r.frame_idx: r.objects[1].logits() for r in session.propagate("forward")}
        assert sorted(forward) == list(range(k, len(gt)))
        # A second forward request has nothing left to do.
        assert list(session.propagate("forward")) == []
        # "both" now runs only the backward pass it still lacks, from the same prompt.
        backward = {r.frame_idx: r.objects[1].logits() for r in session.propagate("both")}
        assert sorted(backward) == list(range(0, k))
        calls = session.features.stats.encoder_calls
    merged = {**forward, **backward}
    assert sorted(merged) == sorted(reference)
    for f in reference:
        assert torch.equal(merged[f], reference[f]), f"frame {f} differs from one 'both' run"
        if (gt[f] == 1).sum() >= 200:
            assert (merged[f] > 0).any()
    assert calls == len(gt)


def test_a_new_prompt_retracks_only_that_object(tiny_sam2_predictor, jpeg_clip):
    folder, gt = jpeg_clip
    with TrackingSession(tiny_sam2_predictor, open_video(folder)) as session:
        session.add_mask(1, 0, gt[0] == 1)
        session.add_mask(2, 0, gt[0] == 2)
        list(session.propagate())
        session.add_mask(2, 20, gt[20] == 2)
        seen = {obj for r in session.propagate() for obj in r.objects}
        assert seen == {2}


def test_an_unclosed_spill_file_is_removed_when_collected(tmp_path):
    spill = DiskSpill(str(tmp_path))
    spill.put("a", (torch.arange(6, dtype=torch.float32),))
    path = spill.path
    assert os.path.exists(path)
    del spill
    gc.collect()
    assert not os.path.exists(path)


def test_session_spill_files_live_in_the_cache_dir(tiny_sam2_predictor, jpeg_clip, tmp_path):
    folder, gt = jpeg_clip
    config = EngineConfig(feature_budget_bytes=0, state_budget_bytes=0, cache_dir=str(tmp_path))
    session = TrackingSession(tiny_sam2_predictor, open_video(folder), config=config)
    session.add_mask(1, 3, gt[3] == 1)
    masks = [r.objects[1].mask() for r in session.propagate()]
    assert len(masks) == len(gt) and all(m.any() for m in masks[:3])
    assert len(list(tmp_path.iterdir())) == 2  # features and tracking state
    session.close()
    assert list(tmp_path.iterdir()) == []
    assert np.asarray(masks).dtype == bool


def test_a_model_space_mask_equals_the_same_mask_given_at_video_size(tiny_sam2_predictor, jpeg_clip):
    folder, gt = jpeg_clip
    k = 5
    with TrackingSession(tiny_sam2_predictor, open_video(folder), resize="vrshq") as session:
        model_mask = session.transform.mask_to_model(gt[k] == 1)[0, 0]
        session.add_model_mask(1, k, model_mask)
        via_model = {r.frame_idx: r.objects[1].logits() for r in session.propagate()}
    with TrackingSession(tiny_sam2_predictor, open_video(folder), resize="vrshq") as session:
        session.add_mask(1, k, gt[k] == 1)
        via_video = {r.frame_idx: r.objects[1].logits() for r in session.propagate()}
    assert sorted(via_model) == sorted(via_video) == list(range(len(gt)))
    for f in via_video:
        assert torch.equal(via_model[f], via_video[f])
    assert (via_model[k] > 0).any()
    with TrackingSession(tiny_sam2_predictor, open_video(folder)) as session:
        with pytest.raises(PromptError, match="model-space mask is 128x128"):
            session.add_model_mask(1, 0, torch.ones(64, 64))


def test_isolated_passes_equal_sam2_reset_between_directions(tiny_sam2_predictor, jpeg_clip):
    # VRS-HQ's MDP: forward from the keyframe, then reset_state, re-add the same mask and
    # propagate backward (official cliptree L535-605): the backward pass has no forward memory.
    folder, gt = jpeg_clip
    k = len(gt) // 2
    prompt = gt[k] == 1
    predictor = tiny_sam2_predictor
    state = predictor.init_state(str(folder))
    reference_prompt(predictor, state, k, mask=prompt)
    ref = dict(reference_propagate(predictor, state, "forward"))
    predictor.reset_state(state)
    reference_prompt(predictor, state, k, mask=prompt)
    for f, out in reference_propagate(predictor, state, "backward", start=k):
        ref.setdefault(f, out)  # the keyframe: both passes yield its mask prompt
    with TrackingSession(predictor, open_video(folder), isolated_passes=True,
                         config=PARITY) as session:
        session.add_mask(1, k, prompt)
        ours = {r.frame_idx: r.objects[1] for r in session.propagate()}
    with TrackingSession(predictor, open_video(folder), config=PARITY) as session:
        session.add_mask(1, k, prompt)
        shared = {r.frame_idx: r.objects[1].logits() for r in session.propagate()}
    assert sorted(ours) == sorted(ref) == list(range(len(gt)))
    for f in ref:
        # bit-identical, as every parity test (tests/sam2_reference.py assert_same_frame)
        assert_same_frame(ours[f], ref[f], f"frame {f}")
        if (gt[f] == 1).sum() >= 200:
            assert (ours[f].logits() > 0).any()
    # Without isolation the backward pass reads forward memories and differs just before k.
    assert not torch.equal(shared[k - 1], ours[k - 1].logits())
