"""VRS-HQ end to end on the tiny model: the official checkpoint layout, the folder loader and
its errors, and ``Vrshq.segment`` on a synthetic mp4 (grid, anchor, TDA, TKS, shared features,
determinism, two prompts)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vrshq.engine import EngineConfig, TrackingSession
from vrshq.errors import ModelError, PromptError
from vrshq.model.frames import sample_frames
from vrshq.model import pipeline
from vrshq.model.loading import load_vrshq
from vrshq.model.pipeline import VrshqConfig, results_to_trackset
from vrshq.model.prompt import SEG_TOKEN, TAK_TOKEN
from vrshq.model.tiny import SAM2_CONFIG_FILE, TINY_VOCAB, write_tiny_vrshq
from vrshq.video.reader import open_video

SHARDS = ("pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin")
INDEX = "pytorch_model.bin.index.json"
OFFICIAL_FILES = {"config.json", "tokenizer.model", "tokenizer_config.json",
                  "special_tokens_map.json", "added_tokens.json", *SHARDS, INDEX}
PROMPTS = ["the red ball moving left", "which one is chasing the dog?"]
CPU = VrshqConfig(engine=EngineConfig(device="cpu"))


# --- fixtures -----------------------------------------------------------------------------



@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny_vrshq")
    write_tiny_vrshq(root, seed=0)
    return root


@pytest.fixture(scope="module")
def model(tiny_dir):
    return load_vrshq(tiny_dir, CPU)


@pytest.fixture(scope="module")
def video(make_video) -> Path:
    return make_video("mp4", num_frames=24, width=160, height=120, fps=10.0)


@pytest.fixture
def reader(video):
    r = open_video(video)
    yield r
    r.close()


@pytest.fixture(scope="module")
def two_runs(model, video):
    """Two full ``segment`` runs of both prompts; the first one instrumented."""
    calls = {"sam2_images": 0, "mllm_rows": [], "keyframe_masks": {}, "stats": [],
             "fill_hole_area": []}
    mp = pytest.MonkeyPatch()
    real_forward_image = model.sam2.forward_image
    real_encode_images = model.mllm.encode_images
    real_add = TrackingSession.add_model_mask
    real_close = TrackingSession.close
    real_select = pipeline.select_keyframe_with_token

    def forward_image(image):
        calls["sam2_images"] += int(image.shape[0])
        return real_forward_image(image)

    def encode_images(pixels, **kw):
        calls["mllm_rows"].append(int(pixels.shape[0]))
        return real_encode_images(pixels, **kw)

    def add_model_mask(self, obj_id, frame_idx, mask_inputs):
        calls["keyframe_masks"][obj_id] = (frame_idx, torch.as_tensor(mask_inputs).clone())
        return real_add(self, obj_id, frame_idx, mask_inputs)

    def select_keyframe_with_token(*args, **kwargs):
        calls["fill_hole_area"].append(kwargs.get("fill_hole_area"))
        return real_select(*args, **kwargs)

    def close(self):
        calls["stats"].append(
            (self.features.stats.encoder_calls, self.features.stats.frames_decoded))
        return real_close(self)

    mp.setattr(model.sam2, "forward_image", forward_image)
    mp.setattr(model.mllm, "encode_images", encode_images)
    mp.setattr(TrackingSession, "add_model_mask", add_model_mask)
    mp.setattr(TrackingSession, "close", close)
    mp.setattr(pipeline, "select_keyframe_with_token", select_keyframe_with_token)
    stages: list[tuple[str, int, int]] = []
    try:
        with open_video(video) as r:
            first = model.segment(r, PROMPTS, progress=lambda *a: stages.append(a))
            num_frames = len(r)
    finally:
        mp.undo()
    with open_video(video) as r:
        second = model.segment(r, PROMPTS)
    return first, second, calls, stages, num_frames


def _copy(tiny_dir: Path, tmp_path: Path) -> Path:
    root = tmp_path / "model"
    shutil.copytree(tiny_dir, root)
    return root


def _read_shards(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {name: torch.load(folder / name, map_location="cpu", weights_only=True)
            for name in SHARDS}


def _edit_checkpoint(root: Path, edit) -> None:
    """Apply ``edit(state)`` (a dict key -> tensor, edited in place) to the sharded checkpoint,
    keeping each surviving key in its shard and the index in step."""
    folder = root / "vrshq"
    shards = _read_shards(folder)
    owner = {k: name for name, sd in shards.items() for k in sd}
    state = {k: v for sd in shards.values() for k, v in sd.items()}
    edit(state)
    new = {name: {} for name in SHARDS}
    for k, v in state.items():
        new[owner.get(k, SHARDS[-1])][k] = v
    for name, sd in new.items():
        torch.save(sd, folder / name)
    index = json.loads((folder / INDEX).read_text())
    index["weight_map"] = {k: name for name, sd in new.items() for k in sd}
    (folder / INDEX).write_text(json.dumps(index))


def _rename(state: dict, old: str, new: str) -> None:
    state[new] = state.pop(old)


# --- the official layout ------------------------------------------------------------------


def test_tiny_folder_has_the_official_files(tiny_dir):
    folder = tiny_dir / "vrshq"
    names = {p.name for p in folder.iterdir()}
    # the official folder's files, plus our SAM-2 config (the official hiera-L is implied)
    assert names == OFFICIAL_FILES | {SAM2_CONFIG_FILE}
    added = json.loads((folder / "added_tokens.json").read_text())
    assert added == {SEG_TOKEN: TINY_VOCAB, TAK_TOKEN: TINY_VOCAB + 1}
    config = json.loads((folder / "config.json").read_text())
    assert config["vocab_size"] == TINY_VOCAB + 2
    assert "untrained" in config["vrshq_weights"]
    assert (tiny_dir / "sam2" / "model.pt").is_file() and (tiny_dir / "clip").is_dir()


def test_state_dict_keys_are_the_official_ones(tiny_dir):
    folder = tiny_dir / "vrshq"
    shards = _read_shards(folder)
    index = json.loads((folder / INDEX).read_text())["weight_map"]
    state = {k: v for sd in shards.values() for k, v in sd.items()}
    assert index == {k: name for name, sd in shards.items() for k in sd}
    assert all(len(sd) > 0 for sd in shards.values())
    prefixes = ("model.layers.", "model.mm_projector.", "model.vision_tower.vision_tower.vision_model.",
                "model.visual_model.")
    singles = {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
               *(f"model.text_hidden_fcs.0.{i}.{p}" for i in (0, 2) for p in ("weight", "bias"))}
    stray = [k for k in state if k not in singles and not k.startswith(prefixes)]
    assert stray == []
    assert singles <= set(state)
    for prefix in prefixes:
        assert any(k.startswith(prefix) for k in state), prefix
    assert state["model.embed_tokens.weight"].shape[0] == TINY_VOCAB + 2
    assert state["lm_head.weight"].shape[0] == TINY_VOCAB + 2
    hidden = state["model.embed_tokens.weight"].shape[1]
    assert state["model.text_hidden_fcs.0.0.weight"].shape == (hidden, hidden)
    assert not any("rotary_emb" in k or k.startswith(("model.ctm", "model.block")) for k in state)
    assert not any(k.startswith("model.visual_model.model.") for k in state)


def test_load_round_trip_gives_the_written_tensors(tiny_dir, model):
    state = {k: v for sd in _read_shards(tiny_dir / "vrshq").values() for k, v in sd.items()}
    loaded = dict(model.mllm.state_dict())
    loaded.update({f"model.text_hidden_fcs.{k}": v for k, v in model.projection.state_dict().items()})
    loaded.update({f"model.visual_model.{k}": v for k, v in model.sam2.state_dict().items()})
    assert set(loaded) == set(state)
    for k, v in state.items():
        assert loaded[k].dtype == v.dtype, k
        assert torch.equal(loaded[k], v), k
    assert "untrained" in model.version
    assert model.seg_id == TINY_VOCAB and model.tak_id == TINY_VOCAB + 1


def test_write_tiny_is_deterministic(tiny_dir, tmp_path):
    again = tmp_path / "again"
    write_tiny_vrshq(again, seed=0)
    for name in (*SHARDS, INDEX, "tokenizer.model", "added_tokens.json", SAM2_CONFIG_FILE):
        if name.endswith(".bin"):
            a = torch.load(tiny_dir / "vrshq" / name, weights_only=True)
            b = torch.load(again / "vrshq" / name, weights_only=True)
            assert list(a) == list(b)
            assert all(torch.equal(a[k], b[k]) for k in a), name
        else:
            assert (tiny_dir / "vrshq" / name).read_bytes() == (again / "vrshq" / name).read_bytes()
    other = tmp_path / "other"
    write_tiny_vrshq(other, seed=1)
    a = torch.load(tiny_dir / "vrshq" / SHARDS[0], weights_only=True)
    b = torch.load(other / "vrshq" / SHARDS[0], weights_only=True)
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


# --- loader errors ------------------------------------------------------------------------


def test_missing_projection_key_is_named(tiny_dir, tmp_path):
    root = _copy(tiny_dir, tmp_path)
    _edit_checkpoint(root, lambda s: s.pop("model.text_hidden_fcs.0.2.bias"))
    with pytest.raises(ModelError, match=r"model\.text_hidden_fcs\.0\.2\.bias"):
        load_vrshq(root, CPU)


def test_key_in_index_but_not_in_shards_is_named(tiny_dir, tmp_path):
    root = _copy(tiny_dir, tmp_path)
    folder = root / "vrshq"
    shard = torch.load(folder / SHARDS[0], weights_only=True)
    gone = next(iter(shard))
    del shard[gone]
    torch.save(shard, folder / SHARDS[0])
    with pytest.raises(ModelError, match=gone.replace(".", r"\.")):
        load_vrshq(root, CPU)


def test_renamed_llama_key_is_named(tiny_dir, tmp_path):
    root = _copy(tiny_dir, tmp_path)
    old = "model.layers.0.self_attn.q_proj.weight"
    new = "model.layers.0.self_attn.query.weight"
    _edit_checkpoint(root, lambda s: _rename(s, old, new))
    with pytest.raises(ModelError) as info:
        load_vrshq(root, CPU)
    assert old in str(info.value) and new in str(info.value)


def test_renamed_visual_model_key_is_named(tiny_dir, tmp_path):
    root = _copy(tiny_dir, tmp_path)
    old = "model.visual_model.sam_mask_decoder.iou_token.weight"
    new = "model.visual_model.sam_mask_decoder.iou_tokens.weight"
    _edit_checkpoint(root, lambda s: _rename(s, old, new))
    with pytest.raises(ModelError) as info:
        load_vrshq(root, CPU)
    assert old in str(info.value) and new in str(info.value)


def test_without_visual_model_falls_back_to_sam2_folder(tiny_dir, tmp_path):
    root = _copy(tiny_dir, tmp_path)

    def strip(state):
        for k in [k for k in state if k.startswith("model.visual_model.")]:
            del state[k]

    _edit_checkpoint(root, strip)
    loaded = load_vrshq(root, CPU)
    expected = torch.load(root / "sam2" / "model.pt", weights_only=True)["model"]
    got = loaded.sam2.state_dict()
    assert set(got) == set(expected)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    (root / "sam2" / "model.pt").unlink()
    with pytest.raises(ModelError, match=r"model\.visual_model\..*sam2_hiera_large\.pt"):
        load_vrshq(root, CPU)


def test_tokenizer_vocab_mismatch(tiny_dir, tmp_path):
    root = _copy(tiny_dir, tmp_path)
    config_path = root / "vrshq" / "config.json"
    config = json.loads(config_path.read_text())
    config["vocab_size"] = TINY_VOCAB + 5
    config_path.write_text(json.dumps(config))
    with pytest.raises(ModelError, match=rf"{TINY_VOCAB + 2} tokens.*vocab_size is {TINY_VOCAB + 5}"):
        load_vrshq(root, CPU)


@pytest.mark.parametrize("content, needle", [
    ({SEG_TOKEN: TINY_VOCAB, TAK_TOKEN: TINY_VOCAB + 2}, "added_tokens.json"),
    ("{not json", "cannot load the tokenizer"),
    (None, "tokenizer.model"),
], ids=["added_token_id_gap", "added_tokens_not_json", "corrupt_sentencepiece"])
def test_bad_tokenizer_files_are_model_errors(tiny_dir, tmp_path, content, needle):
    root = _copy(tiny_dir, tmp_path)
    if content is None:
        (root / "vrshq" / "tokenizer.model").write_bytes(b"not a sentencepiece model")
    else:
        text = content if isinstance(content, str) else json.dumps(content)
        (root / "vrshq" / "added_tokens.json").write_text(text)
    with pytest.raises(ModelError, match=needle):
        load_vrshq(root, CPU)


@pytest.mark.parametrize("case", ["no_folder", "no_config", "no_tokenizer"])
def test_folder_errors(tiny_dir, tmp_path, case):
    if case == "no_folder":
        root, needle = tmp_path / "nowhere", "not found"
    else:
        root = _copy(tiny_dir, tmp_path)
        name = "config.json" if case == "no_config" else "tokenizer.model"
        (root / "vrshq" / name).unlink()
        needle = name
    with pytest.raises(ModelError, match=needle):
        load_vrshq(root, CPU)


# --- segment end to end -------------------------------------------------------------------


def test_every_frame_has_a_mask_for_every_prompt(two_runs):
    results, _, calls, _, num_frames = two_runs
    assert [r.obj_id for r in results] == [1, 2]
    assert [r.prompt for r in results] == PROMPTS
    for r in results:
        assert r.track.obj_id == r.obj_id
        assert r.track.frames() == list(range(num_frames))
        assert (r.track.height, r.track.width) == (120, 160)
        # the tiny SAM-2's object-score bias (+10) says "present": the keyframe decode and the
        # track on the keyframe are non-empty
        frame, mask = calls["keyframe_masks"][r.obj_id]
        assert frame == r.keyframe
        assert mask.sum() > 0
        assert r.track.mask(r.keyframe).any()
        assert r.track.is_present(r.keyframe)


def test_keyframe_decode_gets_the_engines_hole_filling(two_runs, model):
    # the release fills holes in the keyframe decode (fill_hole_area=8) before re-adding it
    calls = two_runs[2]
    assert model.config.engine.fill_hole_area == 8
    assert calls["fill_hole_area"] == [8] * len(PROMPTS)


def test_keyframe_is_the_tks_argmax_over_the_grid(two_runs, model, video):
    results, _, _, _, num_frames = two_runs
    for r in results:
        frames = [c.frame for c in r.candidates]
        assert frames == sample_frames(r.anchor, num_frames)
        assert r.anchor in frames and r.keyframe in frames
        obj = torch.tensor([c.object_score for c in r.candidates])
        lam = torch.tensor([c.lam for c in r.candidates])
        assert float(lam.sum()) == pytest.approx(1.0, abs=1e-5)
        assert bool((lam > 0).all())
        scores = torch.softmax(obj, dim=0) + lam
        torch.testing.assert_close(scores, torch.tensor([c.score for c in r.candidates]))
        assert frames[int(torch.argmax(scores))] == r.keyframe
        # the tiny SAM-2 says "present" everywhere
        assert all(c.object_score > 0 for c in r.candidates)


def test_anchor_is_the_clip_argmax(two_runs, model, video):
    results = two_runs[0]
    scorer = model.anchor_scorer
    with open_video(video) as r, torch.inference_mode():
        images = torch.stack([scorer.preprocess(Image.fromarray(f))
                              for _, f in r.iter_frames()])
        img = scorer.model.encode_image(images, normalize=True).float()
        for res in results:
            txt = scorer.model.encode_text(scorer.tokenizer([res.prompt]), normalize=True).float()
            probs = torch.softmax(scorer.model.logit_scale.exp() * img @ txt.t(), dim=0)[:, 0]
            assert res.anchor == int(torch.argmax(probs))


def test_two_runs_are_identical(two_runs):
    first, second, *_ = two_runs
    assert len(first) == len(second) == 2
    for a, b in zip(first, second):
        assert (a.prompt, a.obj_id, a.anchor, a.keyframe) == (b.prompt, b.obj_id, b.anchor, b.keyframe)
        assert a.candidates == b.candidates
        assert a.track == b.track
        assert a.keyframe_json() == b.keyframe_json()


def test_two_prompts_have_their_own_objects_and_keyframes(two_runs, reader):
    results = two_runs[0]
    one, two = results
    assert (one.obj_id, two.obj_id) == (1, 2)
    assert one.keyframe in [c.frame for c in one.candidates]
    assert two.keyframe in [c.frame for c in two.candidates]
    tracks = results_to_trackset(results, reader)
    assert tracks.obj_ids() == [1, 2]
    assert tracks[1] == one.track and tracks[2] == two.track
    doc = one.keyframe_json()
    assert doc["prompt"] == PROMPTS[0] and doc["object_id"] == 1 and doc["keyframe"] == one.keyframe
    assert {"frame", "object_score", "lam", "score"} <= set(doc["candidates"][0])
    json.dumps(doc)


def test_image_encoders_run_once_per_frame(two_runs):
    results, _, calls, stages, num_frames = two_runs
    # SAM-2: every frame encoded exactly once for keyframe selection and both passes
    assert calls["sam2_images"] == num_frames
    assert calls["stats"] == [(num_frames, num_frames)]
    # MLLM: once per distinct grid frame over both prompts
    grid_frames = set().union(*(sample_frames(r.anchor, num_frames) for r in results))
    assert sum(calls["mllm_rows"]) == len(grid_frames)
    # progress: every stage reported, propagation reaching all frames' results
    names = [s for s, _, _ in stages]
    assert names[0] == "anchor" and "keyframe" in names and names[-1] == "propagate"
    assert stages[-1][1] >= num_frames


def test_tda_fused_token(model, two_runs, video):
    results = two_runs[0]
    with open_video(video) as r:
        for res in results:
            grid = [c.frame for c in res.candidates]
            feats = model.encode_frames(r, grid)
            tokens = model.prompt_tokens(res.prompt, [feats[f] for f in grid])
            assert tokens.h_seg.shape == (len(grid), model.projection.out_dim)
            cos = torch.nn.functional.cosine_similarity(tokens.h_seg, tokens.h_tak[None], dim=-1)
            lam = torch.softmax(cos, dim=0)
            fused = tokens.h_tak + 0.1 * (lam[:, None] * tokens.h_seg).sum(0)
            torch.testing.assert_close(tokens.lam, lam)
            torch.testing.assert_close(tokens.h_tak_fused, fused)
            assert not torch.equal(tokens.h_tak_fused, tokens.h_tak)
            # the same weights that segment reported for the candidates
            np.testing.assert_allclose([c.lam for c in res.candidates], tokens.lam.numpy(),
                                       rtol=1e-6)


@pytest.mark.parametrize("prompts", [[], [""], ["   \n\t"], [None], [3], ["a dog", ""]],
                         ids=["none", "empty", "whitespace", "None", "int", "second_empty"])
def test_bad_prompts(model, reader, prompts):
    with pytest.raises(PromptError):
        model.segment(reader, prompts)


def test_a_bare_string_is_one_prompt(model, tmp_path, make_video):
    short = make_video("mp4", num_frames=6, width=160, height=120, fps=10.0)
    with open_video(short) as r:
        results = model.segment(r, "a dog", direction="forward")
    assert [(x.prompt, x.obj_id) for x in results] == [("a dog", 1)]
    assert results[0].track.frames() == list(range(results[0].keyframe, 6))


def test_each_frame_is_decoded_once_for_the_whole_pipeline(model, video):
    # The CLIP anchor pass also fills the SAM-2 feature cache: keyframe selection and both
    # propagation passes decode nothing more; only the MLLM's grid frames are read again.
    from vrshq.video.reader import DecordVideoReader

    reader = open_video(video)
    assert isinstance(reader, DecordVideoReader)
    decoded: list[int] = []
    read = reader._read

    def counting_read(index):
        decoded.append(index)
        return read(index)

    reader._read = counting_read
    results = model.segment(reader, ["the red ball"])
    grid = [c.frame for c in results[0].candidates]
    # One in-order pass over the video (anchor + SAM-2 features), then the MLLM's grid frames.
    assert decoded[:len(reader)] == list(range(len(reader)))
    assert sorted(decoded[len(reader):]) == sorted(grid)
    assert all(results[0].track.has(f) for f in range(len(reader)))
