"""The VRS-HQ benchmark's functions on a 12-frame video: ours equals the official procedure."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bench import vrshq_bench as vb

FRAMES = 12


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return vb.tiny_inputs(tmp_path_factory.mktemp("vrshq-bench"), FRAMES, 128, width=160, height=120)


def _check(ours: dict, ref: dict, keyframe: int | None = None) -> None:
    result = vb.compare(ours, ref)
    assert result["same_keyframe"], (ours["keyframe"], ref["keyframe"])
    if keyframe is not None:
        assert ours["keyframe"] == keyframe
    assert result["same_frames"] and sorted(ours["masks"]) == list(range(FRAMES))
    assert result["identical_masks"], result["min_iou"]
    assert result["max_object_score_diff"] == 0.0
    # ours: one decode and one encoder call per frame; the reference re-encodes per state
    assert ours["encoder_calls"] == FRAMES and ours["frames_decoded"] == FRAMES
    assert ref["encoder_calls"] > FRAMES


def test_same_keyframe_and_masks_as_the_official_procedure(inputs):
    ours = vb.run_ours(inputs)
    ref = vb.run_reference(inputs, "sample")
    _check(ours, ref)
    assert ref["frames_decoded"] == FRAMES
    assert ref["states"] == len(inputs.grid) + 1
    # every candidate state encodes frame 0 and its candidate, then the inference state
    assert ref["encoder_calls"] >= 2 * len(inputs.grid) - 1 + FRAMES


def test_middle_keyframe_runs_both_isolated_passes(inputs):
    """A lambda that forces a middle candidate: forward, reset, re-add, reverse."""
    k = len(inputs.grid) // 2
    lam = torch.zeros(len(inputs.grid))
    lam[k] = 10.0
    middle = dataclasses.replace(inputs, lam=lam)
    keyframe = inputs.grid[k]
    assert 0 < keyframe < FRAMES - 1
    ours = vb.run_ours(middle)
    ref = vb.run_reference(middle, "state")
    _check(ours, ref, keyframe)
    assert ref["frames_decoded"] == ref["states"] * FRAMES


def test_compare_sees_a_different_mask(inputs):
    ours = vb.run_ours(inputs)
    ref = {**ours, "masks": dict(ours["masks"])}
    f = max(ref["masks"])
    ref["masks"][f] = ~ref["masks"][f]
    result = vb.compare(ours, ref)
    assert result["same_keyframe"] and not result["identical_masks"] and result["min_iou"] < 1.0
