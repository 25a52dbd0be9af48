"""Chat-UniVi (the MLLM of VRS-HQ): config, token merging, model, CLIP preprocessing."""

from .clustering import OFFICIAL_LEVELS, ClusterLevel, image_tokens, tokens_per_image
from .config import IMAGE_TOKEN_INDEX, ChatUniViConfig, tiny_config
from .image_processing import CLIP_MEAN, CLIP_STD, clip_preprocess, clip_preprocess_batch
from .modeling import (
    ChatUniViForCausalLM,
    ChatUniViOutput,
    load_chatunivi_state_dict,
    save_chatunivi_state_dict,
)

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "IMAGE_TOKEN_INDEX",
    "OFFICIAL_LEVELS",
    "ChatUniViConfig",
    "ChatUniViForCausalLM",
    "ChatUniViOutput",
    "ClusterLevel",
    "clip_preprocess",
    "clip_preprocess_batch",
    "image_tokens",
    "load_chatunivi_state_dict",
    "save_chatunivi_state_dict",
    "tiny_config",
    "tokens_per_image",
]
