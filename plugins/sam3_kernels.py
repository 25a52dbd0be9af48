"""Our stand-ins for the Hub kernel (``kernels-community/cv-utils``) SAM 3 uses in transformers.

transformers' ``Sam3VideoModel`` fetches that kernel for mask NMS of its detections and for the
connected components behind hole filling and sprinkle removal, and silently skips all three
when it cannot (offline, or no CUDA). :func:`install` gives it these instead, on any device and
offline: connected components from our hole filling (:mod:`vrshq.engine.holes`, the same
8-connectivity as cc_torch) and greedy NMS over the mask-IoU matrix (torchvision's ``nms`` takes
boxes only, and SAM 3 suppresses by mask IoU).
"""

from __future__ import annotations

import torch

from vrshq.engine.holes import component_labels_and_areas


class LocalCvUtils:
    """The two functions of the cv-utils kernel that transformers' SAM 3 calls."""

    @staticmethod
    def cc_2d(mask: torch.Tensor, get_counts: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Labels and per-pixel component areas of the non-zero pixels of ``mask`` [B, 1, H, W]."""
        labels, areas = component_labels_and_areas(mask[:, 0] != 0)
        return labels[:, None].to(torch.int32), areas[:, None].to(torch.int32)

    @staticmethod
    def generic_nms(ious: torch.Tensor, probs: torch.Tensor, iou_threshold: float,
                    use_iou_matrix: bool = True) -> torch.Tensor:
        """Indices kept by greedy NMS: best score first, dropping any later one overlapping a
        kept one by IoU > ``iou_threshold``; ties keep the lower index (a stable sort)."""
        order = torch.sort(probs, descending=True, stable=True).indices
        suppressed = torch.zeros(len(probs), dtype=torch.bool, device=probs.device)
        keep = []
        for i in order.tolist():
            if suppressed[i]:
                continue
            keep.append(i)
            suppressed |= ious[i] > iou_threshold
        return torch.tensor(sorted(keep), dtype=torch.int64, device=probs.device)


def install() -> None:
    """Make transformers' SAM 3 use our NMS and connected components (no Hub download)."""
    from transformers.models.sam3_video import modeling_sam3_video

    # the module keeps its kernel in this global (None: not tried yet); set, it is never fetched
    modeling_sam3_video.cv_utils_kernel = LocalCvUtils()
