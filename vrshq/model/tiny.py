"""A tiny, randomly initialised VRS-HQ in exactly the official checkpoint layout, for tests and demos.

``write_tiny_vrshq(model_dir)`` writes ``model_dir/vrshq/`` (config.json, the SentencePiece
tokenizer with [SEG]/[TAK] in added_tokens.json, two ``pytorch_model-0000N-of-00002.bin`` shards
with their index: LLaMA, CLIP tower, mm_projector, ``model.text_hidden_fcs.*`` and the SAM-2 under
``model.visual_model.*``) and ``model_dir/clip/`` (a tiny open_clip model for the anchor), so the
tests load it through the same loader as the released weights.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch

from vrshq.engine.tiny import present_bias, write_tiny_sam2
from vrshq.model.anchor import write_tiny_open_clip
from vrshq.model.chatunivi.config import tiny_config
from vrshq.model.chatunivi.modeling import ChatUniViForCausalLM, save_chatunivi_state_dict
from vrshq.model.projection import TextHiddenFcs
from vrshq.model.prompt import SEG_TOKEN, TAK_TOKEN
from vrshq.model.sam2_vrshq import OFFICIAL_OVERRIDES, PACKAGED_CONFIG, build_vrshq_sam2, with_prefix

SAM2_CONFIG_FILE = "sam2_config.yaml"  # ours: the official folder has none (hiera-L is implied)
TINY_VOCAB = 400

_CORPUS_WORDS = (
    "a chat between a curious human and an artificial intelligence assistant the assistant gives "
    "helpful detailed and polite answers to the human's questions user assistant reference video "
    "what is in the please respond with segmentation masks for each frame and for the entire "
    "video separately find it sure result of while person dog cat car ball red blue green left "
    "right running holding umbrella chasing the one that who which moving bird horse bike"
)


def _corpus() -> list[str]:
    words = _CORPUS_WORDS.split()
    lines = [" ".join(words[i:i + 9]) for i in range(0, len(words), 3)]
    lines += [f"({i}) frame {i}, ({i + 1}) {words[i % len(words)]}?" for i in range(40)]
    return lines * 4


def write_tiny_tokenizer(folder: Path) -> int:
    """Train a small deterministic LLaMA-style SentencePiece model into ``folder``; its vocab size."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus()), model_writer=buf, model_type="bpe",
        vocab_size=TINY_VOCAB, character_coverage=1.0, byte_fallback=True, split_digits=True,
        add_dummy_prefix=True, remove_extra_whitespaces=False, normalization_rule_name="identity",
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, minloglevel=2)
    (folder / "tokenizer.model").write_bytes(buf.getvalue())
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"add_bos_token": True, "add_eos_token": False, "legacy": True,
         "tokenizer_class": "LlamaTokenizer", "model_max_length": 2048}, indent=2))
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, indent=2))
    # The merged VRS-HQ checkpoint saves its two added tokens right after the base vocabulary.
    (folder / "added_tokens.json").write_text(json.dumps(
        {SEG_TOKEN: TINY_VOCAB, TAK_TOKEN: TINY_VOCAB + 1}, indent=2))
    return TINY_VOCAB


def write_tiny_vrshq(model_dir: str | Path, seed: int = 0, sam2: str = "tiny") -> Path:
    """Write ``model_dir/vrshq`` and ``model_dir/clip``; returns ``model_dir/vrshq``.

    ``sam2="release"`` puts the release's full-size SAM-2 (2.0 hiera-L at 1024 px, random
    weights, 224 M parameters) into the checkpoint instead of the tiny one, with no
    ``sam2_config.yaml``: the SAM-2 part is then exactly the release's layout (GPU benchmarks).
    """
    from omegaconf import OmegaConf

    from vrshq.engine.sam2_loader import load_config

    root = Path(model_dir)
    folder = root / "vrshq"
    folder.mkdir(parents=True, exist_ok=True)
    vocab = write_tiny_tokenizer(folder)

    if sam2 == "release":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            sam2_model = build_vrshq_sam2(PACKAGED_CONFIG)
        present_bias(sam2_model)
    elif sam2 == "tiny":
        sam2_config, sam2_ckpt = write_tiny_sam2(root / "sam2", preset="tiny", seed=seed)
        sam2_model = build_vrshq_sam2(sam2_config, sam2_ckpt)
        composed = load_config(sam2_config, OFFICIAL_OVERRIDES)
        (folder / SAM2_CONFIG_FILE).write_text("# @package _global_\n" + OmegaConf.to_yaml(composed))
    else:
        raise ValueError(f"sam2 must be 'tiny' or 'release', got {sam2!r}")

    config = tiny_config(vocab_size=vocab + 2, out_dim=int(sam2_model.hidden_dim),
                         vrshq_weights="tiny random weights, untrained")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mllm = ChatUniViForCausalLM(config)
        projection = TextHiddenFcs(config.hidden_size, config.out_dim)
    config.save_pretrained(str(folder))

    state = dict(mllm.state_dict())
    state.update({f"model.text_hidden_fcs.{k}": v for k, v in projection.state_dict().items()})
    state.update(with_prefix(sam2_model.state_dict()))
    save_chatunivi_state_dict(state, folder, num_shards=2)

    write_tiny_open_clip(root / "clip", seed=seed)
    return folder
