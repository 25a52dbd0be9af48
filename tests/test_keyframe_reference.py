"""The keyframe path (TKS + the keyframe's mask prompt) against the release's formulas.

Each step of ``select_keyframe_with_token`` -> ``Vrshq.keyframe_mask`` -> ``add_model_mask``,
and the masks brought back to the video's size, is compared by value with an independent
reference written from the VRS-HQ release (tests/vrshq_reference.py): sam2's ``track_step``
with the token appended for the decode, scipy labelling for the hole filling, the release's
list arithmetic for TKS, torch's bilinear ``interpolate`` and ``> 0`` for the masks. Where the
two sides run the same float32 operations they must be bit-identical; the one tolerance (TKS
scores) says why.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.vrshq_reference import (
    RELEASE_FILL_HOLE_AREA,
    RELEASE_SAM2_SETTINGS,
    reference_fill,
    release_keyframe_index,
    release_keyframe_mask,
    release_masks_to_original,
    release_resized_hw,
    release_video_res,
    token_decode,
)
from vrshq.engine.holes import SAM2_FILL_HOLE_AREA
from vrshq.engine.session import ObjectFrame
from vrshq.model.frames import sample_frames
from vrshq.model.keyframe import NO_OBJ_SCORE, KeyframeChoice, decode_with_token, select_keyframe_with_token
from vrshq.model.pipeline import Vrshq
from vrshq.model.tda import keyframe_scores, select_keyframe, temporal_dynamic_aggregation
from vrshq.video.transforms import FrameTransform, ResizeMode, longest_side_shape

DIM = 32  # the tiny sam2's prompt dim
# The TKS scores: the release adds softmax(object scores) and the similarity as Python floats
# (float64) after .tolist(); so do we (keyframe_scores sums in float64): equal, bit for bit.
TKS_ATOL = 0.0


@pytest.fixture
def release_model(tiny_sam2_predictor, monkeypatch):
    """The shared tiny sam2 with the release's decode settings (single mask output)."""
    for name, value in RELEASE_SAM2_SETTINGS.items():
        monkeypatch.setattr(tiny_sam2_predictor, name, value)
    return tiny_sam2_predictor


def _keyframe_mask(low_res: torch.Tensor, image_size: int) -> torch.Tensor:
    """``Vrshq.keyframe_mask`` (it reads only ``self.sam2.image_size``)."""
    owner = SimpleNamespace(sam2=SimpleNamespace(image_size=image_size))
    return Vrshq.keyframe_mask(owner, SimpleNamespace(low_res_logits=low_res))  # type: ignore[arg-type]


def _with_zeros(low: torch.Tensor) -> torch.Tensor:
    """Logits with blocks of exact zeros, which ``> 0`` and ``>= 0`` binarise differently."""
    low = low.clone()
    s = low.shape[-1]
    low[..., s // 4: s // 4 + 4, s // 8: s // 8 + 5] = 0.0
    low[..., -3:, :3] = 0.0  # in a corner, bordering the padded strip too
    return low


def _random_logits(seed: int, size: int, batch: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(batch, 1, size // 8, size // 8, generator=gen) * 6.0
    fine = torch.randn(batch, 1, size, size, generator=gen)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="nearest") + fine


# ---------------------------------------------------------------- decode with the token


def test_decode_with_token_equals_sam2_track_step_with_the_token_appended(release_model, cache):
    model = release_model
    for frame_idx, seed in ((0, 1), (7, 2), (13, 3), (23, 4)):
        token = torch.randn(DIM, generator=torch.Generator().manual_seed(seed))
        feats = cache.get(frame_idx)
        ref_low, ref_score = token_decode(model, feats, token, frame_idx, num_frames=24)
        with torch.inference_mode():
            ours = decode_with_token(model, feats, token)
        assert torch.equal(ours.low_res_logits, ref_low.float()), frame_idx
        assert torch.equal(ours.object_score_logits, ref_score), frame_idx


def test_decode_of_an_absent_object_is_no_obj_score_as_in_sam2(release_model, cache):
    model = release_model
    head = model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias
    saved = head.detach().clone()
    try:
        with torch.no_grad():
            head.fill_(-1000.0)
        token = torch.randn(DIM, generator=torch.Generator().manual_seed(5))
        ref_low, ref_score = token_decode(model, cache.get(4), token)
        with torch.inference_mode():
            ours = decode_with_token(model, cache.get(4), token)
    finally:
        with torch.no_grad():
            head.copy_(saved)
    assert float(ref_score) <= 0 and bool((ref_low == NO_OBJ_SCORE).all())
    assert torch.equal(ours.low_res_logits, ref_low) and torch.equal(ours.object_score_logits, ref_score)


# ---------------------------------------------------------------- TKS


@pytest.mark.parametrize("seed", range(40))
def test_tks_score_and_choice_equal_the_releases(seed):
    gen = torch.Generator().manual_seed(seed)
    k = int(torch.randint(1, 12, (1,), generator=gen))
    # object-score logits on sam2's scale (the tiny model's are near its +10 bias)
    logits = torch.randn(k, generator=gen) * (0.3 if seed % 2 else 4.0) + (10.0 if seed % 3 else 0.0)
    lam = torch.softmax(torch.randn(k, generator=gen), dim=0)
    index, results = release_keyframe_index([float(x) for x in logits], [float(x) for x in lam])
    ours = keyframe_scores(logits, lam)
    torch.testing.assert_close(ours.double(), torch.tensor(results, dtype=torch.float64),
                               rtol=0.0, atol=TKS_ATOL)
    assert select_keyframe(logits, lam) == index  # equal scores, the same first-maximum rule


def test_tks_ties_go_to_the_first_candidate_as_in_the_release():
    for logits, lam in (([0.0, 0.0, 0.0], [0.2, 0.4, 0.4]), ([3.0, 3.0], [0.5, 0.5]),
                        ([1.0, 2.0, 2.0, 0.5], [0.25, 0.25, 0.25, 0.25])):
        index, _ = release_keyframe_index(logits, lam)
        assert select_keyframe(torch.tensor(logits), torch.tensor(lam)) == index


# ---------------------------------------------------------------- the keyframe's mask prompt


@pytest.mark.parametrize("image_size", [128, 1024])
def test_keyframe_mask_is_the_releases_bilinear_upsample_and_threshold(image_size):
    low = _with_zeros(_random_logits(0, image_size // 4))
    ref = release_keyframe_mask(low, image_size)
    # exact zeros survive the upsampling, so > 0 and >= 0 differ on this input
    assert bool((release_video_res(low, image_size) == 0).any())
    ours = _keyframe_mask(low, image_size)
    assert ours.shape == (image_size, image_size) and ours.dtype == torch.float32
    assert bool(((ours == 0) | (ours == 1)).all())
    assert torch.equal(ours > 0, ref)
    # an absent object's decode (NO_OBJ_SCORE everywhere) gives an empty prompt
    empty = torch.full_like(low, NO_OBJ_SCORE)
    assert not _keyframe_mask(empty, image_size).any() and not release_keyframe_mask(empty, image_size).any()


@pytest.mark.parametrize("orig_hw", [(120, 160), (160, 120), (96, 160), (37, 250), (720, 1280)])
def test_masks_at_the_video_size_are_the_releases_crop_and_resize(orig_hw):
    image_size = 128 if orig_hw != (720, 1280) else 1024
    low = _with_zeros(_random_logits(1, image_size // 4, batch=2))
    transform = FrameTransform(ResizeMode.VRSHQ, image_size)
    assert transform.resized_hw(*orig_hw) == release_resized_hw(*orig_hw, image_size) \
        == longest_side_shape(*orig_hw, image_size)
    ref = release_masks_to_original(release_video_res(low, image_size), orig_hw)
    assert torch.equal(transform.masks_to_original(low, orig_hw), ref)
    # the keyframe's mask at video size and a tracked frame's mask binarise it with > 0
    choice = KeyframeChoice(0, 0, [0], torch.zeros(1), torch.ones(1), torch.ones(1), low[:1])
    assert np.array_equal(choice.mask(transform, orig_hw), (ref[0, 0] > 0).numpy())
    frame = ObjectFrame(1, 0, 1.0, low[1:], transform, orig_hw)
    assert torch.equal(frame.logits(), ref[1, 0])
    assert np.array_equal(frame.mask(), (ref[1, 0] > 0).numpy())


# ---------------------------------------------------------------- the whole keyframe path


def test_keyframe_path_equals_the_release_on_the_tiny_sam2(release_model, cache):
    """Decode every candidate, TKS, fill the keyframe's holes, its S x S mask prompt."""
    model = release_model
    size = int(model.image_size)
    candidates = sample_frames(anchor=9, num_frames=24)
    gen = torch.Generator().manual_seed(21)
    h_seg = torch.randn(len(candidates), DIM, generator=gen)
    fused, lam = temporal_dynamic_aggregation(h_seg, torch.randn(DIM, generator=gen))
    ref_decodes = [token_decode(model, cache.get(f), fused, f, num_frames=24) for f in candidates]
    ref_scores = [float(score.reshape(-1)[0]) for _, score in ref_decodes]
    filled_somewhere = False
    # every candidate in turn as the keyframe: lambda outweighs the softmax term
    for forced in [None, *range(len(candidates))]:
        lam_k = lam if forced is None else torch.nn.functional.one_hot(
            torch.tensor(forced), len(candidates)).float() * 2.0
        index, results = release_keyframe_index(ref_scores, lam_k.tolist())
        choice = select_keyframe_with_token(model, cache, candidates, fused, lam_k)
        assert choice.object_scores.tolist() == ref_scores
        torch.testing.assert_close(choice.scores.double(), torch.tensor(results, dtype=torch.float64),
                                   rtol=0.0, atol=TKS_ATOL)
        assert choice.index == index and choice.keyframe == candidates[index]
        assert SAM2_FILL_HOLE_AREA == RELEASE_FILL_HOLE_AREA
        ref_low = reference_fill(ref_decodes[index][0].float(), RELEASE_FILL_HOLE_AREA)
        assert torch.equal(choice.low_res_logits, ref_low)
        filled_somewhere |= not torch.equal(ref_low, ref_decodes[index][0].float())
        ref_mask = release_keyframe_mask(ref_low, size)
        assert ref_mask.any()  # the tiny model's +10 object-score bias: a non-empty prompt
        assert torch.equal(_keyframe_mask(choice.low_res_logits, size) > 0, ref_mask)
    # the random decodes have small holes, so the filling step is checked too, not only skipped
    assert filled_somewhere
