"""J&F as the DAVIS-2017 toolkit defines it: hand-computed cases, its edge cases, folders, CLI."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.cli_helpers import assert_one_line_error, run_cli, run_script
from vrshq.errors import VrshqError
from vrshq.evaluation import (
    EvaluationError,
    boundary_f,
    boundary_tolerance,
    dilate_disk,
    evaluate_folders,
    evaluate_video,
    region_similarity,
    seg2bmap,
)
from vrshq.masks import write_palette_folder


def square(hw, top, left, size):
    m = np.zeros(hw, dtype=bool)
    m[top:top + size, left:left + size] = True
    return m


# --- J -------------------------------------------------------------------------------------


def test_region_similarity_one_third():
    # 4x4: pred = columns 0-1 (8 px), gt = columns 1-2 (8 px); overlap = column 1 (4 px),
    # union = columns 0-2 (12 px) -> J = 4/12 = 1/3 exactly.
    pred = np.zeros((4, 4), bool)
    pred[:, 0:2] = True
    gt = np.zeros((4, 4), bool)
    gt[:, 1:3] = True
    assert region_similarity(pred, gt) == pytest.approx(1 / 3, abs=1e-12)
    assert region_similarity(gt, gt) == 1.0


# --- boundaries ----------------------------------------------------------------------------


def test_seg2bmap_is_the_square_outline_shifted_towards_the_origin():
    # A 3x3 square at rows/cols 2..4: a pixel is boundary when its E, S or SE neighbour
    # differs, so the boundary is the outline of the 4x4 square at rows/cols 1..4 (12 px).
    b = seg2bmap(square((8, 8), 2, 2, 3))
    expected = square((8, 8), 1, 1, 4) & ~square((8, 8), 2, 2, 2)
    assert b.dtype == bool and b.sum() == 12
    np.testing.assert_array_equal(b, expected)


def test_seg2bmap_ignores_neighbours_outside_the_image():
    # The toolkit compares the last row only eastwards and the last column only southwards,
    # and clears the corner: a mask filling the frame has no boundary at all.
    assert not seg2bmap(np.ones((5, 6), bool)).any()
    # The right half of a 3x4 frame (cols 2-3): only column 1 (outside, E inside) is boundary;
    # nothing along the right edge, which the mask touches.
    m = np.zeros((3, 4), bool)
    m[:, 2:] = True
    np.testing.assert_array_equal(seg2bmap(m), [[0, 1, 0, 0]] * 3)
    # The bottom row of a 3x3 frame: row 1 (S inside) is boundary, row 2 itself is not.
    m = np.zeros((3, 3), bool)
    m[2, :] = True
    np.testing.assert_array_equal(seg2bmap(m), [[0, 0, 0], [1, 1, 1], [0, 0, 0]])


def test_seg2bmap_smaller_map_and_bad_sizes():
    # 4x4 -> 2x2: boundary pixel (y, x) goes to (y // 2, x // 2).
    m = np.zeros((4, 4), bool)
    m[3, 3] = True  # boundary: (2, 2), (2, 3), (3, 2) -> all land on (1, 1)
    np.testing.assert_array_equal(seg2bmap(m, width=2, height=2), [[0, 0], [0, 1]])
    with pytest.raises(VrshqError, match="cannot convert"):
        seg2bmap(m, width=8, height=8)
    with pytest.raises(VrshqError, match="cannot convert"):
        seg2bmap(m, width=4, height=2)


def test_dilation_is_the_radius_disk():
    # A single pixel dilated by radius 2 gives every (dy, dx) with dy² + dx² <= 4: 13 pixels,
    # i.e. not (±1, ±2) or (±2, ±1), which a square or a diamond would include or miss.
    point = np.zeros((7, 7), bool)
    point[3, 3] = True
    d = dilate_disk(point, 2)
    yy, xx = np.mgrid[-3:4, -3:4]
    np.testing.assert_array_equal(d, yy ** 2 + xx ** 2 <= 4)
    assert d.sum() == 13
    # Nothing wraps around or leaks past the border.
    corner = np.zeros((5, 5), bool)
    corner[0, 0] = True
    assert dilate_disk(corner, 1).sum() == 3


def test_dilation_matches_opencv_with_the_toolkit_disk():
    rng = np.random.default_rng(7)
    for _ in range(30):
        h, w = rng.integers(1, 30, size=2)
        r = int(rng.integers(1, 9))
        b = rng.random((h, w)) < 0.05
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        disk = (yy ** 2 + xx ** 2 <= r * r).astype(np.uint8)  # skimage.morphology.disk(r)
        np.testing.assert_array_equal(dilate_disk(b, r), cv2.dilate(b.astype(np.uint8), disk) > 0)


# --- F -------------------------------------------------------------------------------------


def test_boundary_f_hand_computed_precision_below_recall():
    # 8x8 frame: diagonal 11.3, tolerance ceil(0.09) = 1 px (disk of radius 1 = a plus sign).
    # GT: 3x3 square at rows/cols 2..4 -> outline of rows/cols 1..4 (12 px).
    # Pred: the single pixel (3, 3) -> outline {(2,2), (2,3), (3,2), (3,3)} (4 px).
    # Precision: each pred boundary pixel has a GT boundary pixel within 1 px
    #   ((2,2)-(1,2), (2,3)-(1,3), (3,2)-(3,1), (3,3)-(4,3)) -> 4/4 = 1.
    # Recall: GT pixels within 1 px of the pred boundary: (1,2), (1,3), (2,1), (3,1), (4,2),
    #   (4,3), (2,4), (3,4) = 8; the corners (1,1), (1,4), (4,1), (4,4) miss -> 8/12 = 2/3.
    # F = 2 * 1 * 2/3 / (1 + 2/3) = 4/5.
    gt = square((8, 8), 2, 2, 3)
    pred = square((8, 8), 3, 3, 1)
    assert boundary_f(pred, gt) == pytest.approx(0.8, abs=1e-12)
    # Swapping the roles swaps precision and recall; F is symmetric.
    assert boundary_f(gt, pred) == pytest.approx(0.8, abs=1e-12)
    assert region_similarity(pred, gt) == pytest.approx(1 / 9)


def test_boundary_f_square_shifted_by_two_pixels():
    # 8x8, tolerance 1 px. GT outline: rows/cols 1..4; pred shifted right by 2 -> outline rows
    # 1..4, cols 3..6. Pred pixels in column 6 ((1,6), (2,6), (3,6), (4,6)) are 2 px from the
    # GT; the other 8 are within 1 px -> precision 8/12; by mirror symmetry recall 8/12 -> F = 2/3.
    gt = square((8, 8), 2, 2, 3)
    pred = square((8, 8), 2, 4, 3)
    assert boundary_f(pred, gt) == pytest.approx(2 / 3, abs=1e-12)
    # Shifted by 1 px every boundary pixel is within the tolerance.
    assert boundary_f(square((8, 8), 2, 3, 3), gt) == 1.0
    # An explicit tolerance of 2 px (bound_th >= 1 is pixels) absorbs the 2-px shift.
    assert boundary_f(pred, gt, bound_th=2) == 1.0


def test_tolerance_is_the_ceiling_of_0008_times_the_diagonal():
    assert boundary_tolerance((480, 854)) == 8  # 7.84 -> 8, the toolkit's DAVIS 480p value
    assert boundary_tolerance((1080, 1920)) == 18  # 17.62
    assert boundary_tolerance((8, 8)) == 1  # 0.09
    assert boundary_tolerance((75, 100)) == 1  # exactly 1.0: the ceiling keeps it at 1
    assert boundary_tolerance((375, 500)) == 5  # exactly 5.0
    assert boundary_tolerance((300, 300)) == 4  # 3.39
    assert boundary_tolerance((480, 854), bound_th=3) == 3  # >= 1: pixels, as given
    with pytest.raises(ValueError):
        boundary_tolerance((10, 10), bound_th=0)


def test_tolerance_scales_with_the_diagonal():
    # The same 3-px shift of a 10x10 square: on 100x100 (tolerance ceil(1.13) = 2 px) the far
    # edges miss; on 300x300 (tolerance ceil(3.39) = 4 px) every boundary pixel matches.
    small_gt, small_pred = square((100, 100), 40, 40, 10), square((100, 100), 40, 43, 10)
    big_gt, big_pred = square((300, 300), 140, 140, 10), square((300, 300), 140, 143, 10)
    assert boundary_f(small_pred, small_gt) < 1.0
    assert boundary_f(big_pred, big_gt) == 1.0
    # ... but a 5-px shift exceeds the 4-px tolerance too.
    assert boundary_f(square((300, 300), 140, 145, 10), big_gt) < 1.0


def test_toolkit_edge_cases():
    empty = np.zeros((6, 6), bool)
    blob = square((6, 6), 1, 1, 3)
    # Both empty: J = 1 (empty union), F = 1 (both boundaries empty).
    assert region_similarity(empty, empty) == 1.0 and boundary_f(empty, empty) == 1.0
    # GT empty, prediction not: J = 0; P = 0, R = 1 -> F = 0.
    assert region_similarity(blob, empty) == 0.0 and boundary_f(blob, empty) == 0.0
    # Prediction empty, GT not: J = 0; P = 1, R = 0 -> F = 0.
    assert region_similarity(empty, blob) == 0.0 and boundary_f(empty, blob) == 0.0
    # Disjoint non-empty boundaries farther apart than the tolerance: P + R = 0 -> F = 0.
    far = np.zeros((40, 40), bool)
    far[30:33, 30:33] = True
    assert boundary_f(far, square((40, 40), 2, 2, 3)) == 0.0
    # The rules apply to the boundaries, not the masks: a full-frame GT has no boundary, so
    # an empty prediction scores F = 1 (and J = 0), exactly as in the toolkit.
    full = np.ones((6, 6), bool)
    assert boundary_f(empty, full) == 1.0 and region_similarity(empty, full) == 0.0


# --- one video -----------------------------------------------------------------------------


def labels(*objects, hw=(8, 8)):
    """A uint8 label map from (obj_id, mask) pairs."""
    out = np.zeros(hw, np.uint8)
    for obj_id, mask in objects:
        out[mask] = obj_id
    return out


def test_evaluate_video_skips_first_and_last_and_pads_missing_objects():
    a = square((8, 8), 1, 1, 2)
    b = square((8, 8), 4, 4, 3)
    gt = [labels((1, a), (2, b))] * 4
    junk = labels((1, b))  # wrong on frames 0 and 3, which are not scored
    pred = [junk, labels((1, a), (2, b)), labels((1, a)), junk]
    scores = evaluate_video(pred, gt)
    assert sorted(scores) == [1, 2]
    assert scores[1].J_frames == [1.0, 1.0] and scores[1].F_frames == [1.0, 1.0]
    # Object 2 is missing from frame 2: an empty mask, J = F = 0 there.
    assert scores[2].J_frames == [1.0, 0.0] and scores[2].F_frames == [1.0, 0.0]
    assert (scores[2].J, scores[2].F, scores[2].JF) == (0.5, 0.5, 0.5)
    # Without the skip the junk frames count.
    all_frames = evaluate_video(pred, gt, skip_first_and_last=False)
    assert len(all_frames[1].J_frames) == 4 and all_frames[1].J < 1.0


def test_evaluate_video_rejects_bad_input():
    gt = [labels((1, square((8, 8), 1, 1, 2)))] * 3
    with pytest.raises(EvaluationError, match="at least 3"):
        evaluate_video(gt[:2], gt[:2])
    with pytest.raises(EvaluationError, match="2 predicted frames but 3"):
        evaluate_video(gt[:2], gt)
    with pytest.raises(EvaluationError, match=r"object id\(s\) \[7\]"):
        evaluate_video([gt[0], labels((7, square((8, 8), 0, 0, 1))), gt[2]], gt)
    with pytest.raises(EvaluationError, match="frame 1: predicted size 9x8"):
        evaluate_video([gt[0], np.zeros((8, 9), np.uint8), gt[2]], gt)


# --- folders -------------------------------------------------------------------------------


def write_dataset(root, videos):
    """videos: {name: [label maps]} -> root/<name>/00000.png ..."""
    for name, frames in videos.items():
        write_palette_folder(root / name, enumerate(frames))


def make_pair(tmp_path):
    # Video "alpha": objects 1 and 2. Object 1 exact on the scored frames 1 and 2 (J = F = 1);
    # object 2 exact on frame 1, absent from frame 2 (J = F = 1/2). Frames 0 and 3 of the
    # prediction are empty: they are not scored.
    a, b = square((8, 8), 1, 1, 2), square((8, 8), 4, 4, 3)
    alpha_gt = [labels((1, a), (2, b))] * 4
    alpha_pred = [labels(), labels((1, a), (2, b)), labels((1, a)), labels()]
    # Video "beta": object 1, a 3x3 square; predicted exactly on frame 1 and as the single
    # pixel at its centre on frame 2 (J = 1/9, F = 4/5, see the hand-computed F test), so
    # J = (1 + 1/9) / 2 = 5/9 and F = (1 + 4/5) / 2 = 9/10.
    c = square((8, 8), 2, 2, 3)
    beta_gt = [labels((1, c))] * 4
    beta_pred = [labels(), labels((1, c)), labels((1, square((8, 8), 3, 3, 1))), labels()]
    write_dataset(tmp_path / "gt", {"alpha": alpha_gt, "beta": beta_gt})
    write_dataset(tmp_path / "pred", {"alpha": alpha_pred, "beta": beta_pred, "extra": beta_pred})
    return tmp_path / "pred", tmp_path / "gt"


def test_evaluate_folders_means_over_all_objects(tmp_path):
    pred, gt = make_pair(tmp_path)
    r = evaluate_folders(pred, gt)
    assert json.loads(json.dumps(r)) == r  # JSON-ready as it is
    assert (r["num_videos"], r["num_objects"]) == (2, 3)
    assert set(r["videos"]) == {"alpha", "beta"}  # the extra predicted video is ignored
    alpha, beta = r["videos"]["alpha"], r["videos"]["beta"]
    assert alpha["frames"] == [1, 2] and beta["frames"] == [1, 2]
    assert alpha["objects"]["1"] == {"J": 1.0, "F": 1.0, "J&F": 1.0}
    assert alpha["objects"]["2"] == {"J": 0.5, "F": 0.5, "J&F": 0.5}
    assert (alpha["J"], alpha["F"]) == (0.75, 0.75)
    assert beta["objects"]["1"]["J"] == pytest.approx(5 / 9)
    assert beta["objects"]["1"]["F"] == pytest.approx(9 / 10)
    assert beta["objects"]["1"]["J&F"] == pytest.approx((5 / 9 + 9 / 10) / 2)
    # Overall = mean over the 3 objects, not over the 2 videos (which would give J = 0.6528).
    j = (1 + 0.5 + 5 / 9) / 3
    f = (1 + 0.5 + 9 / 10) / 3
    assert r["J"] == pytest.approx(j) and r["F"] == pytest.approx(f)
    assert r["J&F"] == pytest.approx((j + f) / 2)
    assert r["J"] != pytest.approx((alpha["J"] + beta["J"]) / 2)


def test_object_ids_come_from_every_gt_frame_and_void_is_background(tmp_path):
    # Object 3 is only in GT frame 0 (not scored): it still counts, with J = F = 1 on the
    # scored frames where both GT and prediction are empty. 255 is DAVIS void, not an object.
    one = square((8, 8), 1, 1, 2)
    void = square((8, 8), 6, 0, 2)
    gt = [labels((1, one), (3, square((8, 8), 5, 5, 2)))] + [labels((1, one), (255, void))] * 3
    pred = [labels((1, one))] * 4
    write_dataset(tmp_path / "gt", {"v": gt})
    write_dataset(tmp_path / "pred", {"v": pred})
    r = evaluate_folders(tmp_path / "pred", tmp_path / "gt")
    assert set(r["videos"]["v"]["objects"]) == {"1", "3"}
    assert r["videos"]["v"]["objects"]["3"] == {"J": 1.0, "F": 1.0, "J&F": 1.0}


def test_evaluate_folders_errors(tmp_path):
    pred, gt = make_pair(tmp_path)
    with pytest.raises(EvaluationError, match="prediction folder does not exist"):
        evaluate_folders(tmp_path / "nope", gt)
    with pytest.raises(EvaluationError, match="ground-truth folder does not exist"):
        evaluate_folders(pred, tmp_path / "nope")

    write_dataset(gt, {"gamma": [labels()] * 3})
    with pytest.raises(EvaluationError, match="no predictions for ground-truth video.*gamma"):
        evaluate_folders(pred, gt)

    write_palette_folder(pred / "gamma", [(0, labels()), (2, labels())])  # scored frame 1 missing
    with pytest.raises(EvaluationError, match=r"2 predicted frame\(s\) for 3 .*missing frame\(s\) 1"):
        evaluate_folders(pred, gt)
    write_dataset(pred, {"gamma": [labels()] * 5})  # frames 3, 4 are not GT frames
    with pytest.raises(EvaluationError, match=r"frame\(s\) 3, 4 not in the ground truth"):
        evaluate_folders(pred, gt)
    for extra in (3, 4):
        (pred / "gamma" / f"{extra:05d}.png").unlink()

    write_dataset(pred, {"gamma": [labels(hw=(8, 9))] * 3})
    with pytest.raises(EvaluationError, match="frame 1 is 9x8 but the ground truth is 8x8"):
        evaluate_folders(pred, gt)

    Image.new("RGB", (8, 8)).save(pred / "gamma" / "00001.png")
    with pytest.raises(VrshqError, match="palette"):
        evaluate_folders(pred, gt)
    (pred / "gamma" / "00001.png").write_bytes(b"not a png")
    with pytest.raises(VrshqError, match="not a readable label-map PNG"):
        evaluate_folders(pred, gt)


# --- CLI -----------------------------------------------------------------------------------


def test_cli_end_to_end_table_and_json(tmp_path):
    pred, gt = make_pair(tmp_path)
    out = tmp_path / "scores"
    proc = run_script("evaluate", "--pred", pred, "--gt", gt, "--out", out)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["VIDEO", "OBJ", "J", "F", "J&F"]
    assert lines[1].split() == ["alpha", "1", "1.000", "1.000", "1.000"]
    assert lines[2].split() == ["alpha", "2", "0.500", "0.500", "0.500"]
    assert lines[3].split() == ["beta", "1", "0.556", "0.900", "0.728"]
    j, f = (1 + 0.5 + 5 / 9) / 3, (1 + 0.5 + 9 / 10) / 3
    assert lines[4].startswith("overall (3 objects, 2 videos)")
    assert lines[4].split()[-3:] == [f"{j:.3f}", f"{f:.3f}", f"{(j + f) / 2:.3f}"]
    assert lines[5] == f"wrote {out / 'scores.json'}"
    data = json.loads((out / "scores.json").read_text())
    assert data == evaluate_folders(pred, gt)
    assert data["J&F"] == pytest.approx((j + f) / 2)
    assert data["videos"]["beta"]["objects"]["1"]["F"] == pytest.approx(0.9)


def test_cli_one_line_error(tmp_path):
    pred, gt = make_pair(tmp_path)
    write_dataset(gt, {"gamma": [labels()] * 3})
    proc = run_script("evaluate", "--pred", pred, "--gt", gt)
    assert_one_line_error(proc.returncode, proc.stderr, "no predictions", "gamma")
    assert proc.stdout == ""


def test_cli_model_mode_and_missing_arguments(capfd, tmp_path):
    rc, _, err = run_cli(capfd, "evaluate", "--model", tmp_path, "--data", tmp_path)
    assert_one_line_error(rc, err, "no vrshq/ checkpoint folder")  # --model is a model folder
    rc, _, err = run_cli(capfd, "evaluate", "--model", tmp_path)
    assert_one_line_error(rc, err, "give --model DIR --data DIR, or --pred DIR --gt DIR")
    rc, _, err = run_cli(capfd, "evaluate", "--pred", tmp_path)
    assert_one_line_error(rc, err, "--pred DIR and --gt DIR")
    pred, gt = make_pair(tmp_path)
    (tmp_path / "scores.json").write_text("{}")
    rc, _, err = run_cli(capfd, "evaluate", "--pred", pred, "--gt", gt, "--out", tmp_path / "scores.json")
    assert_one_line_error(rc, err, "is not a folder")
