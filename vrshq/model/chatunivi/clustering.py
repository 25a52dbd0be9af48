"""Chat-UniVi's parameter-free token merging (DPC-KNN clustering + weighted averaging), image path.

Follows the maths of upstream `ChatUniVi/model/cluster.py` (`cluster_dpc_knn`, `merge_tokens`, `CTM`)
and the image branch of `project()` in `ChatUniVi/model/arch.py`, as vendored by VRS-HQ in
`model/univi/model/cluster.py` / `model/univi/model/arch.py` (brief-chatunivi.md §2). Written from the
description, not copied.

Everything is a pure function of tensors. Differences from upstream, all deliberate:

* The density tie-break noise ``U[0, 1e-6)`` is injectable (``density_noise``, ``generator``); the
  default is 0 so results are deterministic. Upstream draws it unseeded on every call.
* Exact score ties are broken towards the smaller token index (stable sort). Upstream's ``topk``
  leaves tie order unspecified, but its noise makes exact ties a probability-zero event.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "ClusterLevel",
    "DPCResult",
    "OFFICIAL_LEVELS",
    "cluster_count",
    "effective_k",
    "pairwise_distances",
    "local_density",
    "distance_to_denser",
    "dpc_knn",
    "merge_tokens",
    "ctm",
    "image_tokens",
    "tokens_per_image",
]


@dataclass(frozen=True)
class ClusterLevel:
    """One `CTM` stage: `sample_ratio` > 1 is an absolute cluster count, <= 1 a fraction of N."""

    sample_ratio: float
    k: int


#: ctm0 (64, k=5) -> ctm1 (32, k=3) -> ctm2 (16, k=3); brief §2.3 / §2.4.
OFFICIAL_LEVELS: tuple[ClusterLevel, ...] = (ClusterLevel(64, 5), ClusterLevel(32, 3), ClusterLevel(16, 3))


def cluster_count(num_tokens: int, sample_ratio: float) -> int:
    """M for a CTM stage (upstream `CTM.forward`): ceil(ratio) if ratio > 1 else max(ceil(N*ratio), 1)."""
    if sample_ratio > 1:
        return int(math.ceil(sample_ratio))
    return max(int(math.ceil(num_tokens * sample_ratio)), 1)


def effective_k(k: int, cluster_num: int) -> int:
    """k used for the density (upstream `CTM.forward`): k if k <= M else min(3, max(M // 2, 1))."""
    if k <= cluster_num:
        return k
    return min(3, max(cluster_num // 2, 1))


@dataclass(frozen=True)
class DPCResult:
    """Output of `dpc_knn` for a batch: all per-token tensors are [B, N], centres [B, M]."""

    centres: torch.Tensor  # token index of each centre, in descending score order
    assignment: torch.Tensor  # cluster id (0..M-1) of each token; centre m is in cluster m
    density: torch.Tensor  # rho, float32
    delta: torch.Tensor  # distance to the nearest denser token (or D_max), float32
    score: torch.Tensor  # rho * delta, float32


def pairwise_distances(x: torch.Tensor) -> torch.Tensor:
    """d_ij = ||x_i - x_j|| / sqrt(C) in float32 via `torch.cdist` (same call as upstream). [B,N,C] -> [B,N,N]."""
    xf = x.float()
    return torch.cdist(xf, xf) / (x.shape[-1] ** 0.5)


def local_density(
    dist: torch.Tensor,
    k: int,
    *,
    density_noise: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """rho_i = exp(-mean of the k smallest d_ij^2 (self included)) + noise_i. [B,N,N] -> [B,N]."""
    nearest = torch.topk(dist, k=k, dim=-1, largest=False).values
    density = (-(nearest**2).mean(dim=-1)).exp()
    if density_noise:
        noise = torch.rand(density.shape, generator=generator, dtype=density.dtype, device=density.device)
        density = density + noise * density_noise
    return density


def distance_to_denser(dist: torch.Tensor, density: torch.Tensor) -> torch.Tensor:
    """delta_i = min(D_max, min_{j: rho_j > rho_i} d_ij), D_max = largest distance of the element."""
    mask = (density[:, None, :] > density[:, :, None]).to(dist.dtype)  # mask[b, i, j] = rho_j > rho_i
    dist_max = dist.flatten(1).max(dim=-1).values[:, None, None]
    return (dist * mask + dist_max * (1 - mask)).min(dim=-1).values


def dpc_knn(
    x: torch.Tensor,
    cluster_num: int,
    k: int,
    *,
    density_noise: float = 0.0,
    generator: torch.Generator | None = None,
) -> DPCResult:
    """DPC-KNN on x [B, N, C] (upstream `cluster_dpc_knn`, brief §2.1); runs under `no_grad`."""
    if x.dim() != 3:
        raise ValueError(f"expected tokens [B, N, C], got shape {tuple(x.shape)}")
    b, n, _ = x.shape
    if not 1 <= cluster_num <= n or not 1 <= k <= n:
        raise ValueError(f"need 1 <= cluster_num ({cluster_num}) <= N ({n}) and 1 <= k ({k}) <= N")
    with torch.no_grad():
        dist = pairwise_distances(x)
        density = local_density(dist, k, density_noise=density_noise, generator=generator)
        delta = distance_to_denser(dist, density)
        score = delta * density
        # top-M by descending score; exact ties -> smaller token index (stable sort)
        centres = torch.sort(score, dim=-1, descending=True, stable=True).indices[:, :cluster_num]
        # distance of every token to every centre: [B, M, N]; argmin returns the first minimum, so a
        # token equidistant to two centres joins the higher-scoring one
        to_centres = torch.gather(dist, 1, centres[:, :, None].expand(b, cluster_num, n))
        assignment = to_centres.argmin(dim=1)
        rows = torch.arange(b, device=x.device)[:, None].expand(b, cluster_num)
        assignment[rows, centres] = torch.arange(cluster_num, device=x.device)[None, :].expand(b, cluster_num)
    return DPCResult(centres=centres, assignment=assignment, density=density, delta=delta, score=score)


def merge_tokens(
    x: torch.Tensor,
    assignment: torch.Tensor,
    cluster_num: int,
    token_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """y_m = sum_{a(i)=m} w_i / (sum_{a(i)=m} w_i + 1e-6) * x_i (upstream `merge_tokens`, brief §2.2).

    With the default w_i = 1 this is the cluster mean times count / (count + 1e-6). Computed in x's
    dtype with `index_add_` like upstream; differentiable with respect to x.
    """
    b, n, c = x.shape
    if token_weight is None:
        token_weight = x.new_ones(b, n, 1)
    elif token_weight.dim() == 2:
        token_weight = token_weight[:, :, None]
    token_weight = token_weight.to(x.dtype)
    idx = (assignment + torch.arange(b, device=x.device)[:, None] * cluster_num).reshape(b * n)
    all_weight = token_weight.new_zeros(b * cluster_num, 1)
    all_weight.index_add_(0, idx, token_weight.reshape(b * n, 1))
    all_weight = all_weight + 1e-6
    norm_weight = token_weight.reshape(b * n, 1) / all_weight[idx]
    merged = x.new_zeros(b * cluster_num, c)
    merged.index_add_(0, idx, (x.reshape(b * n, c) * norm_weight).to(x.dtype))
    return merged.reshape(b, cluster_num, c)


def ctm(
    x: torch.Tensor,
    level: ClusterLevel,
    *,
    density_noise: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, DPCResult]:
    """One `CTM` + `TCBlock` stage: cluster x [B, N, C] into M tokens; returns ([B, M, C], clustering)."""
    m = cluster_count(x.shape[1], level.sample_ratio)
    k = effective_k(level.k, m)
    result = dpc_knn(x, m, k, density_noise=density_noise, generator=generator)
    return merge_tokens(x, result.assignment, m), result


def image_tokens(
    x: torch.Tensor,
    levels: tuple[ClusterLevel, ...] = OFFICIAL_LEVELS,
    *,
    density_noise: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Image path of `project()`: each level clusters the previous level's tokens; concatenate all.

    [B, 256, C] -> [B, 64 + 32 + 16, C] with the official levels. Batch elements are independent.
    """
    outs = []
    cur = x
    for level in levels:
        cur, _ = ctm(cur, level, density_noise=density_noise, generator=generator)
        outs.append(cur)
    return torch.cat(outs, dim=1)


def tokens_per_image(num_patches: int, levels: tuple[ClusterLevel, ...] = OFFICIAL_LEVELS) -> int:
    """Number of tokens `image_tokens` returns for `num_patches` input tokens (112 for the official path)."""
    total, n = 0, num_patches
    for level in levels:
        m = cluster_count(n, level.sample_ratio)
        if m > n:
            raise ValueError(f"cluster level {level} asks for {m} clusters of {n} tokens")
        total, n = total + m, m
    return total
