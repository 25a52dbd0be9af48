"""The SAM-2 inside VRS-HQ: SAM 2.0 hiera-L with the official builder's settings, and its weights.

VRS-HQ builds its SAM-2 in Python (``sam2/build_sam.py::_build_sam2_`` of SitongGong/VRS-HQ) with
the 2.0 hiera-L architecture and a few settings that differ from the packaged YAML; in the
merged checkpoint its weights sit under ``model.visual_model.``. We build the same model from
``sam2``'s packaged 2.0 config plus those settings, so the weights load strictly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from vrshq.engine.sam2_loader import build_model, load_checkpoint
from vrshq.errors import ModelError

PREFIX = "model.visual_model."
PACKAGED_CONFIG = "configs/sam2/sam2_hiera_l.yaml"

# _build_sam2_ in the official fork: single-mask outputs everywhere, binarised prompt masks in
# memory; stability-based multimask selection stays off (upstream's apply_postprocessing would
# turn it on). Hole filling (the fork's fill_hole_area=8) is EngineConfig.fill_hole_area (default
# 8), done by vrshq.engine.holes, since sam2 without its CUDA extension would skip it.
OFFICIAL_OVERRIDES = (
    "++model.multimask_output_in_sam=false",
    "++model.multimask_output_for_tracking=false",
    "++model.binarize_mask_from_pts_for_mem_enc=true",
    "++model.use_mask_input_as_output_without_sam=true",
)


def build_vrshq_sam2(config: str | Path = PACKAGED_CONFIG, checkpoint: str | Path | None = None,
                     device: str | torch.device = "cpu",
                     overrides: tuple[str, ...] = ()) -> torch.nn.Module:
    """The VRS-HQ SAM-2 (packaged 2.0 hiera-L by default), optionally with a sam2 checkpoint."""
    return build_model(config, checkpoint, device=device,
                       overrides=tuple(OFFICIAL_OVERRIDES) + tuple(overrides))


def split_visual_model(state_dict: Mapping[str, torch.Tensor]
                       ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(SAM-2 weights with ``model.visual_model.`` stripped, everything else)."""
    sam2, rest = {}, {}
    for key, value in state_dict.items():
        if key.startswith(PREFIX):
            sam2[key[len(PREFIX):]] = value
        else:
            rest[key] = value
    return sam2, rest


def load_visual_model(model: torch.nn.Module, sam2_state: Mapping[str, torch.Tensor],
                      source: str) -> None:
    """Load SAM-2 weights taken from a VRS-HQ checkpoint strictly, naming any key mismatch."""
    result = model.load_state_dict(dict(sam2_state), strict=False)
    problems = []
    if result.missing_keys:
        problems.append("missing " + ", ".join(PREFIX + k for k in result.missing_keys[:10]))
    if result.unexpected_keys:
        problems.append("unexpected " + ", ".join(PREFIX + k for k in result.unexpected_keys[:10]))
    if problems:
        raise ModelError(f"{source}: SAM-2 weights do not match the hiera-L 2.0 model "
                         f"({'; '.join(problems)})")


def with_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SAM-2 weights keyed as in the VRS-HQ checkpoint."""
    return {PREFIX + k: v for k, v in state_dict.items()}


__all__ = [
    "OFFICIAL_OVERRIDES",
    "PACKAGED_CONFIG",
    "PREFIX",
    "build_vrshq_sam2",
    "load_checkpoint",
    "load_visual_model",
    "split_visual_model",
    "with_prefix",
]
