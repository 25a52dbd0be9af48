"""Engine configuration: device, precision and memory budgets, in one typed place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from vrshq.engine.holes import SAM2_FILL_HOLE_AREA

MiB = 1024 * 1024


@dataclass(frozen=True)
class EngineConfig:
    """How a tracking session runs: device, precision, memory budgets and spill policy."""

    device: str = "auto"
    # "auto": bf16 autocast on CUDA, fp32 on CPU (sam2 stores memories in bf16 either way).
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # Image features kept on the compute device; on CUDA, a second CPU tier takes the overflow.
    feature_budget_bytes: int = 1024 * MiB
    cpu_feature_budget_bytes: int = 2048 * MiB
    # Per-object tracking state (memories, low-res masks, pointers) kept in memory.
    state_budget_bytes: int = 256 * MiB
    # What happens to features past the budgets: a disk cache, or recomputation on demand.
    feature_spill: Literal["disk", "recompute"] = "disk"
    cache_dir: str | None = None
    # Background regions of the low-res logits up to this area become foreground (sam2's
    # post-processing, done by vrshq.engine.holes without sam2's CUDA extension); 8 is sam2's
    # builder default and the VRS-HQ release's; 0 keeps the raw decoder output.
    fill_hole_area: int = SAM2_FILL_HOLE_AREA

    def __post_init__(self) -> None:
        if isinstance(self.fill_hole_area, bool) or not isinstance(self.fill_hole_area, int) \
                or self.fill_hole_area < 0:
            raise ValueError(f"fill_hole_area must be an int >= 0, got {self.fill_hole_area!r}")

    def resolved_device(self) -> torch.device:
        """The torch device this config selects."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype for model calls, or None for plain fp32."""
        device = self.resolved_device()
        if self.precision == "fp32":
            return None
        if self.precision == "bf16" or device.type == "cuda":
            return torch.bfloat16
        return None

    def spill_dir(self) -> str | None:
        """Where spilled tensors go (None: the system temp dir)."""
        return self.cache_dir
