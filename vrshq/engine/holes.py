"""Fill small holes in low-res mask logits, as sam2's post-processing does, in plain torch.

sam2 1.1.0 ``sam2/utils/misc.py`` ``fill_holes_in_mask_scores`` (L312-338): the background is
``mask <= 0``; its connected components come from the CUDA extension
(``sam2/csrc/connected_components.cu``): 8-connectivity, since the four pixels of a 2x2 block
share one label (``final_labeling``, L129-168) and ``merge`` (L72-118) unites a block with its
top-left and top-right blocks through the diagonal pixels too (L105-106, L112-113). Every
background component of area <= ``max_area`` becomes 0.1 (in the mask's dtype); there is no
border exclusion, so a small background region at the image edge is a hole too. Without
``sam2._C`` sam2 warns and skips the step; this module computes the same result on any device.
"""

from __future__ import annotations

import torch

# sam2/build_sam.py build_sam2_video_predictor(apply_postprocessing=True) and the VRS-HQ fork's
# sam2/build_sam.py _build_sam2_ both set fill_hole_area=8.
SAM2_FILL_HOLE_AREA = 8
# The score sam2 gives a filled hole: a small positive logit, so it becomes foreground.
HOLE_SCORE = 0.1


def _neighbourhood_min(labels: torch.Tensor, b: int, h: int, w: int, none: int) -> torch.Tensor:
    """[B, H*W] min of ``labels`` over each pixel's 3x3 neighbourhood (8-connectivity)."""
    padded = labels.new_full((b, h + 2, w + 2), none)
    padded[:, 1:-1, 1:-1] = labels.view(b, h, w)
    # separable: three columns, then three rows (integer-exact, cheaper than a 3x3 pool)
    rows = torch.minimum(torch.minimum(padded[:, :, :-2], padded[:, :, 1:-1]), padded[:, :, 2:])
    out = torch.minimum(torch.minimum(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])
    return out.reshape(b, h * w)


def _background_labels(background: torch.Tensor) -> torch.Tensor:
    """[B, H*W] 8-connected component labels of ``background`` [B, H, W]; H*W off it.

    Each component ends labelled with its smallest flat pixel index. Invariant: a pixel's label
    is the index of a pixel of the same component, no larger than its own. Each round takes the
    3x3 minimum, hooks it onto the pixel the old label points at (so whole label trees move at
    once) and jumps pointers twice; it stops when a round changes nothing, which can only happen
    once every component carries one label. Exact for any shape, and about five to ten rounds on
    256x256 masks (plain min propagation needs one round per pixel of the longest path).
    """
    b, h, w = background.shape
    n = h * w
    member = background.reshape(b, n)
    none = n  # the label of non-background pixels; index n is a sentinel column below
    index = torch.arange(n, device=background.device).expand(b, n)
    labels = torch.where(member, index, none)
    tail = labels.new_full((b, 1), none)
    while True:
        low = torch.where(member, _neighbourhood_min(labels, b, h, w, none), none)
        # hook: the pixel my label points at takes my neighbourhood's min (low <= my label)
        hooked = torch.cat([labels, tail], dim=1).scatter_reduce(1, labels, low, reduce="amin")
        new = torch.minimum(hooked[:, :n], low)
        for _ in range(2):
            new = torch.cat([new, tail], dim=1).gather(1, new)
        if torch.equal(new, labels):
            return labels
        labels = new


def component_labels_and_areas(members: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, H, W] 8-connected component labels of ``members`` (H*W off them) and each pixel's
    component area (for off pixels: the number of off pixels)."""
    b, h, w = members.shape
    n = h * w
    labels = _background_labels(members)
    # one bincount for the batch: image i's labels live in [i*(n+1), (i+1)*(n+1))
    flat = labels + torch.arange(b, device=members.device)[:, None] * (n + 1)
    areas = torch.bincount(flat.reshape(-1), minlength=b * (n + 1))
    return labels.view(b, h, w), areas.gather(0, flat.reshape(-1)).view(b, h, w)


def component_areas(members: torch.Tensor) -> torch.Tensor:
    """[B, H, W] the area of each pixel's 8-connected component of ``members`` [B, H, W]."""
    return component_labels_and_areas(members)[1]


def fill_holes(mask: torch.Tensor, max_area: int) -> torch.Tensor:
    """``mask`` [B, 1, H, W] with its background components (<= 0) of area <= max_area at 0.1."""
    if max_area < 0:
        raise ValueError(f"max_area must be >= 0, got {max_area}")
    if mask.dim() != 4 or mask.shape[1] != 1:
        raise ValueError(f"mask must be [B, 1, H, W], got shape {tuple(mask.shape)}")
    if max_area == 0 or mask.numel() == 0:
        return mask
    b, _, h, w = mask.shape
    n = h * w
    background = mask[:, 0] <= 0
    flat_bg = background.reshape(b, n)
    # fast path: masks with no background, or all background and too big to be a hole (an
    # absent object's NO_OBJ_SCORE frame), have nothing to fill
    if bool((~flat_bg.any(1) | (flat_bg.all(1) & (n > max_area))).all()):
        return mask
    area = component_areas(background)[:, None]
    is_hole = background[:, None] & (area <= max_area)
    score = torch.tensor(HOLE_SCORE, dtype=mask.dtype, device=mask.device)
    return torch.where(is_hole, score, mask)
