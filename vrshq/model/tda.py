"""Temporal Dynamic Aggregation (TDA) and the Token-driven Keyframe Selection (TKS) score.

Both run on the projected (SAM-2 prompt space, 256-d) tokens and are plain differentiable
torch ops, so they can sit inside a fine-tuning graph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ALPHA = 0.1  # --alpha default of upstream train.py L133 / evaluation_multiseg.py L124


def temporal_dynamic_aggregation(h_seg: torch.Tensor, h_tak: torch.Tensor, alpha: float = ALPHA
                                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fuse the per-frame [SEG] tokens into the video [TAK] token.

    ``h_seg`` [T', D], ``h_tak`` [D] -> ``(h_tak_fused [D], lam [T'])`` with
    s_i = cos(h_seg[i], h_tak), lam = softmax_i(s) (temperature 1) and
    h_tak_fused = h_tak + alpha * sum_i lam_i h_seg[i]
    (math of upstream ``model/VISA_multiseg_cliptree_bf16.py`` L464-472; training twin
    ``model/VISA_multiseg.py`` L385-393). ``lam`` is also TKS's similarity term.
    """
    if h_seg.dim() != 2:
        raise ValueError(f"h_seg must be [frames, dim], got shape {tuple(h_seg.shape)}")
    if h_tak.dim() == 2 and h_tak.shape[0] == 1:
        h_tak = h_tak[0]
    if h_tak.dim() != 1 or h_tak.shape[0] != h_seg.shape[1]:
        raise ValueError(f"h_tak must be [{h_seg.shape[1]}], got shape {tuple(h_tak.shape)}")
    if h_seg.shape[0] < 1:
        raise ValueError("h_seg needs at least one frame")
    sim = F.cosine_similarity(h_seg, h_tak[None, :], dim=-1)  # [T']
    lam = torch.softmax(sim, dim=0)
    fused = h_tak + alpha * (lam[:, None] * h_seg).sum(dim=0)
    return fused, lam


def first_argmax(values: torch.Tensor) -> int:
    """The index of the first maximum (``torch.argmax``'s documented tie rule, made explicit)."""
    flat = values.reshape(-1)
    return int(torch.nonzero(flat == flat.max())[0, 0])


def keyframe_scores(object_score_logits: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """TKS score per candidate: softmax over candidates of SAM-2's object-score logits + lam.

    Upstream ``model/VISA_multiseg_cliptree_bf16.py`` L508-519 (brief-vrshq §3.4); ``lam`` is
    the TDA weight of the pre-fusion [TAK] token, the CLIP frame probability is not used.
    The release's arithmetic, whatever the inputs' dtype: the logits' values (``.item()``)
    become a float32 tensor for the softmax, and the sum with lambda's values is in Python
    floats (float64); ``results.index(max(results))`` takes the first maximum.
    """
    logits = torch.as_tensor(object_score_logits).reshape(-1)
    lam = torch.as_tensor(lam).reshape(-1).to(device=logits.device)
    if logits.shape != lam.shape:
        raise ValueError(f"{logits.numel()} object scores but {lam.numel()} lambdas")
    if logits.numel() < 1:
        raise ValueError("no keyframe candidates")
    # float32 at least (bf16 scores are widened, as .item() does); float64 inputs keep theirs
    logits = logits if logits.dtype == torch.float64 else logits.float()
    return torch.softmax(logits, dim=0).double() + lam.double()


def select_keyframe(object_score_logits: torch.Tensor, lam: torch.Tensor) -> int:
    """Index (into the candidates) of the best TKS score; ties go to the first."""
    return first_argmax(keyframe_scores(object_score_logits, lam))
