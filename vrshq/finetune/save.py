"""Save a fine-tuned VRS-HQ in the official checkpoint layout, with a model card.

The output is a model folder like the one it was trained from: ``OUT/vrshq/`` (config.json, the
tokenizer files, ``pytorch_model-0000i-of-0000n.bin`` shards with the official key names: the
merged LLM, ``model.text_hidden_fcs.*`` and SAM-2 under ``model.visual_model.*``), and the
base's ``clip/`` and ``sam2/`` folders (unchanged weights, hard-linked when possible), so
``load_vrshq`` and the backend load it like the base.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vrshq.errors import VrshqError
from vrshq.model.chatunivi.modeling import save_chatunivi_state_dict
from vrshq.model.loading import PROJECTION_PREFIX
from vrshq.model.pipeline import Vrshq
from vrshq.model.sam2_vrshq import with_prefix

CARD_JSON = "model_card.json"
CARD_MD = "MODEL_CARD.md"
_WEIGHTS = ("pytorch_model", "model.safetensors", "model-0")


def _link_or_copy(src: str, dst: str) -> None:
    """``dst`` becomes ``src``'s content: a hard link when the file system allows, else a copy."""
    if os.path.exists(dst) and os.path.samefile(src, dst):
        return  # already a link to this very file (an earlier save of the same run)
    tmp = f"{dst}.tmp"
    Path(tmp).unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)  # over an older file of that name, never beside it


def save_finetuned(model: Vrshq, base_dir: Path, out_dir: Path, card: dict[str, Any],
                   num_shards: int = 2) -> Path:
    """Write the merged model to ``out_dir`` (see the module docstring); returns ``out_dir/vrshq``."""
    base = Path(base_dir)
    base_folder = base / "vrshq" if (base / "vrshq").is_dir() else base
    out = Path(out_dir)
    folder = out / "vrshq"
    folder.mkdir(parents=True, exist_ok=True)
    for item in base_folder.iterdir():  # config, tokenizer, SAM-2 config: everything but weights
        if item.is_file() and not item.name.startswith(_WEIGHTS):
            shutil.copy2(item, folder / item.name)
    for sub in ("clip", "sam2"):
        if (base / sub).is_dir() and base_folder != base:
            try:
                shutil.copytree(base / sub, out / sub, copy_function=_link_or_copy, dirs_exist_ok=True)
            except shutil.Error as exc:  # its message is a list of every failed file: name one
                src, _, why = exc.args[0][0]
                raise VrshqError(f"{out / sub}: cannot copy {src} there ({why})") from None
    state = {k: v.detach().cpu() for k, v in model.mllm.state_dict().items()}
    state.update({PROJECTION_PREFIX + k: v.detach().cpu() for k, v in model.projection.state_dict().items()})
    state.update({k: v.detach().cpu() for k, v in with_prefix(model.sam2.state_dict()).items()})
    save_chatunivi_state_dict(state, folder, num_shards=num_shards)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config["vrshq_weights"] = (f"fine-tuned from {card.get('base_version', 'the base')} for "
                               f"{card.get('steps', '?')} steps on {card.get('clips', '?')} expressions")
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    card = {**card, "saved_at": datetime.now(UTC).isoformat(timespec="seconds")}
    (out / CARD_JSON).write_text(json.dumps(card, indent=2) + "\n")
    (out / CARD_MD).write_text(model_card_markdown(card))
    return folder


def model_card_markdown(card: dict[str, Any]) -> str:
    """The model card as Markdown."""
    lines = [f"# {card.get('name', 'vrshq fine-tuned model')}", "",
             f"- base: {card.get('base_version')} ({card.get('base_dir')})",
             f"- data: {card.get('data')} ({card.get('clips')} expressions, "
             f"{card.get('videos')} videos)",
             f"- steps: {card.get('steps')} (batch {card.get('batch_size')} x accumulation "
             f"{card.get('grad_accum')}), lr {card.get('lr')}, LoRA r={card.get('lora_r')}",
             f"- loss: first {card.get('first_loss')}, last {card.get('last_loss')}",
             f"- saved: {card.get('saved_at')}"]
    if card.get("evaluation"):
        lines += ["", "## Evaluation", "", "```json", json.dumps(card["evaluation"], indent=2), "```"]
    return "\n".join(lines) + "\n"


__all__ = ["CARD_JSON", "CARD_MD", "model_card_markdown", "save_finetuned"]
