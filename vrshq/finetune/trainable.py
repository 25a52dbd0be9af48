"""Which weights fine-tuning trains: the official recipe (brief-vrshq.md §6.5; VRS-HQ ``train.py``).

LoRA (peft) r=8, alpha=16, dropout 0.05 on the LLM's ``q_proj``/``v_proj`` only (not the CLIP
tower's attention, which has layers of the same names); fully trainable ``lm_head``,
``embed_tokens``, SAM-2's ``sam_mask_decoder`` and the projection (``text_hidden_fcs``);
everything else frozen. After training the LoRA is merged into the LLM weights, so the saved
checkpoint has exactly the official key set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from peft import LoraConfig
from peft.tuners.lora import LoraModel

from vrshq.model.pipeline import Vrshq

# Only the LLaMA decoder's attention: "model.layers.N.self_attn.q_proj", never the vision tower's
# "model.vision_tower....self_attn.q_proj" (LISA/VRS-HQ find_linear_layers excludes it the same way).
LORA_TARGETS = r"^model\.layers\.\d+\.self_attn\.(q_proj|v_proj)$"
ADAPTER = "default"


@dataclass(frozen=True)
class LoraSettings:
    """The LoRA hyper-parameters (official: r 8, alpha 16, dropout 0.05)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05


def prepare_trainable(model: Vrshq, lora: LoraSettings = LoraSettings(), seed: int = 0) -> LoraModel:
    """Freeze the model, inject LoRA into the LLM, unfreeze the officially trained parts.

    The LoRA A matrices are initialised from ``seed`` (B starts at zero), so a run is
    reproducible and a resumed run continues the same one.
    """
    for module in (model.mllm, model.projection, model.sam2):
        module.requires_grad_(False)
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=LORA_TARGETS, bias="none")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        wrapped = LoraModel(model.mllm, config, ADAPTER)  # injects into model.mllm in place
    model.mllm.lm_head.requires_grad_(True)
    model.mllm.model.embed_tokens.requires_grad_(True)
    model.sam2.sam_mask_decoder.requires_grad_(True)
    model.projection.requires_grad_(True)
    model.mllm.train()
    model.projection.train()
    model.sam2.train()
    return wrapped


def trainable_parameters(model: Vrshq) -> dict[str, torch.nn.Parameter]:
    """Every trainable parameter by a stable name (``mllm.``/``projection.``/``sam2.`` prefixes)."""
    out: dict[str, torch.nn.Parameter] = {}
    for prefix, module in (("mllm.", model.mllm), ("projection.", model.projection), ("sam2.", model.sam2)):
        for name, p in module.named_parameters():
            if p.requires_grad:
                out[prefix + name] = p
    return out


def merge_lora(model: Vrshq, wrapped: LoraModel) -> None:
    """Fold the LoRA weights into the LLM (the released checkpoint has no adapter keys); eval mode."""
    model.mllm = wrapped.merge_and_unload()
    for module in (model.mllm, model.projection, model.sam2):
        module.requires_grad_(False)
        module.eval()


__all__ = ["LORA_TARGETS", "LoraSettings", "merge_lora", "prepare_trainable", "trainable_parameters"]
