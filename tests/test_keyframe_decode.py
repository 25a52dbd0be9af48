"""Token-prompted single-frame decode (TKS / MDP step 1) on the tiny sam2, against sam2 itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vrshq.engine import EngineConfig, TrackingSession
from vrshq.engine.features import FeatureCache
from vrshq.engine.holes import SAM2_FILL_HOLE_AREA, fill_holes
from vrshq.model.frames import sample_frames
from vrshq.model.keyframe import (NO_OBJ_SCORE, KeyframeChoice, decode_with_token,
                                  select_keyframe_with_token)
from vrshq.model.tda import keyframe_scores, temporal_dynamic_aggregation
from vrshq.video.reader import open_video
from vrshq.video.transforms import FrameTransform, ResizeMode


def _sam2_reference(model, feats):
    """sam2's own no-prompt decode of an initial conditioning frame (what _track_step does)."""
    pix = feats.vision_feats[-1] + model.no_mem_embed
    pix = pix.permute(1, 2, 0).view(1, model.hidden_dim, *feats.feat_sizes[-1])
    high_res = [x.permute(1, 2, 0).view(x.size(1), x.size(2), *s)
                for x, s in zip(feats.vision_feats[:-1], feats.feat_sizes[:-1])]
    out = model._forward_sam_heads(backbone_features=pix, point_inputs=None, mask_inputs=None,
                                   high_res_features=high_res, multimask_output=False)
    return out[3], out[6]  # low_res_masks, object_score_logits


DIM = 32  # the tiny sam2's prompt dim (d_model); the real Hiera-L has 256


def _token(seed: int, dim: int = DIM, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(dim, generator=torch.Generator().manual_seed(seed)) * scale


def test_without_token_equals_sam2_forward_sam_heads(tiny_sam2_predictor, cache):
    model = tiny_sam2_predictor
    assert model.sam_prompt_embed_dim == DIM
    assert model.directly_add_no_mem_embed and model.use_high_res_features_in_sam
    for frame_idx in (0, 7):
        feats = cache.get(frame_idx)
        with torch.inference_mode():
            ref_masks, ref_scores = _sam2_reference(model, feats)
            ours = decode_with_token(model, feats, None)
        assert ours.low_res_logits.shape == (1, 1, model.image_size // 4, model.image_size // 4)
        assert ours.low_res_logits.dtype == torch.float32
        assert torch.equal(ours.low_res_logits, ref_masks)
        assert torch.equal(ours.object_score_logits, ref_scores)
        assert ours.object_score_logit == float(ref_scores[0, 0])


def test_token_is_appended_as_third_sparse_token(tiny_sam2_predictor, cache, monkeypatch):
    model = tiny_sam2_predictor
    seen = {}
    original = model.sam_mask_decoder.forward

    def spy(*args, **kwargs):
        seen["sparse"] = kwargs["sparse_prompt_embeddings"].clone()
        seen["multimask"] = kwargs["multimask_output"]
        return original(*args, **kwargs)

    monkeypatch.setattr(model.sam_mask_decoder, "forward", spy)
    token = _token(1)
    with torch.inference_mode():
        out = decode_with_token(model, cache.get(3), token)
    sparse = seen["sparse"]
    nap = model.sam_prompt_encoder.not_a_point_embed.weight[0]
    assert sparse.shape == (1, 3, DIM)
    assert torch.equal(sparse[0, 0], nap) and torch.equal(sparse[0, 1], nap)
    assert torch.equal(sparse[0, 2], token)
    assert seen["multimask"] is False
    monkeypatch.undo()
    with torch.inference_mode():
        plain = decode_with_token(model, cache.get(3), None)
    assert not torch.equal(out.low_res_logits, plain.low_res_logits)


def test_absent_object_gives_no_obj_score(tiny_sam2_predictor, cache):
    model = tiny_sam2_predictor
    head = model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias
    saved = head.detach().clone()
    try:
        with torch.no_grad():
            head.fill_(-1000.0)
        with torch.inference_mode():
            out = decode_with_token(model, cache.get(2), _token(2))
        assert out.object_score_logit <= 0
        assert bool((out.low_res_logits == NO_OBJ_SCORE).all())
    finally:
        with torch.no_grad():
            head.copy_(saved)


def test_token_shapes_and_batch(tiny_sam2_predictor, cache):
    model = tiny_sam2_predictor
    feats = cache.get(4)
    a, b = _token(3), _token(4)
    with torch.inference_mode():
        single_a = decode_with_token(model, feats, a)
        same = decode_with_token(model, feats, a[None, None])
        batch = decode_with_token(model, feats, torch.stack([a, b])[:, None])
        single_b = decode_with_token(model, feats, b)
    assert torch.equal(single_a.low_res_logits, same.low_res_logits)
    assert batch.low_res_logits.shape[0] == 2
    # Not bit-identical: a batch of two runs the decoder's matmuls with other shapes, so their
    # sums are rounded in another order (measured: 3e-8). A few float32 ulps, stated as such.
    for row, single in ((0, single_a), (1, single_b)):
        torch.testing.assert_close(batch.low_res_logits[row:row + 1], single.low_res_logits,
                                   rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError):
        decode_with_token(model, feats, torch.zeros(DIM + 1))


def test_gradient_reaches_token_and_projection(tiny_sam2_predictor, cache):
    """Fine-tuning path: TDA -> token -> decoder is one differentiable graph."""
    model = tiny_sam2_predictor
    feats = cache.get(5)
    h_seg = torch.randn(3, DIM, requires_grad=True)
    h_tak = torch.randn(DIM, requires_grad=True)
    fused, _ = temporal_dynamic_aggregation(h_seg, h_tak, alpha=0.1)
    out = decode_with_token(model, feats, fused)
    loss = out.low_res_logits.sigmoid().mean() + out.object_score_logits.sum()
    loss.backward()
    assert h_tak.grad is not None and bool(h_tak.grad.abs().sum() > 0)
    assert h_seg.grad is not None and bool(h_seg.grad.abs().sum() > 0)
    model.zero_grad(set_to_none=True)


def test_select_keyframe_matches_manual_scores(tiny_sam2_predictor, cache):
    model = tiny_sam2_predictor
    candidates = sample_frames(anchor=5, num_frames=24)
    assert candidates == [2, 5, 8, 11, 14, 17, 20, 23]  # stride ceil(24/11) = 3
    k = len(candidates)
    gen = torch.Generator().manual_seed(7)
    h_seg = torch.randn(k, DIM, generator=gen)
    h_tak = torch.randn(DIM, generator=gen)
    fused, lam = temporal_dynamic_aggregation(h_seg, h_tak)
    choice = select_keyframe_with_token(model, cache, candidates, fused, lam)
    assert isinstance(choice, KeyframeChoice)
    manual = []
    with torch.inference_mode():
        for f in candidates:
            manual.append(decode_with_token(model, cache.get(f), fused).object_score_logit)
    manual_t = torch.tensor(manual)
    # the same ops on the same inputs: bit-identical (measured 0.0); the release's arithmetic:
    # a float32 softmax of the scores, plus lambda in Python floats (float64)
    assert torch.equal(choice.object_scores, manual_t)
    assert torch.equal(choice.scores, torch.softmax(manual_t, 0).double() + lam.double())
    assert choice.index == int(torch.argmax(keyframe_scores(manual_t, lam)))
    assert choice.keyframe == candidates[choice.index]
    assert torch.equal(choice.lambdas, lam)
    with torch.inference_mode():
        expected = decode_with_token(model, cache.get(choice.keyframe), fused).low_res_logits
    # the keyframe's decode gets sam2's hole filling (8 by default, 0: the raw decode)
    assert torch.equal(choice.low_res_logits, fill_holes(expected, SAM2_FILL_HOLE_AREA))
    raw = select_keyframe_with_token(model, cache, candidates, fused, lam, fill_hole_area=0)
    assert raw.keyframe == choice.keyframe and torch.equal(raw.low_res_logits, expected)
    with pytest.raises(ValueError):
        select_keyframe_with_token(model, cache, candidates, fused, lam[:-1])


def test_keyframe_mask_propagates_without_extra_encoder_calls(tiny_sam2_predictor, jpeg_clip):
    model = tiny_sam2_predictor
    folder, _ = jpeg_clip
    with TrackingSession(model, open_video(folder), resize="vrshq",
                         config=EngineConfig(device="cpu")) as session:
        n = session.num_frames
        candidates = sample_frames(anchor=10, num_frames=n)
        gen = torch.Generator().manual_seed(11)
        fused, lam = temporal_dynamic_aggregation(torch.randn(len(candidates), DIM, generator=gen),
                                                  torch.randn(DIM, generator=gen))
        choice = select_keyframe_with_token(model, session.features, candidates, fused, lam)
        assert session.features.stats.encoder_calls == len(candidates)
        mask = choice.mask(session.transform, session.orig_hw)
        assert mask.shape == session.orig_hw and mask.dtype == np.bool_
        assert mask.any(), "the tiny model's +10 object-score bias should give a non-empty mask"
        first = session.add_mask(1, choice.keyframe, mask)
        assert np.array_equal(first.mask(), session.transform.masks_to_original(
            first.low_res_logits, session.orig_hw)[0, 0].numpy() > 0)
        seen = sorted(r.frame_idx for r in session.propagate("both"))
        assert seen == list(range(n)) or seen == sorted(set(range(n)) - {choice.keyframe})
        assert session.features.stats.encoder_calls == n


def test_official_bf16_decode_agrees_with_fp32(tiny_sam2_predictor, jpeg_clip):
    """The official plan's bf16 decode (bf16 weights) against the fp32 one on the same token."""
    import copy

    from vrshq.engine import apply_precision
    official = EngineConfig(device="cpu", precision="official")
    bf16 = apply_precision(copy.deepcopy(tiny_sam2_predictor), official)
    folder, _ = jpeg_clip
    token, lam = _token(9), torch.tensor([0.2, 0.3, 0.5])
    choices = {}
    for name, model, config in (("fp32", tiny_sam2_predictor, EngineConfig(device="cpu")),
                                ("official", bf16, official)):
        reader = open_video(folder)
        fc = FeatureCache(model, reader, FrameTransform(ResizeMode.VRSHQ, int(model.image_size)),
                          config)
        try:
            choices[name] = select_keyframe_with_token(model, fc, [0, 6, 12], token, lam)
            assert fc.stats.encoder_calls == 3
            assert fc.get(0).vision_feats[-1].dtype == config.dtype()
        finally:
            fc.close()
            reader.close()
    ref, ours = choices["fp32"], choices["official"]
    assert ours.low_res_logits.dtype == torch.float32  # returned as float32, computed in bf16
    # bf16 keeps 8 significant bits through every layer: ~1% of the logits' scale
    scale = float(ref.object_scores.abs().max())
    torch.testing.assert_close(ours.object_scores.float(), ref.object_scores, rtol=0,
                               atol=0.02 * scale)
    assert not torch.equal(ours.object_scores.float(), ref.object_scores)  # bf16 really ran
    ref_mask, our_mask = ref.low_res_logits > 0, ours.low_res_logits > 0
    confident = ref.low_res_logits.abs() > 1
    assert bool(((ref_mask == our_mask) | ~confident).all())

