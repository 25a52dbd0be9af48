"""VRS-HQ's frame grid, projection MLP layout, TDA and TKS score, on hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch

from vrshq.model.frames import sample_frames
from vrshq.model.projection import TextHiddenFcs
from vrshq.model.tda import (ALPHA, keyframe_scores, select_keyframe,
                             temporal_dynamic_aggregation)

# ------------------------------------------------------------------ sample_frames


@pytest.mark.parametrize("anchor", [0, 2, 4])
def test_short_video_gives_every_frame(anchor):
    assert sample_frames(anchor, 5) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("anchor", [0, 5, 10])
def test_eleven_frames_gives_every_frame(anchor):
    assert sample_frames(anchor, 11) == list(range(11))


def test_twelve_frames_gives_six():
    # stride ceil(12/11) = 2; start = anchor mod 2
    assert sample_frames(0, 12) == [0, 2, 4, 6, 8, 10]
    assert sample_frames(7, 12) == [1, 3, 5, 7, 9, 11]
    assert sample_frames(11, 12) == [1, 3, 5, 7, 9, 11]


def test_hundred_frames_gives_ten():
    # stride ceil(100/11) = 10
    assert sample_frames(0, 100) == list(range(0, 100, 10))
    assert sample_frames(37, 100) == [7, 17, 27, 37, 47, 57, 67, 77, 87, 97]
    assert sample_frames(99, 100) == list(range(9, 100, 10))


@pytest.mark.parametrize("num_frames", [1, 5, 11, 12, 13, 23, 100, 121, 122, 1000])
def test_grid_properties(num_frames):
    stride = math.ceil(num_frames / 11)
    for anchor in sorted({0, num_frames // 3, num_frames // 2, num_frames - 1}):
        frames = sample_frames(anchor, num_frames)
        assert anchor in frames
        # every stride-th frame from anchor mod stride to the end: never more than 11
        assert len(frames) == math.ceil((num_frames - anchor % stride) / stride)
        assert len(frames) in range(1, 12)
        assert all(0 <= f < num_frames for f in frames)
        assert all(b - a == stride for a, b in zip(frames, frames[1:]))
        assert frames[0] < stride and frames[-1] + stride >= num_frames


def test_sample_frames_rejects_bad_arguments():
    with pytest.raises(ValueError):
        sample_frames(5, 5)
    with pytest.raises(ValueError):
        sample_frames(-1, 5)
    with pytest.raises(ValueError):
        sample_frames(0, 0)


# ------------------------------------------------------------------ projection


def test_projection_key_layout_matches_official():
    parent = torch.nn.Module()
    parent.text_hidden_fcs = TextHiddenFcs(hidden_size=16, out_dim=8)
    keys = list(parent.state_dict())
    assert keys == ["text_hidden_fcs.0.0.weight", "text_hidden_fcs.0.0.bias",
                    "text_hidden_fcs.0.2.weight", "text_hidden_fcs.0.2.bias"]
    sd = parent.state_dict()
    assert sd["text_hidden_fcs.0.0.weight"].shape == (16, 16)
    assert sd["text_hidden_fcs.0.2.weight"].shape == (8, 16)
    seq = parent.text_hidden_fcs[0]
    assert isinstance(seq[1], torch.nn.ReLU) and isinstance(seq[3], torch.nn.Dropout)
    assert seq[3].p == 0.0


def test_projection_forward_is_linear_relu_linear():
    torch.manual_seed(0)
    fcs = TextHiddenFcs(hidden_size=6, out_dim=4)
    h = torch.randn(3, 5, 6)
    l1, l2 = fcs[0][0], fcs[0][2]
    expected = l2(torch.relu(l1(h)))
    out = fcs(h)
    assert out.shape == (3, 5, 4)
    torch.testing.assert_close(out, expected)
    fcs.train()
    torch.testing.assert_close(fcs(h), expected)  # dropout 0 is a no-op in training too


def test_projection_loads_official_style_state_dict():
    src = TextHiddenFcs(hidden_size=6, out_dim=4)
    official = {f"model.text_hidden_fcs.{k}": v for k, v in src.state_dict().items()}
    dst = TextHiddenFcs(hidden_size=6, out_dim=4)
    prefix = "model.text_hidden_fcs."
    dst.load_state_dict({k[len(prefix):]: v for k, v in official.items()}, strict=True)
    h = torch.randn(2, 6)
    torch.testing.assert_close(dst(h), src(h))


# ------------------------------------------------------------------ TDA


def test_tda_hand_computed_cosines_one_zero_minus_one():
    h_tak = torch.tensor([1.0, 0.0])
    h_seg = torch.tensor([[2.0, 0.0],    # cos = 1
                          [0.0, 3.0],    # cos = 0
                          [-1.0, 0.0]])  # cos = -1
    fused, lam = temporal_dynamic_aggregation(h_seg, h_tak, alpha=0.1)
    # lam = softmax([1, 0, -1]) = [e, 1, 1/e] / (e + 1 + 1/e)
    e = math.e
    z = e + 1.0 + 1.0 / e  # 4.0861613...
    lam_expected = torch.tensor([e / z, 1.0 / z, (1.0 / e) / z])
    torch.testing.assert_close(lam, lam_expected)
    torch.testing.assert_close(lam, torch.tensor([0.66524096, 0.24472847, 0.09003057]))
    # sum_i lam_i h_seg_i = [2 lam0 - lam2, 3 lam1]
    agg = torch.tensor([2 * e / z - (1 / e) / z, 3.0 / z])
    torch.testing.assert_close(fused, h_tak + 0.1 * agg)
    torch.testing.assert_close(fused, torch.tensor([1.12404514, 0.07341854]))


def test_tda_two_orthogonal_frames():
    h_tak = torch.tensor([0.0, 2.0])
    h_seg = torch.tensor([[0.0, 1.0], [5.0, 0.0]])  # cos 1 and 0
    fused, lam = temporal_dynamic_aggregation(h_seg, h_tak, alpha=0.5)
    l0 = math.e / (math.e + 1.0)  # 0.7310586
    torch.testing.assert_close(lam, torch.tensor([l0, 1 - l0]))
    torch.testing.assert_close(fused, torch.tensor([0.5 * 5.0 * (1 - l0), 2.0 + 0.5 * l0]))


def test_tda_alpha_zero_returns_h_tak_and_default_alpha():
    h_seg = torch.randn(4, 8)
    h_tak = torch.randn(8)
    fused, lam = temporal_dynamic_aggregation(h_seg, h_tak, alpha=0.0)
    torch.testing.assert_close(fused, h_tak)
    assert lam.shape == (4,)
    torch.testing.assert_close(lam.sum(), torch.tensor(1.0))
    assert ALPHA == 0.1
    fused_default, _ = temporal_dynamic_aggregation(h_seg, h_tak)
    torch.testing.assert_close(fused_default, h_tak + 0.1 * (lam[:, None] * h_seg).sum(0))


def test_tda_scale_invariance_of_lambda():
    h_seg = torch.randn(5, 8)
    h_tak = torch.randn(8)
    _, lam = temporal_dynamic_aggregation(h_seg, h_tak)
    _, lam_scaled = temporal_dynamic_aggregation(h_seg * 3.0, h_tak * 0.5)
    torch.testing.assert_close(lam, lam_scaled)


def test_tda_dtype_and_gradients():
    h_seg = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    h_tak = torch.randn(8, dtype=torch.float64, requires_grad=True)
    fused, lam = temporal_dynamic_aggregation(h_seg, h_tak)
    assert fused.dtype == torch.float64 and lam.dtype == torch.float64
    assert torch.autograd.gradcheck(
        lambda a, b: temporal_dynamic_aggregation(a, b, alpha=0.1)[0], (h_seg, h_tak))
    assert torch.autograd.gradcheck(
        lambda a, b: temporal_dynamic_aggregation(a, b, alpha=0.1)[1], (h_seg, h_tak))
    bf = temporal_dynamic_aggregation(h_seg.detach().bfloat16(), h_tak.detach().bfloat16())
    assert bf[0].dtype == torch.bfloat16 and bf[1].dtype == torch.bfloat16


def test_tda_rejects_bad_shapes():
    with pytest.raises(ValueError):
        temporal_dynamic_aggregation(torch.randn(8), torch.randn(8))
    with pytest.raises(ValueError):
        temporal_dynamic_aggregation(torch.randn(3, 8), torch.randn(7))
    fused, _ = temporal_dynamic_aggregation(torch.randn(3, 8), torch.randn(1, 8))
    assert fused.shape == (8,)


# ------------------------------------------------------------------ TKS score


def test_keyframe_scores_hand_computed():
    logits = torch.tensor([0.0, math.log(3.0)])  # softmax = [1/4, 3/4]
    lam = torch.tensor([0.6, 0.4])
    scores = keyframe_scores(logits, lam)
    # float64, as the release sums the terms in Python floats
    torch.testing.assert_close(scores, torch.tensor([0.85, 1.15], dtype=torch.float64))
    assert select_keyframe(logits, lam) == 1
    # lambda can outweigh the object score: [1/4 + 0.9, 3/4 + 0.1]
    assert select_keyframe(logits, torch.tensor([0.9, 0.1])) == 0


def test_keyframe_scores_three_candidates():
    logits = torch.tensor([1.0, 0.0, -1.0])
    lam = torch.tensor([0.1, 0.5, 0.4])
    z = math.e + 1.0 + 1.0 / math.e
    expected = torch.tensor([math.e / z + 0.1, 1.0 / z + 0.5, (1.0 / math.e) / z + 0.4],
                            dtype=torch.float64)
    # float32 softmax, float64 sum: within float32's rounding of the softmax terms
    torch.testing.assert_close(keyframe_scores(logits, lam), expected, rtol=0, atol=1e-7)
    # [0.76524, 0.74473, 0.49003]
    assert select_keyframe(logits, lam) == 0


def test_select_keyframe_ties_go_to_first():
    assert select_keyframe(torch.zeros(4), torch.full((4,), 0.25)) == 0
    assert select_keyframe(torch.tensor([0.0, 2.0, 2.0]), torch.tensor([0.0, 0.5, 0.5])) == 1


def test_keyframe_scores_gradients_and_validation():
    logits = torch.randn(4, dtype=torch.float64, requires_grad=True)
    lam = torch.softmax(torch.randn(4, dtype=torch.float64), 0).requires_grad_()
    assert torch.autograd.gradcheck(keyframe_scores, (logits, lam))
    # [K, 1] object-score logits, as sam2 returns them, are accepted
    torch.testing.assert_close(keyframe_scores(logits.detach()[:, None], lam.detach()),
                               keyframe_scores(logits.detach(), lam.detach()))
    with pytest.raises(ValueError):
        keyframe_scores(torch.zeros(3), torch.zeros(2))
