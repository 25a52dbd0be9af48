"""Synthetic scenes: exact ground truth, the events tests rely on, and faithful encodings."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from vrshq.synthetic import (
    SyntheticSpec,
    codec_for,
    ground_truth,
    object_colors,
    render_scene,
    write_ground_truth,
)
from vrshq.video import open_video


def rendered(spec: SyntheticSpec) -> tuple[np.ndarray, np.ndarray]:
    frames, labels = zip(*render_scene(spec))
    return np.stack(frames), np.stack(labels)


def test_ground_truth_matches_the_rendered_labels(synthetic_spec):
    frames, labels = rendered(synthetic_spec)
    gt = ground_truth(synthetic_spec)
    assert gt.shape == (40, 120, 160) and gt.dtype == np.uint8
    assert frames.shape == (40, 120, 160, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(gt, labels)
    assert set(np.unique(gt)) == {0, 1, 2}


@pytest.mark.parametrize("num_objects", [1, 2, 4])
def test_pixels_have_their_objects_colour(num_objects):
    spec = SyntheticSpec(num_objects=num_objects, seed=5)
    frames, labels = rendered(spec)
    colors = object_colors(spec).astype(int)
    background = labels == 0
    for k in range(1, num_objects + 1):
        where = labels == k
        assert where.any(), f"object {k} never visible"
        diff = np.abs(frames[where].astype(int) - colors[k]).max()
        assert diff <= 3, f"object {k} off its colour by {diff}"  # only the mild noise
        # and no background pixel passes for the object
        dist = np.abs(frames[background].astype(int) - colors[k]).max(axis=-1)
        assert dist.min() > 12


def test_occlusion_happens_and_is_partial(synthetic_spec):
    gt = ground_truth(synthetic_spec)
    alone = ground_truth(SyntheticSpec(num_objects=1))  # the disc with nothing in front
    hidden = [i for i in range(len(gt)) if np.any((alone[i] == 1) & (gt[i] == 2))]
    assert len(hidden) >= 3
    for i in hidden:
        assert 0 < ((alone[i] == 1) & (gt[i] == 2)).sum() < (alone[i] == 1).sum()
        assert (gt[i] == 1).any()  # partly, never fully hidden
    # object 2 also goes behind object 1 on its way back
    behind = [i for i in range(len(gt)) if 0 < (gt[i] == 2).sum() < (gt[0] == 2).sum() * 0.95]
    assert any(i > len(gt) // 2 for i in behind)
    no_occlusion = ground_truth(SyntheticSpec(occlusion=False))
    disc_only = ground_truth(SyntheticSpec(occlusion=False, num_objects=1))
    assert not np.any((disc_only == 1) & (no_occlusion == 2))


def test_an_object_leaves_and_comes_back(synthetic_spec):
    gt = ground_truth(synthetic_spec)
    present = [(gt[i] == 2).any() for i in range(len(gt))]
    absent = [i for i, p in enumerate(present) if not p]
    assert absent and present[0] and present[-1]
    assert all(b - a == 1 for a, b in zip(absent, absent[1:]))  # one contiguous exit
    assert all((gt[i] == 1).any() for i in range(len(gt)))
    assert all((ground_truth(SyntheticSpec(leave_frame=False)) == 2).any(axis=(1, 2)))


def test_motion_is_smooth(synthetic_spec):
    # the disc alone, so occlusion does not move its centroid
    gt = ground_truth(SyntheticSpec(num_objects=1))
    centres = np.array([np.argwhere(gt[i] == 1).mean(axis=0) for i in range(len(gt))])
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    assert steps.max() < 0.1 * synthetic_spec.width
    assert steps.sum() > 0.2 * synthetic_spec.width  # it does move


def test_seed_changes_texture_not_truth():
    a, la = rendered(SyntheticSpec(seed=1, num_frames=3))
    b, lb = rendered(SyntheticSpec(seed=2, num_frames=3))
    again, _ = rendered(SyntheticSpec(seed=1, num_frames=3))
    np.testing.assert_array_equal(a, again)
    np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(a, b)


def test_render_is_fast():
    spec = SyntheticSpec(num_frames=200, width=256, height=256)
    start = time.perf_counter()
    count = sum(1 for _ in render_scene(spec))
    elapsed = time.perf_counter() - start
    assert count == 200
    assert elapsed < 2.0, f"{elapsed:.2f}s for 200 frames"


def test_spec_validation():
    for bad in (dict(num_frames=0), dict(width=4), dict(num_objects=0), dict(fps=0.0)):
        with pytest.raises(ValueError):
            SyntheticSpec(**bad)
    one = ground_truth(SyntheticSpec(num_frames=1))
    assert one.shape == (1, 120, 160)


def test_codec_by_extension():
    assert codec_for("a.mp4") == codec_for("a.MOV") == codec_for("a.mkv") == "libx264"
    assert codec_for("a.webm") == "libvpx-vp9"
    assert codec_for("a.avi") == "mjpeg"
    with pytest.raises(ValueError):
        codec_for("a.gif")


@pytest.mark.parametrize("ext", ["mp4", "webm", "avi"])
def test_encoded_video_is_close_to_the_render(make_video, ext):
    spec = SyntheticSpec()
    path = make_video(ext, num_frames=40, width=160, height=120, fps=10.0)
    frames, labels = rendered(spec)
    with open_video(path) as reader:
        assert (len(reader), reader.width, reader.height) == (40, 160, 120)
        assert reader.fps == pytest.approx(10.0)
        decoded = reader.frames(range(40)).astype(int)
    diff = np.abs(decoded - frames)
    assert diff.mean() < 4.0
    # object interiors keep their colour (edges blur under 4:2:0 chroma)
    colors = object_colors(spec).astype(int)
    for k in (1, 2):
        assert np.abs(decoded[labels == k].mean(axis=0) - colors[k]).max() < 8


def test_frame_folder_is_lossless(synthetic_frame_folder, synthetic_spec):
    frames, _ = rendered(synthetic_spec)
    names = sorted(p.name for p in synthetic_frame_folder.iterdir())
    assert names[0] == "00000.png" and names[-1] == "00039.png"
    np.testing.assert_array_equal(
        np.array(Image.open(synthetic_frame_folder / "00007.png")), frames[7]
    )


def test_ground_truth_pngs(tmp_path, synthetic_spec):
    folder = write_ground_truth(synthetic_spec, tmp_path / "gt")
    gt = ground_truth(synthetic_spec)
    names = sorted(p.name for p in folder.iterdir())
    assert names == [f"{i:05d}.png" for i in range(40)]
    for i in (0, 7, 20, 39):
        image = Image.open(folder / f"{i:05d}.png")
        assert image.mode == "P"
        np.testing.assert_array_equal(np.array(image), gt[i])
    palette = Image.open(folder / "00000.png").getpalette()[:9]
    assert palette[3:6] == list(object_colors(synthetic_spec)[1])
