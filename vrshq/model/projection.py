"""``text_hidden_fcs``: the MLP that maps [SEG]/[TAK] hidden states into SAM-2's prompt space.

Module layout as upstream ``model/VISA_multiseg_cliptree_bf16.py`` L100-112 (brief-vrshq §1.4):
a ModuleList holding one Sequential(Linear(h, h), ReLU, Linear(h, out), Dropout(0)), so under the
parent ``model.text_hidden_fcs`` the keys are ``0.0.weight``, ``0.0.bias``, ``0.2.weight``,
``0.2.bias`` and the official checkpoint loads into it unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


class TextHiddenFcs(nn.ModuleList):
    """hidden_size -> hidden_size -> out_dim projection shared by [SEG] and [TAK]."""

    def __init__(self, hidden_size: int = 4096, out_dim: int = 256, dropout: float = 0.0) -> None:
        super().__init__([nn.Sequential(
            nn.Linear(hidden_size, hidden_size),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_size, out_dim),
            nn.Dropout(dropout),
        )])
        self.hidden_size = hidden_size
        self.out_dim = out_dim

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Project ``[..., hidden_size]`` to ``[..., out_dim]``."""
        return self[0](hidden)
