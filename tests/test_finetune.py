"""Fine-tuning VRS-HQ on logged corrections: the recipe's pieces, resuming, and the proof that it helps.

The proof runs the whole loop on the tiny model (random weights, so it can learn the synthetic
shapes): corrections in the log + the backend's re-propagated tracks -> `vrshq corrections
export --format revos` -> `vrshq finetune` -> the loss falls, and `vrshq evaluate --model`
scores the new model higher J&F than the base on those videos.
"""

from __future__ import annotations

import json
import random
import re
import shutil

import numpy as np
import pytest
import torch

from tests.backend_fixtures import seed_corrections
from tests.cli_helpers import assert_one_line_error, run_cli
from vrshq.engine.config import EngineConfig
from vrshq.finetune.data import RevosClips
from vrshq.finetune.step import IGNORE_INDEX, answer_labels, clip_forward, dice_loss, sam_window
from vrshq.finetune.trainable import prepare_trainable, trainable_parameters
from vrshq.finetune.trainer import TrainConfig, Trainer, warmup_decay
from vrshq.model.chatunivi.modeling import load_chatunivi_state_dict
from vrshq.model.loading import load_vrshq
from vrshq.model.pipeline import VrshqConfig
from vrshq.model.prompt import build_prompt
from vrshq.model.tokenization import tokenize_prompt
from vrshq.synthetic import SyntheticSpec

CPU = VrshqConfig(engine=EngineConfig(device="cpu"))
SPECS = [SyntheticSpec(num_frames=12, width=160, height=120, num_objects=2, seed=s) for s in (1, 2)]


def load(model_dir) -> object:
    return load_vrshq(model_dir, CPU)


def _text(pieces: list[str]) -> str:
    """SentencePiece pieces as text (byte-fallback pieces like <0x53> included)."""
    out = bytearray()
    for piece in pieces:
        if piece.startswith("<0x") and piece.endswith(">"):
            out.append(int(piece[3:-1], 16))
        else:
            out += piece.replace("\u2581", " ").encode()
    return out.decode(errors="replace")


# --- the recipe's pieces ----------------------------------------------------------------------

def test_answer_labels_train_only_the_answer(tiny_models):
    model = load(tiny_models)
    prompt = build_prompt("the red disc", 3)
    ids = tokenize_prompt(model.tokenizer, prompt)
    labels = answer_labels(model.tokenizer, prompt, ids)
    first = next(i for i, t in enumerate(labels) if t != IGNORE_INDEX)
    assert all(t == IGNORE_INDEX for t in labels[:first]) and labels[first:] == ids[first:]
    # The targets start with the answer ("Sure, ...") and hold every [SEG] and the [TAK].
    text = _text(model.tokenizer.decode_pieces(labels[first:]))
    assert text.strip().startswith("Sure, the segmentation result of each frame is (0)"), text
    assert "ASSISTANT" not in text and "ASSISTANT:" in _text(model.tokenizer.decode_pieces(ids[:first]))
    assert labels.count(model.seg_id) == 3 and labels.count(model.tak_id) == 1
    assert model.seg_id not in labels[:first]


@pytest.mark.parametrize(("key", "n", "window"), [
    (0, 10, [0, 1, 2]), (5, 10, [4, 5, 6]), (9, 10, [7, 8, 9]), (1, 2, [0, 1]), (0, 1, [0])])
def test_sam_sees_three_frames_around_the_keyframe(key, n, window):
    assert sam_window(key, n) == window


def test_warmup_then_linear_decay():
    assert [warmup_decay(s, 4, 12) for s in (0, 2, 4, 8, 12, 13)] == [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
    assert warmup_decay(0, 0, 10) == 1.0


def test_dice_loss_by_hand():
    target = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    logits = torch.tensor([[20.0, -20.0], [-20.0, -20.0]])  # p ~ [1, 0, 0, 0]
    # LISA: 1 - (2 * sum(p/1000 * t) + eps) / (sum(p/1000) + sum(t/1000) + eps), eps = 1e-6
    assert float(dice_loss(logits, target)) == pytest.approx(1 - (0.002 + 1e-6) / (0.003 + 1e-6), abs=1e-6)
    assert float(dice_loss(torch.full((2, 2), 30.0), torch.ones(2, 2))) == pytest.approx(0, abs=1e-4)


def test_trainable_parameters_follow_the_official_recipe(tiny_models):
    model = load(tiny_models)
    prepare_trainable(model)
    names = set(trainable_parameters(model))
    lora = {n for n in names if "lora_" in n}
    assert lora and all(".self_attn.q_proj." in n or ".self_attn.v_proj." in n for n in lora)
    assert all(n.startswith("mllm.model.layers.") for n in lora)  # never the CLIP tower's q/v
    rest = names - lora
    groups = {n.split(".")[0] + "." + n.split(".")[1] for n in rest}
    assert groups == {"mllm.lm_head", "mllm.model", "projection.0", "sam2.sam_mask_decoder"}
    assert {n for n in rest if n.startswith("mllm.model")} == {"mllm.model.embed_tokens.weight"}
    frozen = [n for n, p in model.sam2.named_parameters() if not p.requires_grad]
    assert any(n.startswith("image_encoder") for n in frozen)
    assert any(n.startswith("memory_attention") for n in frozen)


def test_one_clip_gives_gradients_to_the_trained_parts(tiny_models, truth):
    from vrshq.finetune.step import Clip
    from vrshq.synthetic import render_scene

    model = load(tiny_models)
    prepare_trainable(model)
    spec = SyntheticSpec(num_frames=12, width=160, height=120, num_objects=2, seed=5)
    frames = [f for f, _ in render_scene(spec)]
    clip = Clip(frames[:9], [truth[i] == 1 if i % 2 == 0 else None for i in range(9)], "the red disc")
    out = clip_forward(model, clip)
    assert out.ce > 0 and out.bce > 0 and 0 <= out.dice <= 1
    assert len(out.sam_frames) == 3 and out.keyframe in out.sam_frames
    out.loss.backward()
    params = trainable_parameters(model)
    assert all(p.grad is not None for n, p in params.items() if "lora_B" in n or "sam_mask_decoder.transformer" in n)
    assert all(p.grad is None for p in model.sam2.image_encoder.parameters())


# --- data, export and the proof -----------------------------------------------------------------

@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_models):
    """Corrections of 2 synthetic videos, their tracks, exported as a revos training set."""
    base = tmp_path_factory.mktemp("finetune")
    media, model_dir = base / "media", base / "backend"
    seed_corrections(model_dir, media, SPECS)
    data = base / "data"
    from vrshq.cli import main

    assert main(["corrections", "export", "--format", "revos", "--out", str(data),
                 "--data-dir", str(model_dir), "--media-root", str(media)]) == 0
    return data


def test_clips_follow_the_uniform_policy(exported):
    clips = RevosClips(exported)
    assert len(clips) == 2
    rng = random.Random(0)
    for _ in range(5):
        indices = clips.uniform_indices(12, rng)
        assert 8 <= len(indices) <= 12 and indices == sorted(set(indices))
    clip = clips.sample(random.Random(1))
    assert clip.expression == "the red disc" and all(m is not None for m in clip.masks)
    assert clip.frames[0].shape == (120, 160, 3)


def test_training_resumes_exactly_from_its_checkpoint(tiny_models, exported, tmp_path):
    def run(steps, out, resume=False):
        model = load(tiny_models)
        prepare_trainable(model)
        trainer = Trainer(model, RevosClips(exported), TrainConfig(steps=steps, lr=1e-3, warmup_steps=2,
                                                                   checkpoint_every=2), out)
        if resume:
            assert trainer.resume() and trainer.step == 2
        trainer.run()
        return trainer, {k: p.detach().clone() for k, p in trainer.params.items()}

    straight, params = run(4, tmp_path / "a")
    run(2, tmp_path / "b")
    resumed, params_b = run(4, tmp_path / "b", resume=True)
    assert [h.loss for h in resumed.history] == pytest.approx([h.loss for h in straight.history])
    assert all(torch.equal(params[k], params_b[k]) for k in params)


@pytest.mark.timeout(900)
def test_finetuning_on_corrections_lowers_the_loss_and_raises_j_and_f(tiny_models, exported, tmp_path, capfd):
    out = tmp_path / "tuned"
    code, stdout, err = run_cli(capfd, *["finetune", "--data", str(exported), "--base", str(tiny_models),
                                 "--out", str(out), "--steps", "100", "--lr", "1e-3",
                                 "--warmup-steps", "10", "--checkpoint-every", "50", "--device", "cpu"])
    assert code == 0, err
    card = json.loads((out / "model_card.json").read_text())
    assert card["steps"] == 100 and card["clips"] == 2 and len(card["losses"]) == 100
    assert np.mean(card["losses"][-10:]) < 0.6 * np.mean(card["losses"][:10])
    # The official layout: the same keys as the base, the LoRA merged away.
    assert set(load_chatunivi_state_dict(out / "vrshq")) == set(load_chatunivi_state_dict(tiny_models / "vrshq"))
    assert "fine-tuned from" in load(out).version

    scores = {}
    for name, model_dir in (("base", tiny_models), ("tuned", out)):
        target = tmp_path / name
        code, _, err = run_cli(capfd, *["evaluate", "--model", str(model_dir), "--data", str(exported),
                                "--split", "train", "--device", "cpu", "--out", str(target)])
        assert code == 0, err
        scores[name] = json.loads((target / "scores.json").read_text())
    assert scores["tuned"]["J&F"] > scores["base"]["J&F"] + 0.1, scores
    assert scores["tuned"]["J"] > scores["base"]["J"]


def test_evaluate_runs_the_model_at_the_precision_asked(tiny_models, exported, tmp_path, capfd):
    from vrshq.engine.config import EngineConfig
    from vrshq.finetune.evaluate import evaluate_model
    from vrshq.model.loading import load_vrshq
    from vrshq.model.pipeline import VrshqConfig

    scores = {}
    for plan in ("official", "fp32"):
        code, out, err = run_cli(capfd, *["evaluate", "--model", str(tiny_models), "--data", str(exported),
                                  "--split", "train", "--device", "cpu", "--precision", plan,
                                  "--out", str(tmp_path / plan)])
        assert code == 0, err
        assert f"precision: {plan}" in out
        scores[plan] = json.loads((tmp_path / plan / "scores.json").read_text())
        assert scores[plan]["precision"] == plan
        model = load_vrshq(tiny_models, VrshqConfig(engine=EngineConfig(device="cpu", precision=plan)))
        want = evaluate_model(model, exported, "train")
        assert scores[plan]["videos"] == want["videos"], plan  # the same run, in this process
    # the two plans are told apart by their masks (else the comparison above proves nothing)
    assert scores["official"]["videos"] != scores["fp32"]["videos"]


def test_finetune_bar_only_when_asked(tiny_models, exported, tmp_path, capfd):
    base = ["finetune", "--data", exported, "--base", tiny_models, "--steps", "1", "--warmup-steps", "0",
            "--device", "cpu"]
    code, _, err = run_cli(capfd, *base, "--out", tmp_path / "a")
    assert code == 0 and err == "", err  # stderr is no terminal: no bar
    code, _, err = run_cli(capfd, *base, "--out", tmp_path / "b", "--progress")
    assert code == 0 and re.search(r"finetune: +100%\|", err), err


def test_finetune_errors_are_one_line(tiny_models, exported, tmp_path, capfd):
    code, _, err = run_cli(capfd, *["finetune", "--data", str(tmp_path / "nope"), "--base", str(tiny_models),
                            "--out", str(tmp_path / "o")])
    assert code == 2 and "meta_expressions.json" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capfd, *["finetune", "--data", str(exported), "--base", str(tiny_models),
                            "--out", str(tiny_models)])
    assert code == 2 and "--out must differ" in err
    code, _, err = run_cli(capfd, *["finetune", "--data", str(exported), "--base", str(tiny_models),
                            "--out", str(tmp_path / "o"), "--steps", "0"])
    assert code == 2 and "steps must be >= 1" in err


# --- re-runs on the same --out (issue 15 §3) -----------------------------------------------------

def _finetune(capfd, data, base, out, *extra):
    return run_cli(capfd, "finetune", "--data", data, "--base", base, "--out", out, "--lr", "1e-3",
                   "--warmup-steps", "1", "--checkpoint-every", "1", "--device", "cpu", *extra)


def _card(out):
    card = json.loads((out / "model_card.json").read_text())
    assert card["steps"] == len(card["losses"]), card  # the card never disagrees with itself
    return card


def test_a_rerun_resumes_and_the_card_tells_the_truth(tiny_models, exported, tmp_path, capfd):
    out = tmp_path / "tuned"
    code, _, err = _finetune(capfd, exported, tiny_models, out, "--steps", "2")
    assert code == 0, err
    first = _card(out)
    assert first["steps"] == 2
    clip_files = [p for p in (tiny_models / "clip").iterdir() if p.is_file()]
    assert clip_files and all((out / "clip" / p.name).samefile(p) for p in clip_files)  # hard links

    # The same command again: it resumes from the finished checkpoint and saves the same model.
    code, _, err = _finetune(capfd, exported, tiny_models, out, "--steps", "2")
    assert code == 0 and "Traceback" not in err, err
    assert _card(out)["losses"] == first["losses"]
    assert sorted(p.name for p in (out / "clip").iterdir()) == sorted(p.name for p in clip_files)
    assert all((out / "clip" / p.name).samefile(p) for p in clip_files)

    # A larger --steps extends the run: the card holds every step, the first ones unchanged.
    code, _, err = _finetune(capfd, exported, tiny_models, out, "--steps", "3")
    assert code == 0, err
    extended = _card(out)
    assert extended["steps"] == 3 and extended["losses"][:2] == first["losses"]
    assert extended["resumed_at"] == [2]  # steps 1-2 in one process, step 3 after resuming
    assert "fine-tuned from" in load(out).version and "for 3 steps" in load(out).version

    # A smaller --steps cannot undo trained steps: one line, and the saved model is untouched.
    code, _, err = _finetune(capfd, exported, tiny_models, out, "--steps", "1")
    assert_one_line_error(code, err, "--steps 1", "3 steps", "--overwrite")
    assert _card(out) == extended


def test_a_rerun_on_another_base_data_or_setting_refuses(tiny_models, exported, tmp_path, capfd):
    from vrshq.model.tiny import write_tiny_vrshq

    out = tmp_path / "tuned"
    code, _, err = _finetune(capfd, exported, tiny_models, out, "--steps", "1")
    assert code == 0, err
    before = _card(out)
    other_base = write_tiny_vrshq(tmp_path / "other-base", seed=1).parent
    code, _, err = _finetune(capfd, exported, other_base, out, "--steps", "2")
    assert_one_line_error(code, err, "--base", "--overwrite", "new --out")
    other_data = tmp_path / "other-data"
    shutil.copytree(exported, other_data)
    meta = other_data / "train" / "meta_expressions.json"
    meta.write_text(meta.read_text().replace("the red disc", "the round thing"))
    code, _, err = _finetune(capfd, other_data, tiny_models, out, "--steps", "2")
    assert_one_line_error(code, err, "--data", "--overwrite")
    code, _, err = _finetune(capfd, exported, tiny_models, out, "--steps", "2", "--seed", "7")
    assert_one_line_error(code, err, "--seed", "--overwrite")
    assert _card(out) == before  # nothing was trained or saved by a refused run

    # --overwrite starts over on the other base: a fresh run of its own steps.
    code, _, err = _finetune(capfd, exported, other_base, out, "--steps", "2", "--overwrite")
    assert code == 0, err
    card = _card(out)
    assert card["steps"] == 2 and card["base_dir"] == str(other_base.resolve())
    assert card["resumed_at"] == [] and card["losses"][0] != before["losses"][0]  # not resumed
    assert all((out / "clip" / p.name).samefile(p) for p in (other_base / "clip").iterdir() if p.is_file())


def test_finetune_refuses_an_out_that_holds_something_else(tiny_models, exported, tmp_path, capfd):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    code, _, err = _finetune(capfd, exported, tiny_models, out, "--steps", "1")
    assert_one_line_error(code, err, "--out", "not empty")
    code, _, err = _finetune(capfd, exported, tiny_models, out, "--steps", "1", "--overwrite")
    assert_one_line_error(code, err, "--out", "not empty")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
