"""Our stand-ins for SAM 3's Hub kernel: connected components (vs scipy) and mask-IoU NMS."""

from __future__ import annotations

import numpy as np
import torch

from vrshq.plugins.sam3_kernels import LocalCvUtils


def test_cc_2d_areas_match_scipy_with_8_connectivity():
    from scipy import ndimage

    rng = np.random.default_rng(3)
    masks = rng.random((3, 1, 20, 26)) < 0.45
    labels, counts = LocalCvUtils.cc_2d(torch.from_numpy(masks.astype(np.uint8)), get_counts=True)
    assert labels.shape == counts.shape == masks.shape and counts.dtype == torch.int32
    for b in range(3):
        ref, _ = ndimage.label(masks[b, 0], structure=np.ones((3, 3)))
        areas = np.bincount(ref.ravel())
        on = masks[b, 0]
        np.testing.assert_array_equal(counts[b, 0].numpy()[on], areas[ref[on]])
        # one label per component: same scipy component <=> same label
        ours = labels[b, 0].numpy()[on]
        pairs = set(zip(ref[on].tolist(), ours.tolist()))
        assert len(pairs) == len(set(ref[on].tolist())) == len(set(ours.tolist()))


def test_diagonal_pixels_are_one_component():
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.uint8)
    mask[0, 0, 0, 0] = mask[0, 0, 1, 1] = 1
    _, counts = LocalCvUtils.cc_2d(mask)
    assert counts[0, 0, 0, 0] == counts[0, 0, 1, 1] == 2


def test_generic_nms_keeps_the_best_of_overlapping_detections():
    ious = torch.tensor([[1.0, 0.6, 0.0, 0.05],
                         [0.6, 1.0, 0.3, 0.0],
                         [0.0, 0.3, 1.0, 0.0],
                         [0.05, 0.0, 0.0, 1.0]])
    probs = torch.tensor([0.7, 0.9, 0.8, 0.6])
    # 1 (best) drops 0 (IoU 0.6) and 2 (0.3 > 0.1); 3 overlaps only the dropped 0
    assert LocalCvUtils.generic_nms(ious, probs, 0.1).tolist() == [1, 3]
    assert LocalCvUtils.generic_nms(ious, probs, 0.5).tolist() == [1, 2, 3]
    # a tie keeps the lower index
    assert LocalCvUtils.generic_nms(ious, torch.tensor([0.9, 0.9, 0.1, 0.1]), 0.5).tolist() == [0, 2, 3]
