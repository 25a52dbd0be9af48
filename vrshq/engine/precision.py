"""The precision plan applied to a SAM-2 model: float32, or the release's bf16 weights.

The VRS-HQ release runs SAM-2 with bf16 weights (``evaluation_multiseg.py`` loads the model with
``torch_dtype=bf16`` under a DeepSpeed bf16 engine) and its fork of sam2 casts the float32
tensors sam2 makes along the way (positional encodings, upsampled masks, mask prompts) to bf16
by hand before they meet a weight (``sam2/sam2_video_inference_.py`` L1273-1274,
``sam2/modeling/sam2_base.py`` ``_encode_new_memory``). On stock sam2 we get the same effect
without editing it: every module with weights casts its floating inputs to its weights' dtype.
Autocast is no substitute: it runs layer norms in float32, which bf16 weights refuse on a CPU.
"""

from __future__ import annotations

from typing import Any

import torch

from vrshq.engine.config import EngineConfig
from vrshq.errors import ModelError

_HOOKED = "_vrshq_casts_inputs"


def _cast_inputs(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    dtype = next(module.parameters(recurse=False)).dtype

    def cast(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != dtype:
            return value.to(dtype)
        return value

    return tuple(cast(a) for a in args), {k: cast(v) for k, v in kwargs.items()}


def apply_precision(model: torch.nn.Module, config: EngineConfig) -> torch.nn.Module:
    """``model`` (a sam2 model) moved to the config's device and cast to its plan, in place."""
    from sam2.modeling.position_encoding import PositionEmbeddingRandom

    dtype = config.dtype()
    model.to(config.resolved_device(), dtype)
    if dtype == torch.float32:
        return model
    for module in model.modules():
        if isinstance(module, PositionEmbeddingRandom):
            # sam2 casts point coordinates to float32 itself before this matrix
            # (position_encoding.py forward_with_coords): it stays float32.
            module.positional_encoding_gaussian_matrix = \
                module.positional_encoding_gaussian_matrix.float()
        elif not getattr(module, _HOOKED, False) and any(True for _ in module.parameters(recurse=False)):
            module.register_forward_pre_hook(_cast_inputs, with_kwargs=True)
            setattr(module, _HOOKED, True)
    return model


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype of the model's weights (its first parameter's)."""
    return next(model.parameters()).dtype


def check_model_precision(model: torch.nn.Module, config: EngineConfig) -> None:
    """ModelError unless ``model`` holds the weights the config's precision plan computes in."""
    want, have = config.dtype(), model_dtype(model)
    if have != want:
        raise ModelError(f"the SAM-2 model's weights are {str(have).removeprefix('torch.')} but the "
                         f"precision plan {config.resolved_precision()!r} computes in "
                         f"{str(want).removeprefix('torch.')} (build it through apply_precision)")


__all__ = ["apply_precision", "check_model_precision", "model_dtype"]
