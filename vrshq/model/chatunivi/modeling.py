"""Chat-UniVi-7B as VRS-HQ runs it: LLaMA + CLIP-L/14 tower + Linear projector + DPC-KNN merging.

Module tree and state-dict keys follow brief-chatunivi.md §1.2-1.3 exactly:

* `model.embed_tokens.weight`, `model.layers.*`, `model.norm.weight`, `lm_head.weight`
* `model.vision_tower.vision_tower.vision_model.*` (a stock CLIP vision model; no `position_ids` key)
* `model.mm_projector.{weight,bias}` (one Linear, §1.5)
* no `ctm*` / `block*` keys (the merging is parameter-free, `clustering.py`)

The official checkpoint also holds 32 `model.layers.*.self_attn.rotary_emb.inv_freq` buffers
(transformers 4.31); they are dropped on load (§6). The CLIP tower is built eagerly from a known
config instead of upstream's delay-load (§1.7 "Our plan").

Upstream references: `model/univi/model/language_model/llama.py` (`ChatUniViLlamaForCausalLM`),
`model/univi/model/arch.py` (`MetaModel`, `encode_images`, `project`,
`prepare_inputs_labels_for_multimodal`), `model/univi/model/multimodal_encoder/clip_encoder.py`
(`CLIPVisionTower.feature_select` / `forward`) in SitongGong/VRS-HQ.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaModel

from vrshq.errors import ModelError

from .clustering import image_tokens
from .config import IMAGE_TOKEN_INDEX, ChatUniViConfig

__all__ = [
    "ChatUniViOutput",
    "ChatUniViModel",
    "ChatUniViForCausalLM",
    "CLIPVisionTower",
    "load_chatunivi_state_dict",
    "save_chatunivi_state_dict",
    "DROPPED_BUFFER_PATTERN",
]

#: keys the 4.31 checkpoint has and a 5.x model does not (non-persistent RoPE buffers)
DROPPED_BUFFER_PATTERN = re.compile(r"(^|\.)rotary_emb\.inv_freq$")


class _CLIPHolder(nn.Module):
    """Gives the CLIP model the `vision_model.` prefix it had in transformers 4.31.

    In transformers 5.x `CLIPVisionModel` holds `embeddings`/`encoder`/... directly; the checkpoint's
    keys are `...vision_tower.vision_model.embeddings...` (4.31 `CLIPVisionModel.vision_model`).
    """

    def __init__(self, config: CLIPVisionConfig) -> None:
        super().__init__()
        self.vision_model = CLIPVisionModel(config)


class CLIPVisionTower(nn.Module):
    """`model.vision_tower`: frozen CLIP, features = hidden_states[select_layer] without CLS (§1.4)."""

    def __init__(self, config: CLIPVisionConfig, select_layer: int = -2) -> None:
        super().__init__()
        self.vision_tower = _CLIPHolder(config)
        self.select_layer = select_layer
        self.requires_grad_(False)

    @property
    def clip(self) -> CLIPVisionModel:
        return self.vision_tower.vision_model

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] -> [N, num_patches, C] in the input dtype (upstream `CLIPVisionTower.forward`)."""
        clip = self.clip
        dtype = next(clip.parameters()).dtype
        out = clip(pixel_values.to(dtype), output_hidden_states=True)
        # "patch" is hard-coded by upstream `encode_images`: drop the CLS token
        return out.hidden_states[self.select_layer][:, 1:].to(pixel_values.dtype)


class ChatUniViModel(LlamaModel):
    """`model`: LLaMA decoder + `vision_tower` + `mm_projector` (upstream `ChatUniViLlamaModel`)."""

    def __init__(self, config: ChatUniViConfig) -> None:
        super().__init__(config)
        self.vision_tower = CLIPVisionTower(config.clip_vision_config(), config.mm_vision_select_layer)
        self.mm_projector = nn.Linear(config.mm_hidden_size, config.hidden_size)


@dataclass
class ChatUniViOutput:
    """`hidden_states` [B, L', H] (last layer, post-norm); `position_map` [B, L] maps each original token
    position to its expanded position (for a -200 placeholder: the first of its image tokens);
    `attention_mask` [B, L'] (1 = real token, image tokens included); `logits` [B, L', V] or None."""

    hidden_states: torch.Tensor
    attention_mask: torch.Tensor
    position_map: torch.Tensor
    logits: torch.Tensor | None = None


class ChatUniViForCausalLM(nn.Module):
    """Top module: `model` (`ChatUniViModel`) + `lm_head` (upstream `ChatUniViLlamaForCausalLM`)."""

    base_model_prefix = "model"  # what peft's LoraModel expects of a transformers model

    def __init__(self, config: ChatUniViConfig) -> None:
        super().__init__()
        if getattr(config, "_attn_implementation", None) != "eager":
            config._attn_implementation = "eager"  # parity with 4.31 (brief §6)
        self.config = config
        self.model = ChatUniViModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.cluster_levels = config.cluster_levels()
        self.image_token_count = config.image_token_count()

    # --- images -------------------------------------------------------------------------------

    def encode_images(
        self, pixel_values: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """[N, 3, H, W] -> [N, image_token_count, hidden] (upstream `encode_images` + image `project`)."""
        if pixel_values.dim() != 4:
            raise ModelError(f"images must be [N, 3, H, W], got shape {tuple(pixel_values.shape)}")
        feats = self.model.vision_tower(pixel_values)
        tokens = image_tokens(
            feats,
            self.cluster_levels,
            density_noise=self.config.cluster_density_noise,
            generator=generator,
        )
        proj = self.model.mm_projector
        return proj(tokens.to(proj.weight.dtype))

    # --- splicing -----------------------------------------------------------------------------

    def prepare_inputs_embeds(
        self,
        input_ids: torch.Tensor,
        image_features: torch.Tensor | None,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Replace each -200 by its image's tokens, in order (row-major) (brief §4.3).

        Returns (inputs_embeds [B, L', H], attention_mask [B, L'], position_map [B, L]). Rows of
        different expanded length are right-padded with zero embeddings and mask 0.
        """
        if input_ids.dim() != 2:
            raise ModelError(f"input_ids must be [B, L], got shape {tuple(input_ids.shape)}")
        b, length = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids, dtype=torch.long)
        is_image = input_ids == IMAGE_TOKEN_INDEX
        n_images = int(is_image.sum())
        n_given = 0 if image_features is None else image_features.shape[0]
        if n_images != n_given:
            raise ModelError(f"input_ids hold {n_images} image placeholders but {n_given} images were given")
        embed = self.model.embed_tokens
        text_embeds = embed(input_ids.masked_fill(is_image, 0))
        s = self.image_token_count
        rows: list[torch.Tensor] = []
        masks: list[torch.Tensor] = []
        position_map = torch.empty_like(input_ids, dtype=torch.long)
        next_image = 0
        for r in range(b):
            pieces: list[torch.Tensor] = []
            mask_pieces: list[torch.Tensor] = []
            pos = 0
            start = 0
            for p in is_image[r].nonzero().flatten().tolist():
                pieces.append(text_embeds[r, start:p])
                mask_pieces.append(attention_mask[r, start:p])
                position_map[r, start:p] = torch.arange(pos, pos + p - start)
                pos += p - start
                position_map[r, p] = pos
                assert image_features is not None
                pieces.append(image_features[next_image].to(text_embeds.dtype))
                mask_pieces.append(attention_mask.new_ones(s))
                pos += s
                next_image += 1
                start = p + 1
            pieces.append(text_embeds[r, start:])
            mask_pieces.append(attention_mask[r, start:])
            position_map[r, start:] = torch.arange(pos, pos + length - start)
            rows.append(torch.cat(pieces, dim=0))
            masks.append(torch.cat(mask_pieces, dim=0))
        new_len = max(x.shape[0] for x in rows)
        embeds = text_embeds.new_zeros(b, new_len, text_embeds.shape[-1])
        mask = attention_mask.new_zeros(b, new_len)
        for r in range(b):
            embeds[r, : rows[r].shape[0]] = rows[r]
            mask[r, : masks[r].shape[0]] = masks[r]
        return embeds, mask, position_map

    def forward(
        self,
        input_ids: torch.Tensor,
        images: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *,
        return_logits: bool = False,
        generator: torch.Generator | None = None,
        image_features: torch.Tensor | None = None,
    ) -> ChatUniViOutput:
        """input_ids [B, L] with -200 placeholders, images [N, 3, H, W] (one per placeholder, row-major).

        ``image_features`` ([N, tokens, hidden] from ``encode_images``) replaces ``images`` when a
        caller shares one encoding of a frame between several prompts.
        """
        if image_features is not None:
            feats = image_features
        else:
            feats = None if images is None or images.shape[0] == 0 else self.encode_images(images, generator=generator)
        embeds, mask, position_map = self.prepare_inputs_embeds(input_ids, feats, attention_mask)
        out = LlamaModel.forward(self.model, inputs_embeds=embeds, attention_mask=mask, use_cache=False)
        hidden = out.last_hidden_state
        logits = self.lm_head(hidden) if return_logits else None
        return ChatUniViOutput(hidden_states=hidden, attention_mask=mask, position_map=position_map, logits=logits)

    @staticmethod
    def hidden_before(output: ChatUniViOutput, input_ids: torch.Tensor, token_id: int) -> list[torch.Tensor]:
        """Per row, the hidden states at the positions whose *next* id is `token_id` ([n_r, H] each).

        This is the LISA / VRS-HQ rule for `[SEG]` / `[TAK]` (brief-vrshq.md §1.3).
        """
        result = []
        for r in range(input_ids.shape[0]):
            before = (input_ids[r, 1:] == token_id).nonzero().flatten()
            result.append(output.hidden_states[r, output.position_map[r, before]])
        return result

    # --- loading ------------------------------------------------------------------------------

    def load_state_dict_strict(
        self,
        state_dict: Mapping[str, torch.Tensor],
        ignore_prefixes: Iterable[str] = (),
    ) -> None:
        """Load official keys; drop `rotary_emb.inv_freq`; keys under `ignore_prefixes` are skipped on
        both sides (a caller that owns e.g. `model.visual_model.` loads them itself).

        Raises `ModelError` naming missing / unexpected keys and shape mismatches.
        """
        prefixes = tuple(ignore_prefixes)
        own = {k: v for k, v in self.state_dict().items() if not k.startswith(prefixes)} if prefixes else self.state_dict()
        given = {
            k: v for k, v in state_dict.items() if not DROPPED_BUFFER_PATTERN.search(k) and not (prefixes and k.startswith(prefixes))
        }
        missing = sorted(set(own) - set(given))
        unexpected = sorted(set(given) - set(own))
        bad_shape = sorted(
            f"{k}: checkpoint {tuple(given[k].shape)} vs model {tuple(own[k].shape)}"
            for k in set(own) & set(given)
            if tuple(given[k].shape) != tuple(own[k].shape)
        )
        problems = []
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", bad_shape)):
            if items:
                shown = ", ".join(items[:10]) + (f", ... ({len(items) - 10} more)" if len(items) > 10 else "")
                problems.append(f"{len(items)} {label}: {shown}")
        if problems:
            raise ModelError("Chat-UniVi checkpoint does not match the model: " + "; ".join(problems))
        result = self.load_state_dict(given, strict=False)
        leftover = [k for k in result.missing_keys if not (prefixes and k.startswith(prefixes))]
        if leftover or result.unexpected_keys:  # pragma: no cover - guarded by the checks above
            raise ModelError(f"load_state_dict left keys unresolved: {leftover + list(result.unexpected_keys)}")

    @classmethod
    def from_pretrained(
        cls,
        folder: str | os.PathLike,
        *,
        dtype: torch.dtype | None = None,
        ignore_prefixes: Iterable[str] = (),
    ) -> "ChatUniViForCausalLM":
        """Build from `folder/config.json` and load the folder's weights (bin shards or safetensors)."""
        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise ModelError(f"{folder}: no config.json")
        try:
            config = ChatUniViConfig.from_pretrained(str(folder))
        except Exception as exc:  # noqa: BLE001 - any parse/validation error is a bad config
            raise ModelError(f"{folder / 'config.json'}: {exc}") from exc
        model = cls(config)
        model.load_state_dict_strict(load_chatunivi_state_dict(folder), ignore_prefixes=ignore_prefixes)
        if dtype is not None:
            model.to(dtype)
        return model.eval()


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) pickle: no mmap
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        # torch's unpickling errors run to a page of advice; the first sentence is the reason
        reason = str(exc).strip().split(". ")[0].splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: cannot read weights ({reason}; a truncated or foreign file?)") from exc


def load_chatunivi_state_dict(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a `save_pretrained` folder: `model.safetensors[.index.json]` or
    `pytorch_model.bin[.index.json]` (shards `pytorch_model-0000X-of-0000N.bin`)."""
    folder = Path(folder)
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index_path = folder / index_name
        if index_path.is_file():
            try:
                weight_map = json.loads(index_path.read_text())["weight_map"]
            except (OSError, ValueError, KeyError) as exc:
                raise ModelError(f"{index_path}: malformed index ({exc})") from exc
            state: dict[str, torch.Tensor] = {}
            for shard in sorted(set(weight_map.values())):
                if not (folder / shard).is_file():
                    raise ModelError(f"{folder}: shard {shard} named in {index_name} is missing")
                state.update(_load_file(folder / shard))
            absent = sorted(set(weight_map) - set(state))
            if absent:
                raise ModelError(f"{folder}: {len(absent)} keys of {index_name} not found in the shards: {absent[:10]}")
            return state
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (folder / single).is_file():
            return _load_file(folder / single)
    raise ModelError(f"{folder}: no model.safetensors, pytorch_model.bin or their .index.json")


def save_chatunivi_state_dict(
    state_dict: Mapping[str, torch.Tensor], folder: str | os.PathLike, num_shards: int = 1
) -> list[Path]:
    """Write `state_dict` like transformers 4.31 `save_pretrained` (.bin): one `pytorch_model.bin`, or
    `pytorch_model-0000i-of-0000n.bin` shards in key order + `pytorch_model.bin.index.json`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    keys = list(state_dict)
    if num_shards <= 1:
        path = folder / "pytorch_model.bin"
        torch.save({k: state_dict[k].contiguous() for k in keys}, path)
        return [path]
    per = -(-len(keys) // num_shards)
    weight_map: dict[str, str] = {}
    paths = []
    total = 0
    for i in range(num_shards):
        name = f"pytorch_model-{i + 1:05d}-of-{num_shards:05d}.bin"
        chunk = {k: state_dict[k].contiguous() for k in keys[i * per : (i + 1) * per]}
        total += sum(t.numel() * t.element_size() for t in chunk.values())
        torch.save(chunk, folder / name)
        weight_map.update({k: name for k in chunk})
        paths.append(folder / name)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return paths
