"""Engine configuration: device, precision and memory budgets, in one typed place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from vrshq.engine.holes import SAM2_FILL_HOLE_AREA

MiB = 1024 * 1024

Precision = Literal["auto", "official", "fp32"]
PRECISIONS: tuple[str, ...] = ("auto", "official", "fp32")


def check_precision(precision: str) -> str:
    """``precision`` if it names a plan, else ValueError listing the plans."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    return precision


@dataclass(frozen=True)
class EngineConfig:
    """How a tracking session runs: device, precision, memory budgets and spill policy."""

    device: str = "auto"
    # The precision plan. "official" is the VRS-HQ release's (evaluation_multiseg.py
    # --precision bf16): model weights cast to bf16 and the computation in bf16; "fp32" is
    # float32 throughout; "auto" is official on CUDA and fp32 on a CPU. sam2 stores its
    # memories in bf16 under either plan.
    precision: Precision = "auto"
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
        check_precision(self.precision)
        if isinstance(self.fill_hole_area, bool) or not isinstance(self.fill_hole_area, int) \
                or self.fill_hole_area < 0:
            raise ValueError(f"fill_hole_area must be an int >= 0, got {self.fill_hole_area!r}")

    def resolved_device(self) -> torch.device:
        """The torch device this config selects."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def resolved_precision(self) -> Literal["official", "fp32"]:
        """The plan ``auto`` stands for on this config's device."""
        if self.precision != "auto":
            return self.precision  # type: ignore[return-value]
        return "official" if self.resolved_device().type == "cuda" else "fp32"

    def dtype(self) -> torch.dtype:
        """The dtype model weights are cast to and computed in: bf16 (official) or float32."""
        return torch.bfloat16 if self.resolved_precision() == "official" else torch.float32


    def spill_dir(self) -> str | None:
        """Where spilled tensors go (None: the system temp dir)."""
        return self.cache_dir
