"""DPC-KNN token merging (vrshq.model.chatunivi.clustering) against hand-computed cases,
an independent loop reference, and the invariants of brief-chatunivi.md §2.7."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vrshq.model.chatunivi.clustering import (
    OFFICIAL_LEVELS,
    ClusterLevel,
    cluster_count,
    ctm,
    dpc_knn,
    effective_k,
    image_tokens,
    merge_tokens,
    tokens_per_image,
)

# Six 2-D points; C = 2 so every distance is divided by sqrt(2).
#   p0 (0,0)  p1 (1,0)  p2 (0,2)  p3 (10,0)  p4 (10,3)  p5 (14,0)
# k = 3 (self + 2 nearest). Sum of the two nearest raw squared distances:
#   p0: 1+4=5   p1: 1+5=6   p2: 4+5=9   p3: 9+16=25   p4: 9+25=34   p5: 16+25=41
# rho = exp(-(sum / 2) / 3) = exp(-sum / 6).
# D_max = |p2 - p5| / sqrt2 = sqrt(200)/sqrt(2) = 10.
# delta (nearest denser, /sqrt2): p0 -> D_max = 10; p1 -> p0: 1; p2 -> p0: 2; p3 -> p1: 9;
#   p4 -> p3: 3; p5 -> p3: 4   (all divided by sqrt 2 except D_max)
# gamma = rho * delta: p0 4.346, p1 0.260, p2 0.316, p3 0.0987, p4 0.0073, p5 0.0031
POINTS = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [10.0, 0.0], [10.0, 3.0], [14.0, 0.0]])
SUMS = torch.tensor([5.0, 6.0, 9.0, 25.0, 34.0, 41.0])
DELTA_RAW = torch.tensor([10.0 * math.sqrt(2), 1.0, 2.0, 9.0, 3.0, 4.0])


def test_hand_computed_density_delta_score():
    res = dpc_knn(POINTS[None], cluster_num=2, k=3)
    rho = torch.exp(-SUMS / 6)
    delta = DELTA_RAW / math.sqrt(2)
    torch.testing.assert_close(res.density[0], rho, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(res.delta[0], delta, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(res.score[0], rho * delta, rtol=1e-5, atol=1e-7)


def test_hand_computed_two_clusters():
    # centres by descending gamma: p0, p2. Assignment to the nearest centre:
    # p1 -> p0 (1 vs sqrt5), p3 -> p0 (10 vs sqrt104), p4 -> p2 (sqrt101 vs sqrt109), p5 -> p0 (14 vs sqrt200)
    res = dpc_knn(POINTS[None], cluster_num=2, k=3)
    assert res.centres[0].tolist() == [0, 2]
    assert res.assignment[0].tolist() == [0, 0, 1, 0, 1, 0]
    merged = merge_tokens(POINTS[None], res.assignment, 2)[0]
    # official weighting: sum / (count + 1e-6)
    expected = torch.tensor([[25.0 / (4 + 1e-6), 0.0], [10.0 / (2 + 1e-6), 5.0 / (2 + 1e-6)]])
    torch.testing.assert_close(merged, expected, rtol=1e-6, atol=1e-6)


def test_hand_computed_three_clusters_order_follows_score():
    # third centre is p1 (0.260) ahead of p3 (0.0987): output order = score order, not position order
    res = dpc_knn(POINTS[None], cluster_num=3, k=3)
    assert res.centres[0].tolist() == [0, 2, 1]
    # p1 is now a centre and the closest one for p3 (9), p4 (sqrt90 < sqrt101 < sqrt109) and p5 (13)
    assert res.assignment[0].tolist() == [0, 2, 1, 2, 2, 2]


def test_equidistant_token_joins_higher_scoring_centre():
    # two centres at (-1,0) and (1,0) clearly denser (each has close neighbours); token (0,0) in between
    pts = torch.tensor(
        [[-1.0, 0.0], [-1.0, 0.1], [-1.0, -0.1], [1.0, 0.0], [1.0, 0.1], [1.0, -0.12], [0.0, 0.0]]
    )
    res = dpc_knn(pts[None], cluster_num=2, k=3)
    first, second = res.centres[0].tolist()
    assert {first, second} == {0, 3}
    assert res.assignment[0, 6].item() == 0  # tie -> cluster 0, the higher-score centre


def test_cluster_count_and_effective_k_rules():
    assert cluster_count(256, 64) == 64
    assert cluster_count(10, 2.5) == 3
    assert cluster_count(16, 0.0625) == 1
    assert cluster_count(64, 0.0625) == 4
    assert cluster_count(3, 0.0625) == 1
    assert effective_k(5, 64) == 5
    assert effective_k(5, 4) == 2
    assert effective_k(5, 1) == 1
    assert effective_k(5, 10) == 5
    assert effective_k(7, 6) == 3
    assert tokens_per_image(256) == 112
    assert tokens_per_image(64, (ClusterLevel(16, 5), ClusterLevel(8, 3), ClusterLevel(4, 3))) == 28
    with pytest.raises(ValueError):
        tokens_per_image(32)


def _reference_dpc(x: np.ndarray, m: int, k: int):
    """Independent float64 loop version of brief §2.1 (one element)."""
    n, c = x.shape
    d = np.array([[np.sqrt(((x[i] - x[j]) ** 2).sum()) / np.sqrt(c) for j in range(n)] for i in range(n)])
    rho = np.array([np.exp(-np.mean(np.sort(d[i])[:k] ** 2)) for i in range(n)])
    dmax = d.max()
    delta = np.array([min([dmax] + [d[i, j] for j in range(n) if rho[j] > rho[i]]) for i in range(n)])
    score = rho * delta
    centres = sorted(range(n), key=lambda i: (-score[i], i))[:m]
    assign = [min(range(m), key=lambda a: (d[i, centres[a]], a)) for i in range(n)]
    for a, cidx in enumerate(centres):
        assign[cidx] = a
    merged = np.zeros((m, c))
    for a in range(m):
        members = [i for i in range(n) if assign[i] == a]
        merged[a] = x[members].sum(0) / (len(members) + 1e-6)
    return centres, assign, merged


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_loop_reference(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 20, 5, generator=g)
    res = dpc_knn(x, cluster_num=6, k=3)
    centres, assign, merged = _reference_dpc(x[0].double().numpy(), 6, 3)
    assert res.centres[0].tolist() == centres
    assert res.assignment[0].tolist() == assign
    torch.testing.assert_close(merge_tokens(x, res.assignment, 6)[0].double(), torch.from_numpy(merged), atol=1e-5, rtol=1e-5)


def _random_patches(b=2, n=256, c=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    # a few blobs so the clustering has structure
    centres = torch.randn(b, 12, c, generator=g) * 3
    which = torch.randint(0, 12, (b, n), generator=g)
    return torch.gather(centres, 1, which[..., None].expand(b, n, c)) + torch.randn(b, n, c, generator=g)


def test_official_path_shapes_and_cluster_invariants():
    x = _random_patches()
    out = image_tokens(x)
    assert out.shape == (2, 112, 16)
    cur = x
    for level, size in zip(OFFICIAL_LEVELS, (64, 32, 16)):
        merged, res = ctm(cur, level)
        assert merged.shape == (2, size, 16)
        for b in range(2):
            a = res.assignment[b]
            # every centre in its own cluster, no empty cluster
            assert a[res.centres[b]].tolist() == list(range(size))
            assert torch.bincount(a, minlength=size).min() >= 1
            # merged token = mean of its members (times count / (count + 1e-6))
            for m in range(size):
                members = cur[b, a == m]
                torch.testing.assert_close(merged[b, m], members.sum(0) / (len(members) + 1e-6), atol=1e-5, rtol=1e-5)
            # centres in descending score order
            s = res.score[b, res.centres[b]]
            assert torch.all(s[:-1] >= s[1:])
        cur = merged
    torch.testing.assert_close(out[:, 64:96], ctm(ctm(x, OFFICIAL_LEVELS[0])[0], OFFICIAL_LEVELS[1])[0])


def test_batch_consistency():
    x = _random_patches(b=3, seed=4)
    batched = image_tokens(x)
    single = torch.cat([image_tokens(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single, atol=1e-6, rtol=1e-6)


def test_token_permutation_does_not_change_output():
    # output order follows the score ranking, so permuting input tokens changes nothing (up to rounding)
    x = _random_patches(b=1, seed=5)
    perm = torch.randperm(256, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(image_tokens(x[:, perm]), image_tokens(x), atol=1e-5, rtol=1e-5)


def test_identical_tokens_merge_to_themselves():
    distinct = torch.tensor([[0.0, 0.0, 0.0], [5.0, 0.0, 1.0], [0.0, 7.0, 2.0], [3.0, 3.0, -4.0]])
    x = distinct.repeat(3, 1)[None]  # a b c d a b c d a b c d
    res = dpc_knn(x, cluster_num=4, k=3)
    merged = merge_tokens(x, res.assignment, 4)[0]
    # each cluster holds the three copies of one vector -> that vector (times 3/(3+1e-6))
    got = sorted(map(tuple, (merged * (3 + 1e-6) / 3).round(decimals=4).tolist()))
    assert got == sorted(map(tuple, distinct.tolist()))
    # merge_tokens on clusters of identical members returns them, in cluster order
    assignment = torch.tensor([[2, 0, 1, 2, 0, 1]])
    y = torch.tensor([[[1.0, 2.0]] * 1 + [[3.0, 4.0]] + [[5.0, 6.0]] + [[1.0, 2.0]] + [[3.0, 4.0]] + [[5.0, 6.0]]])
    torch.testing.assert_close(merge_tokens(y, assignment, 3)[0], torch.tensor([[3.0, 4.0], [5.0, 6.0], [1.0, 2.0]]), atol=1e-5, rtol=1e-6)


def test_token_weights_follow_official_normalisation():
    x = torch.tensor([[[1.0], [3.0], [10.0]]])
    a = torch.tensor([[0, 0, 1]])
    w = torch.tensor([[1.0, 3.0, 2.0]])
    out = merge_tokens(x, a, 2, token_weight=w)[0]
    torch.testing.assert_close(out, torch.tensor([[(1 + 9) / (4 + 1e-6)], [20 / (2 + 1e-6)]]))


def test_noise_is_injectable_and_seeded():
    x = _random_patches(b=1, seed=6)
    a = dpc_knn(x, 64, 5, density_noise=1e-6, generator=torch.Generator().manual_seed(1))
    b = dpc_knn(x, 64, 5, density_noise=1e-6, generator=torch.Generator().manual_seed(1))
    z = dpc_knn(x, 64, 5)
    assert torch.equal(a.density, b.density)
    diff = a.density - z.density
    assert diff.min() >= 0 and diff.max() < 1e-6 + 1e-7 and diff.max() > 0
    assert torch.equal(dpc_knn(x, 64, 5).assignment, z.assignment)


def test_no_grad_in_clustering_but_merge_is_differentiable_and_keeps_dtype():
    x = _random_patches(b=1, seed=7).requires_grad_(True)
    res = dpc_knn(x, 64, 5)
    assert not res.density.requires_grad and not res.score.requires_grad
    out = image_tokens(x)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    xb = _random_patches(b=1, seed=7).bfloat16()
    assert image_tokens(xb).dtype == torch.bfloat16


def test_rejects_bad_shapes():
    with pytest.raises(ValueError):
        dpc_knn(torch.randn(4, 3), 2, 2)
    with pytest.raises(ValueError):
        dpc_knn(torch.randn(1, 4, 3), 5, 2)
