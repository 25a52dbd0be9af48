"""CLIP anchor frame on a tiny random open_clip model (no download), checked against the
release's own model class (transformers' ``CLIPModel``) on the same weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from tests.clip_reference import clipmodel_from_open_clip
from vrshq.errors import ModelError
from vrshq.model.anchor import (DEFAULT_MODEL, TINY_CLIP_CONFIG, TINY_CLIP_NAME, AnchorScorer,
                                first_argmax, register_model_config, tiny_open_clip,
                                write_tiny_open_clip)

TEXT = "the dog running on the left"


@pytest.fixture(scope="module")
def tiny_clip():
    return tiny_open_clip(seed=0)


@pytest.fixture(scope="module")
def scorer(tiny_clip):
    model, preprocess, tokenizer = tiny_clip
    return AnchorScorer.from_model(model, preprocess, tokenizer)


@pytest.fixture(scope="module")
def tiny_clip_files(tmp_path_factory):
    return write_tiny_open_clip(tmp_path_factory.mktemp("clip"), seed=0)


def _frames(n: int, seed: int = 0, hw: tuple[int, int] = (48, 80)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*hw, 3), dtype=np.uint8) for _ in range(n)]


def test_probabilities_sum_to_one_and_anchor_is_argmax(scorer):
    frames = _frames(9)
    probs = scorer.frame_probabilities(frames, TEXT)
    assert probs.shape == (9,)
    assert np.all(probs > 0)
    # a float32 softmax over 9 frames: each term rounds by at most half an ulp (6e-8)
    assert probs.sum() == pytest.approx(1.0, abs=1e-6)
    assert scorer.anchor(frames, TEXT) == int(np.argmax(probs))
    assert not np.allclose(probs, probs[0])  # random frames are told apart


def test_probabilities_are_softmax_over_frames_of_logits_per_image(tiny_clip, scorer):
    model, preprocess, tokenizer = tiny_clip
    frames = _frames(5, seed=1)
    with torch.inference_mode():
        images = torch.stack([preprocess(Image.fromarray(f)) for f in frames])
        # open_clip's own forward: image_features, text_features, logit_scale.exp()
        img, txt, scale = model(images, tokenizer([TEXT]))
        logits_per_image = scale * img @ txt.t()  # [T, 1]
        expected = torch.softmax(logits_per_image.double(), dim=0)[:, 0].numpy()
    np.testing.assert_allclose(scorer.frame_logits(frames, TEXT),
                               logits_per_image[:, 0].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scorer.frame_probabilities(frames, TEXT), expected, atol=1e-6)


def test_batching_and_iterables_do_not_change_results(tiny_clip, scorer):
    model, preprocess, tokenizer = tiny_clip
    frames = _frames(7, seed=2)
    one = AnchorScorer.from_model(model, preprocess, tokenizer, batch_size=1)
    big = AnchorScorer.from_model(model, preprocess, tokenizer, batch_size=64)
    ref = scorer.frame_probabilities(frames, TEXT)
    np.testing.assert_allclose(one.frame_probabilities(frames, TEXT), ref, atol=1e-6)
    np.testing.assert_allclose(big.frame_probabilities(iter(frames), TEXT), ref, atol=1e-6)
    np.testing.assert_allclose(scorer.frame_probabilities((f for f in frames), TEXT), ref, atol=1e-6)


def test_deterministic(scorer):
    frames = _frames(6, seed=3)
    a = scorer.frame_probabilities(frames, TEXT)
    b = scorer.frame_probabilities(frames, TEXT)
    np.testing.assert_array_equal(a, b)
    m1, _, _ = tiny_open_clip(seed=5)
    m2, _, _ = tiny_open_clip(seed=5)
    m3, _, _ = tiny_open_clip(seed=6)
    s1, s2, s3 = m1.state_dict(), m2.state_dict(), m3.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert not all(torch.equal(s1[k], s3[k]) for k in s1)


def test_identical_frames_give_uniform_probabilities(scorer):
    frame = _frames(1, seed=4)[0]
    probs = scorer.frame_probabilities([frame] * 6, TEXT)
    # Not approximately: identical frames must score bit-identically on any CPU, so that the
    # tie rule (the first maximum) decides, not float noise.
    assert np.all(probs == probs[0])
    np.testing.assert_allclose(probs, np.full(6, 1 / 6), atol=1e-6)
    assert scorer.anchor([frame] * 6, TEXT) == 0
    others = _frames(3, seed=8)
    mixed = [others[0], frame, others[1], frame, frame, others[2]]
    emb = scorer.image_embeddings(mixed)
    assert torch.equal(emb[1], emb[3]) and torch.equal(emb[1], emb[4])


def test_a_frames_embedding_does_not_depend_on_its_neighbours(scorer):
    frames = _frames(7, seed=9)
    together = scorer.image_embeddings(frames)
    for i, frame in enumerate(frames):
        assert torch.equal(scorer.image_embeddings([frame])[0], together[i]), i


def test_first_argmax_is_the_tie_rule():
    assert first_argmax(torch.tensor([0.1, 0.5, 0.2, 0.5])) == 1
    assert first_argmax(torch.tensor([0.5, 0.5, 0.5])) == 0
    assert first_argmax(torch.tensor([0.1, 0.2, 0.3], dtype=torch.bfloat16)) == 2


# --- the release's model class and precision ----------------------------------------------------


def _hf_inputs(preprocess, tokenizer, frames):
    pixels = torch.stack([preprocess(Image.fromarray(f)) for f in frames])
    return pixels, tokenizer([TEXT])


def test_same_logits_as_transformers_clipmodel_on_the_same_weights(tiny_clip, scorer):
    model, preprocess, tokenizer = tiny_clip
    frames = _frames(6, seed=10)
    pixels, ids = _hf_inputs(preprocess, tokenizer, frames)
    hf = clipmodel_from_open_clip(model, TINY_CLIP_CONFIG)
    with torch.inference_mode():
        ref = hf(input_ids=ids, pixel_values=pixels).logits_per_image[:, 0]
        gelu = clipmodel_from_open_clip(model, TINY_CLIP_CONFIG, hidden_act="gelu")
        with_gelu = gelu(input_ids=ids, pixel_values=pixels).logits_per_image[:, 0]
    ours = torch.from_numpy(scorer.frame_logits(frames, TEXT))
    # Two libraries, same fp32 math, other kernels: ~5e-7 apart here (logits ~3-4).
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    # The check can tell the activations apart: nn.GELU moves these logits by ~1e-2.
    assert (with_gelu - ref).abs().max() > 1e-3
    probs = ref.double().softmax(0).numpy()
    np.testing.assert_allclose(scorer.frame_probabilities(frames, TEXT), probs, atol=1e-6)
    assert scorer.anchor(frames, TEXT) == int(np.argmax(probs))


@pytest.mark.parametrize("shape", [(64, 67), (67, 64), (48, 80), (720, 1280), (71, 200)])
def test_frames_are_preprocessed_as_the_releases_clipprocessor(tiny_clip, shape):
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    model, _, _ = tiny_clip
    frame = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    ours = AnchorScorer.from_model(model, tiny_clip[1], tiny_clip[2]).preprocess(
        Image.fromarray(frame))
    # clip-vit-large-patch14-336's preprocessor_config at the tiny model's 64 px
    ref = CLIPImageProcessorPil(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    theirs = torch.as_tensor(np.asarray(ref(images=frame, return_tensors="np")["pixel_values"][0]))
    # the same float32 arithmetic up to the order of rescale and normalise
    torch.testing.assert_close(ours, theirs.float(), rtol=0, atol=1e-5)
    if shape == (64, 67):  # open_clip's torchvision crop rounds 1.5 up: one column off here
        import open_clip
        _, _, oc = open_clip.create_model_and_transforms(TINY_CLIP_NAME, pretrained=None)
        assert not torch.allclose(oc(Image.fromarray(frame)), theirs.float(), atol=1e-3)


def test_default_anchor_model_is_quickgelu():
    import inspect

    import open_clip

    from vrshq.model.download import DownloadSources
    from vrshq.model.loading import load_vrshq
    assert open_clip.get_model_config(DEFAULT_MODEL)["vision_cfg"]["image_size"] == 336
    assert inspect.signature(AnchorScorer).parameters["model_name"].default == DEFAULT_MODEL
    assert inspect.signature(load_vrshq).parameters["clip_model"].default == DEFAULT_MODEL
    assert DownloadSources().clip_model == DEFAULT_MODEL
    # Built for real (on the meta device: no memory, no weights): every activation is QuickGELU.
    model = open_clip.create_model(DEFAULT_MODEL, pretrained=None, device="meta")
    acts = [type(m).__name__ for m in model.modules()
            if isinstance(m, torch.nn.GELU) or type(m).__name__ == "QuickGELU"]
    assert len(acts) == 24 + 12 and set(acts) == {"QuickGELU"}


def test_bf16_is_the_releases_clipmodel_in_bf16(tiny_clip):
    model, preprocess, tokenizer = tiny_clip
    frames = _frames(8, seed=11)
    pixels, ids = _hf_inputs(preprocess, tokenizer, frames)
    hf = clipmodel_from_open_clip(model, TINY_CLIP_CONFIG).to(torch.bfloat16)
    with torch.inference_mode():
        # model/VISA_multiseg_cliptree_bf16.py L306-308, verbatim in spirit
        prob_ref = hf(input_ids=ids, pixel_values=pixels.bfloat16()).logits_per_image.softmax(dim=0)
    import copy
    bf16 = AnchorScorer.from_model(copy.deepcopy(model), preprocess, tokenizer, precision="bf16")
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}
    emb = bf16.image_embeddings(frames)
    probs = bf16.probabilities_from_embeddings(emb, TEXT)
    assert emb.dtype == probs.dtype == torch.bfloat16
    # bf16 has 8 significant bits: probabilities ~0.1-0.3 agree to a few ulps (2^-10 each)
    torch.testing.assert_close(probs.float(), prob_ref[:, 0].float(), rtol=0, atol=4e-3)


def test_bf16_ties_go_to_the_first_frame_where_fp32_tells_them_apart(scorer):
    # Two frames whose fp32 logits differ by less than bf16 resolves: the release's bf16
    # softmax makes them equal and argmax takes the earlier one; fp32 takes the true maximum.
    text = scorer.model.encode_text(scorer.tokenizer([TEXT])).float()
    text = text / text.norm(dim=-1, keepdim=True)
    other = torch.randn(text.shape, generator=torch.Generator().manual_seed(0))
    other = other - (other @ text.t()) * text
    other = other / other.norm()
    lo, hi = 0.9000, 0.9003  # cosines 3e-4 apart: distinct in fp32, one value in bf16
    emb = torch.cat([lo * text + (1 - lo**2) ** 0.5 * other, hi * text + (1 - hi**2) ** 0.5 * other])
    assert scorer.anchor_from_embeddings(emb, TEXT) == 1
    import copy
    bf16 = AnchorScorer.from_model(copy.deepcopy(scorer.model), scorer.preprocess,
                                   scorer.tokenizer, precision="bf16")
    probs = bf16.probabilities_from_embeddings(emb.bfloat16(), TEXT)
    assert probs[0] == probs[1]
    assert bf16.anchor_from_embeddings(emb.bfloat16(), TEXT) == 0


def test_tiny_model_loads_through_the_real_path(tiny_clip, tiny_clip_files, scorer):
    config, checkpoint = tiny_clip_files
    assert config.name == f"{TINY_CLIP_NAME}.json"
    assert json.loads(config.read_text()) == TINY_CLIP_CONFIG
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert set(saved) >= {"state_dict"}
    # AnchorScorer(model_name, pretrained=<checkpoint file>): the same call as ViT-L-14-336/openai
    loaded = AnchorScorer(TINY_CLIP_NAME, str(checkpoint), model_config=config, batch_size=4)
    ref_state = tiny_clip[0].state_dict()
    got_state = loaded.model.state_dict()
    assert set(ref_state) == set(got_state)
    assert all(torch.equal(ref_state[k], got_state[k]) for k in ref_state)
    frames = _frames(5, seed=5)
    np.testing.assert_allclose(loaded.frame_probabilities(frames, TEXT),
                               scorer.frame_probabilities(frames, TEXT), atol=1e-6)


def test_custom_model_name(tmp_path):
    import open_clip

    cfg = json.loads(json.dumps(TINY_CLIP_CONFIG))
    cfg["embed_dim"] = 16
    cfg["vision_cfg"]["image_size"] = 32
    name = register_model_config(cfg, "my-custom-clip", tmp_path)
    assert name == "my-custom-clip" and name in open_clip.list_models()
    scorer = AnchorScorer(name, pretrained=None)
    assert scorer.model.visual.image_size == (32, 32)
    probs = scorer.frame_probabilities(_frames(3, seed=6), "a cat")
    assert probs.shape == (3,) and probs.sum() == pytest.approx(1.0)
    # a custom-named checkpoint written in open_clip's format loads by that name too
    cfg_path, ckpt = write_tiny_open_clip(tmp_path / "other", seed=1, name="other-tiny-clip")
    other = AnchorScorer("other-tiny-clip", str(ckpt), model_config=cfg_path)
    assert other.anchor(_frames(3, seed=7), "a cat") in range(3)


def test_errors(tmp_path, scorer):
    with pytest.raises(ModelError):
        AnchorScorer(TINY_CLIP_NAME, str(tmp_path / "missing.pt"))
    with pytest.raises(ModelError):
        register_model_config(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"embed_dim": 8}))
    with pytest.raises(ModelError):
        register_model_config(bad)
    with pytest.raises(ValueError):
        scorer.frame_probabilities([], TEXT)
    with pytest.raises(ValueError):
        scorer.frame_probabilities([np.zeros((4, 4), np.uint8)], TEXT)
