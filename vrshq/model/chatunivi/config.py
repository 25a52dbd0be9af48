"""Config of Chat-UniVi-7B as VRS-HQ loads it (brief-chatunivi.md §3).

`ChatUniViConfig` is a `LlamaConfig` (transformers 5.x strict dataclass) with `model_type`
"ChatUniVi" and the multimodal fields the code reads (§3.4). Unknown keys of an official
`config.json` (the nested `config` dict with the cluster rates, `aarchitectures`, `mm_use_*`, ...)
are kept as attributes by the dataclass machinery; `cluster_levels()` reads the nested dict.
"""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import CLIPVisionConfig, LlamaConfig

from vrshq.errors import ModelError

from .clustering import ClusterLevel, OFFICIAL_LEVELS, tokens_per_image

__all__ = [
    "IMAGE_TOKEN_INDEX",
    "CLIP_L14_224",
    "OFFICIAL_CLUSTER_CONFIG",
    "ChatUniViConfig",
    "tiny_config",
]

#: placeholder id that `tokenizer_image_token` puts where `<image>` was (brief §4.2)
IMAGE_TOKEN_INDEX = -200

#: vision part of `openai/clip-vit-large-patch14` (brief §1.4)
CLIP_L14_224: dict[str, Any] = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "num_channels": 3,
    "patch_size": 14,
    "image_size": 224,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "attention_dropout": 0.0,
    "projection_dim": 768,
}

_KNOWN_TOWERS = {"openai/clip-vit-large-patch14": CLIP_L14_224}

#: `ModelConfig["FINETUNE"]` (`ChatUniVi/config/model_config.py`), stored as the nested `config` dict
OFFICIAL_CLUSTER_CONFIG: dict[str, Any] = {
    "use_cluster": True,
    "freeze": False,
    "mm_tune": True,
    "vision_tune": False,
    "spatial_cluster_rate0": 64,
    "spatial_cluster_rate1": 32,
    "spatial_cluster_rate2": 16,
    "temporal_cluster_rate": 0.0625,
}

#: k of ctm0 / ctm1 / ctm2 (hard-coded in upstream `MetaModel.__init__`)
_LEVEL_K = (5, 3, 3)


@strict
class ChatUniViConfig(LlamaConfig):
    """LLaMA fields (defaults = Vicuna-7B-v1.5 / Chat-UniVi-7B) + Chat-UniVi / VRS-HQ fields."""

    model_type = "ChatUniVi"

    # LLaMA defaults that differ from LlamaConfig's (brief §3.1 / §3.2)
    max_position_embeddings: int = 4096
    rms_norm_eps: float = 1e-5
    pad_token_id: int | None = 0

    # multimodal (brief §3.4)
    mm_vision_tower: str | None = "openai/clip-vit-large-patch14"
    mm_hidden_size: int = 1024
    mm_vision_select_layer: int = -2
    mm_vision_select_feature: str = "patch"
    #: explicit CLIPVisionConfig dict; None = derive from `mm_vision_tower` (only CLIP-L/14-224 known)
    vision_config: dict | None = None
    #: VRS-HQ `text_hidden_fcs` output size (SAM-2 prompt dim)
    out_dim: int = 256
    #: amplitude of the density tie-break noise; upstream uses 1e-6 unseeded, we default to 0 (deterministic)
    cluster_density_noise: float = 0.0

    def clip_vision_config(self) -> CLIPVisionConfig:
        """The tower's `CLIPVisionConfig`, with eager attention (brief §6)."""
        if self.vision_config is not None:
            fields = dict(self.vision_config)
        elif self.mm_vision_tower in _KNOWN_TOWERS:
            fields = dict(_KNOWN_TOWERS[self.mm_vision_tower])
        else:
            raise ModelError(
                f"unknown vision tower {self.mm_vision_tower!r}: only openai/clip-vit-large-patch14 is built in; "
                "put a CLIPVisionConfig dict under `vision_config` in config.json"
            )
        fields.pop("model_type", None)
        cfg = CLIPVisionConfig(**fields)
        cfg._attn_implementation = "eager"
        if cfg.hidden_size != self.mm_hidden_size:
            raise ModelError(
                f"mm_hidden_size {self.mm_hidden_size} does not match the vision tower width {cfg.hidden_size}"
            )
        return cfg

    def num_patches(self) -> int:
        cfg = self.clip_vision_config()
        return (cfg.image_size // cfg.patch_size) ** 2

    def image_size(self) -> int:
        return int(self.clip_vision_config().image_size)

    def cluster_levels(self) -> tuple[ClusterLevel, ...]:
        """ctm0..ctm2 from the nested `config` dict (`spatial_cluster_rate0..2`), k = 5, 3, 3."""
        nested = getattr(self, "config", None)
        if nested is None:
            return OFFICIAL_LEVELS
        if not isinstance(nested, dict):
            raise ModelError(f"config.json: `config` must be a dict of cluster settings, got {type(nested).__name__}")
        if nested.get("use_cluster", True) is False:
            raise ModelError("config.json: `config.use_cluster` is false; VRS-HQ always clusters image tokens")
        rates = []
        for i, level in enumerate(OFFICIAL_LEVELS):
            rate = nested.get(f"spatial_cluster_rate{i}", level.sample_ratio)
            if not isinstance(rate, (int, float)) or rate <= 0:
                raise ModelError(f"config.json: spatial_cluster_rate{i} must be a positive number, got {rate!r}")
            rates.append(ClusterLevel(float(rate) if rate <= 1 else rate, _LEVEL_K[i]))
        return tuple(rates)

    def image_token_count(self) -> int:
        """Tokens each `<image>` becomes: 64 + 32 + 16 = 112 for the official model."""
        try:
            return tokens_per_image(self.num_patches(), self.cluster_levels())
        except ValueError as exc:
            raise ModelError(f"cluster rates do not fit the vision tower: {exc}") from exc


def tiny_config(
    *,
    image_size: int = 128,
    patch_size: int = 8,
    hidden_size: int = 64,
    vision_hidden_size: int = 32,
    num_hidden_layers: int = 2,
    vocab_size: int = 122,
    **overrides: Any,
) -> ChatUniViConfig:
    """A tiny random-weight model for tests: LLaMA 64 wide, 2 layers, 4 heads; CLIP 32 wide, 2 layers.

    The default tower (128 px, patch 8) has 256 patches like the real one, so the official 64/32/16
    rates apply unchanged (112 tokens per image). For a smaller tower the rates are scaled
    proportionally to the patch count, rate_i = max(2, round(official_i * patches / 256)), e.g.
    64 patches (64 px) -> 16/8/4 = 28 tokens per image. (Rates > 1 are absolute counts, §2.3.)
    """
    patches = (image_size // patch_size) ** 2
    cluster = dict(OFFICIAL_CLUSTER_CONFIG)
    if patches != 256:
        for i, level in enumerate(OFFICIAL_LEVELS):
            cluster[f"spatial_cluster_rate{i}"] = max(2, round(level.sample_ratio * patches / 256))
    fields: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": 1024,
        "mm_vision_tower": "tiny-clip",
        "mm_hidden_size": vision_hidden_size,
        "vision_config": {
            "hidden_size": vision_hidden_size,
            "intermediate_size": 2 * vision_hidden_size,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_channels": 3,
            "patch_size": patch_size,
            "image_size": image_size,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
            "projection_dim": 16,
        },
        "config": cluster,
    }
    fields.update(overrides)
    return ChatUniViConfig(**fields)
