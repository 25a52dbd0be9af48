"""Chat-UniVi model (vrshq.model.chatunivi): official key names, loading, splicing, forward,
and CLIP preprocessing. Tiny random weights only (config.tiny_config)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from vrshq.errors import ModelError
from vrshq.model.chatunivi import (
    IMAGE_TOKEN_INDEX,
    ChatUniViConfig,
    ChatUniViForCausalLM,
    clip_preprocess,
    image_tokens,
    load_chatunivi_state_dict,
    save_chatunivi_state_dict,
    tiny_config,
)
from vrshq.model.chatunivi.image_processing import CLIP_MEAN, CLIP_STD

CLIP = "model.vision_tower.vision_tower.vision_model."


def expected_shapes(cfg: ChatUniViConfig) -> dict[str, tuple[int, ...]]:
    """Key table of brief-chatunivi.md §1.3, without the 4.31 `inv_freq` buffers."""
    h, v, i = cfg.hidden_size, cfg.vocab_size, cfg.intermediate_size
    vc = cfg.clip_vision_config()
    ch, ci, p = vc.hidden_size, vc.intermediate_size, vc.patch_size
    keys: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,), "lm_head.weight": (v, h)}
    for n in range(cfg.num_hidden_layers):
        pre = f"model.layers.{n}."
        for proj in ("q", "k", "v", "o"):
            keys[f"{pre}self_attn.{proj}_proj.weight"] = (h, h)
        keys[f"{pre}mlp.gate_proj.weight"] = (i, h)
        keys[f"{pre}mlp.up_proj.weight"] = (i, h)
        keys[f"{pre}mlp.down_proj.weight"] = (h, i)
        keys[f"{pre}input_layernorm.weight"] = (h,)
        keys[f"{pre}post_attention_layernorm.weight"] = (h,)
    keys[CLIP + "embeddings.class_embedding"] = (ch,)
    keys[CLIP + "embeddings.patch_embedding.weight"] = (ch, 3, p, p)
    keys[CLIP + "embeddings.position_embedding.weight"] = ((vc.image_size // p) ** 2 + 1, ch)
    for name in ("pre_layrnorm", "post_layernorm"):
        keys[CLIP + f"{name}.weight"] = (ch,)
        keys[CLIP + f"{name}.bias"] = (ch,)
    for j in range(vc.num_hidden_layers):
        pre = CLIP + f"encoder.layers.{j}."
        for proj in ("q", "k", "v", "out"):
            keys[f"{pre}self_attn.{proj}_proj.weight"] = (ch, ch)
            keys[f"{pre}self_attn.{proj}_proj.bias"] = (ch,)
        for ln in ("layer_norm1", "layer_norm2"):
            keys[f"{pre}{ln}.weight"] = (ch,)
            keys[f"{pre}{ln}.bias"] = (ch,)
        keys[f"{pre}mlp.fc1.weight"] = (ci, ch)
        keys[f"{pre}mlp.fc1.bias"] = (ci,)
        keys[f"{pre}mlp.fc2.weight"] = (ch, ci)
        keys[f"{pre}mlp.fc2.bias"] = (ch,)
    keys["model.mm_projector.weight"] = (h, cfg.mm_hidden_size)
    keys["model.mm_projector.bias"] = (h,)
    return keys


def with_inv_freq(sd: dict, cfg: ChatUniViConfig) -> dict:
    """What a transformers 4.31 checkpoint additionally holds (persistent RoPE buffers, bf16)."""
    out = dict(sd)
    hd = cfg.hidden_size // cfg.num_attention_heads
    inv = 1.0 / (10000 ** (torch.arange(0, hd, 2).float() / hd))
    for n in range(cfg.num_hidden_layers):
        out[f"model.layers.{n}.self_attn.rotary_emb.inv_freq"] = inv.bfloat16()
    return out


@pytest.fixture(scope="module")
def model() -> ChatUniViForCausalLM:
    torch.manual_seed(0)
    return ChatUniViForCausalLM(tiny_config()).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(3, 3, 128, 128, generator=torch.Generator().manual_seed(1))


# --- keys --------------------------------------------------------------------------------------


def test_tiny_key_set_is_exactly_the_official_pattern(model):
    sd = model.state_dict()
    exp = expected_shapes(model.config)
    assert {k: tuple(v.shape) for k, v in sd.items()} == exp
    assert not [k for k in sd if "inv_freq" in k or "position_ids" in k]
    assert not [k for k in sd if k.startswith(("model.ctm", "model.block"))]
    assert all(k.startswith(CLIP) for k in sd if "vision" in k)


def test_full_size_key_set_reproduces_the_hub_index_size():
    with torch.device("meta"):
        full = ChatUniViForCausalLM(ChatUniViConfig())
    shapes = {k: tuple(v.shape) for k, v in full.state_dict().items()}
    assert shapes == expected_shapes(full.config)
    assert len(shapes) == 684 and shapes["model.mm_projector.weight"] == (4096, 1024)
    assert shapes[CLIP + "embeddings.position_embedding.weight"] == (257, 1024)
    numel = lambda ks: sum(math.prod(shapes[k]) for k in ks)  # noqa: E731
    assert numel([k for k in shapes if k.startswith(CLIP)]) == 303_179_776
    assert numel([k for k in shapes if not k.startswith(("model.vision", "model.mm_"))]) == 6_738_415_616
    # brief §1.6: the listed index is 75,846 bytes with the 32 inv_freq keys (4.31 index format)
    keys = dict(shapes)
    keys.update({f"model.layers.{i}.self_attn.rotary_emb.inv_freq": (64,) for i in range(32)})
    total = 2 * sum(math.prod(s) for s in keys.values())
    index = {"metadata": {"total_size": total}, "weight_map": {k: "pytorch_model-00001-of-00002.bin" for k in keys}}
    assert len((json.dumps(index, indent=2, sort_keys=True) + "\n").encode()) == 75_846
    assert full.image_token_count == 112


# --- loading -----------------------------------------------------------------------------------


def test_sharded_bin_round_trip_with_official_names(model, images, tmp_path):
    cfg = model.config
    sd = with_inv_freq({k: v.bfloat16() for k, v in model.state_dict().items()}, cfg)
    paths = save_chatunivi_state_dict(sd, tmp_path, num_shards=2)
    assert [p.name for p in paths] == ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"]
    index = json.loads((tmp_path / "pytorch_model.bin.index.json").read_text())
    assert set(index["weight_map"]) == set(sd)
    cfg.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "ChatUniVi"
    loaded = ChatUniViForCausalLM.from_pretrained(tmp_path)
    assert loaded.config.cluster_levels() == cfg.cluster_levels()
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, sd[k].float()), k
    rotary = loaded.model.rotary_emb.inv_freq
    torch.testing.assert_close(rotary.float(), sd["model.layers.0.self_attn.rotary_emb.inv_freq"].float(), rtol=1e-2, atol=0)
    pos = loaded.model.vision_tower.clip.embeddings.position_ids
    assert torch.equal(pos.flatten(), torch.arange(257))
    ids = torch.tensor([[1, 5, IMAGE_TOKEN_INDEX, 7, 8]])
    ref = ChatUniViForCausalLM(cfg).eval()
    ref.load_state_dict_strict(sd)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, images[:1]).hidden_states, ref(ids, images[:1]).hidden_states)


def test_safetensors_single_file(model, tmp_path):
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(tmp_path / "model.safetensors"))
    got = load_chatunivi_state_dict(tmp_path)
    assert set(got) == set(sd) and all(torch.equal(got[k], sd[k]) for k in sd)


def test_missing_renamed_and_misshaped_keys_are_named(model):
    sd = dict(model.state_dict())
    fresh = ChatUniViForCausalLM(model.config)
    missing = dict(sd)
    del missing["model.mm_projector.bias"]
    with pytest.raises(ModelError, match=r"1 missing keys: model\.mm_projector\.bias"):
        fresh.load_state_dict_strict(missing)
    renamed = dict(sd)
    renamed["model.mm_projector.0.weight"] = renamed.pop("model.mm_projector.weight")
    with pytest.raises(ModelError) as err:
        fresh.load_state_dict_strict(renamed)
    assert "model.mm_projector.weight" in str(err.value) and "model.mm_projector.0.weight" in str(err.value)
    bad = dict(sd)
    bad["model.norm.weight"] = torch.ones(3)
    with pytest.raises(ModelError, match=r"model\.norm\.weight: checkpoint \(3,\)"):
        fresh.load_state_dict_strict(bad)


def test_ignore_prefixes_for_keys_owned_elsewhere(model):
    sd = dict(model.state_dict())
    sd["model.visual_model.image_encoder.trunk.pos_embed"] = torch.zeros(2)
    sd["model.text_hidden_fcs.0.0.weight"] = torch.zeros(2, 2)
    fresh = ChatUniViForCausalLM(model.config)
    with pytest.raises(ModelError, match="2 unexpected keys"):
        fresh.load_state_dict_strict(sd)
    fresh.load_state_dict_strict(sd, ignore_prefixes=("model.visual_model.", "model.text_hidden_fcs."))
    assert torch.equal(fresh.lm_head.weight, model.lm_head.weight)


def test_missing_folder_files_raise_model_error(tmp_path):
    with pytest.raises(ModelError, match="no model.safetensors"):
        load_chatunivi_state_dict(tmp_path)
    with pytest.raises(ModelError, match="no config.json"):
        ChatUniViForCausalLM.from_pretrained(tmp_path)


# --- images ------------------------------------------------------------------------------------


def test_encode_images_is_clip_layer_minus_2_patches_clustered_and_projected(model, images):
    clip = model.model.vision_tower.clip
    with torch.no_grad():
        h = clip.pre_layrnorm(clip.embeddings(images))
        h = clip.encoder.layers[0](h, None)  # 2 layers: hidden_states[-2] = output of layer 0
        h = h[0] if isinstance(h, tuple) else h
        expected = model.model.mm_projector(image_tokens(h[:, 1:]))
        got = model.encode_images(images)
    assert got.shape == (3, 112, 64)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_small_tower_rates_scale_with_patch_count():
    cfg = tiny_config(image_size=64)
    m = ChatUniViForCausalLM(cfg).eval()
    assert m.image_token_count == 16 + 8 + 4
    with torch.no_grad():
        assert m.encode_images(torch.randn(2, 3, 64, 64)).shape == (2, 28, 64)


# --- splicing and forward ----------------------------------------------------------------------


def test_splicing_places_image_embeddings_and_maps_positions(model):
    s = model.image_token_count
    ids = torch.tensor([[1, 5, IMAGE_TOKEN_INDEX, 7, IMAGE_TOKEN_INDEX, 9], [1, IMAGE_TOKEN_INDEX, 4, 6, 2, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]])
    feats = torch.arange(3, dtype=torch.float32)[:, None, None].expand(3, s, 64) + 100.0
    with torch.no_grad():
        embeds, new_mask, pmap = model.prepare_inputs_embeds(ids, feats, mask)
        text = model.model.embed_tokens(ids.clamp(min=0))
    assert embeds.shape == (2, 6 - 2 + 2 * s, 64)
    assert pmap.tolist() == [[0, 1, 2, 2 + s, 3 + s, 3 + 2 * s], [0, 1, 1 + s, 2 + s, 3 + s, 4 + s]]
    # row 0: images 0 and 1; row 1: image 2 (row-major order)
    assert torch.all(embeds[0, 2 : 2 + s] == 100.0) and torch.all(embeds[0, 3 + s : 3 + 2 * s] == 101.0)
    assert torch.all(embeds[1, 1 : 1 + s] == 102.0)
    for r in range(2):
        for p in range(6):
            if ids[r, p] != IMAGE_TOKEN_INDEX:
                assert torch.equal(embeds[r, pmap[r, p]], text[r, p])
    # row 1 is shorter by s - 1 tokens: zero-padded on the right with mask 0
    assert torch.all(embeds[1, 5 + s :] == 0)
    assert new_mask[0].tolist() == [1] * (4 + 2 * s)
    assert new_mask[1].tolist() == [1] * (4 + s) + [0] + [0] * (s - 1)
    with pytest.raises(ModelError, match="3 image placeholders but 2 images"):
        model.prepare_inputs_embeds(ids, feats[:2], mask)


def test_forward_shapes_determinism_and_hidden_before(model, images):
    seg = 120
    ids = torch.tensor([[1, 5, IMAGE_TOKEN_INDEX, 7, IMAGE_TOKEN_INDEX, 9, 3, seg, 4, seg, 2]])
    with torch.no_grad():
        out = model(ids, images[:2], return_logits=True)
        again = model(ids, images[:2])
    n_img = 2
    assert out.hidden_states.shape == (1, ids.shape[1] - n_img + 112 * n_img, 64)
    assert out.logits is not None and out.logits.shape == (1, out.hidden_states.shape[1], 122)
    assert torch.equal(out.hidden_states, again.hidden_states)
    picked = ChatUniViForCausalLM.hidden_before(out, ids, seg)[0]
    # positions 6 and 8 precede [SEG]; offset = 111 per image (VRS-HQ's token_add)
    assert torch.equal(picked, out.hidden_states[0, [6 + 111 * 2, 8 + 111 * 2]])
    # text-only input runs the plain LLaMA path
    with torch.no_grad():
        plain = model(torch.tensor([[1, 5, 7]]))
    assert plain.hidden_states.shape == (1, 3, 64) and plain.position_map.tolist() == [[0, 1, 2]]


# --- preprocessing -----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(120, 160), (161, 97), (224, 224), (50, 300)])
def test_clip_preprocess_matches_transformers_pil_processor(shape):
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    rng = np.random.default_rng(sum(shape))
    img = rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    ours = clip_preprocess(img, size=64)
    ref = CLIPImageProcessorPil(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    theirs = torch.as_tensor(np.asarray(ref(images=img, return_tensors="np")["pixel_values"][0]))
    assert ours.shape == (3, 64, 64) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, theirs.float(), atol=1e-5, rtol=1e-5)


def test_clip_preprocess_by_hand():
    # constant image: resize/crop keep the colour, output = (c/255 - mean) / std per channel
    img = np.zeros((100, 300, 3), dtype=np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 10, 128, 250
    out = clip_preprocess(Image.fromarray(img), size=224)
    assert out.shape == (3, 224, 224)
    for c, v in enumerate((10, 128, 250)):
        torch.testing.assert_close(out[c], torch.full((224, 224), (v / 255 - CLIP_MEAN[c]) / CLIP_STD[c]), atol=1e-6, rtol=0)
    # a wide image is centre-cropped, not padded: a left-edge marker column disappears
    img = np.full((100, 300, 3), 50, dtype=np.uint8)
    img[:, :100] = 255
    out = clip_preprocess(img, size=100)
    assert torch.allclose(out[0], torch.full_like(out[0], (50 / 255 - CLIP_MEAN[0]) / CLIP_STD[0]), atol=1e-6)
