"""The overlay video (backend.labelstudio.overlay): frame for frame the task's video, masks drawn in.

Masks are exact (synthetic ground truth), plus a "frame stamp" object: a block that jumps 12 px
each frame, so an overlay one frame off draws it where the test does not look for it.

Tolerances (H.264 at crf 20 is lossy; measured on these videos, about 2x headroom):
* far from every mask (4 px or more): mean |overlay - source| <= 4, 99th percentile <= 16;
* inside a mask (3 px in from its edge and from other objects'): mean |overlay - expected
  blend| <= 12, and the mean distance to the object's colour at most 0.75 of the source's
  (the blend makes it 0.55).
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
from scipy.ndimage import binary_dilation, binary_erosion

from vrshq.backend.labelstudio.overlay import (
    ALPHA, PALETTE, encode_overlay, even_size, label_color, overlay_rate)
from vrshq.masks import Track
from vrshq.plugins.base import ObjectTrack
from vrshq.synthetic import SyntheticSpec, ground_truth, write_frame_folder, write_video
from vrshq.video.reader import open_video

COLORS = [(230, 25, 75), (60, 180, 75), (67, 99, 216)]
FRAMES = 16


def _stamp(n: int, h: int, w: int) -> np.ndarray:
    """Masks of a 16x16 block at x = 12 i (mod), bottom rows: a different place every frame."""
    out = np.zeros((n, h, w), dtype=bool)
    for i in range(n):
        x = (12 * i) % (w - 16)
        out[i, h - 20:h - 4, x:x + 16] = True
    return out


def _objects(masks: dict[int, np.ndarray]) -> list[ObjectTrack]:
    objs = []
    for k, m in masks.items():
        t = Track(k, m.shape[1], m.shape[2])
        for f in range(len(m)):
            t.set(f, m[f])
        objs.append(ObjectTrack(k, "Object", t, 0, m[0], 1.0))
    return objs


def _decode(path) -> tuple[np.ndarray, av.video.stream.VideoStream]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(s)]).astype(np.float32)
        return frames, (s.average_rate, s.guessed_rate, s.width, s.height)


# (the file's rate, what the task says Label Studio plays it at, the overlay's exact rate)
RATES = [(24.0, 24, Fraction(24)), (25.0, 25, Fraction(25)),
         (30000 / 1001, 29.97, Fraction(30000, 1001)), (30.0, 30, Fraction(30))]


@pytest.mark.parametrize("file_fps,task_fps,rate", RATES, ids=["24", "25", "29.97", "30"])
def test_overlay_is_the_video_frame_for_frame_with_the_masks_drawn_in(tmp_path, file_fps, task_fps, rate):
    spec = SyntheticSpec(num_frames=FRAMES, width=160, height=120, fps=file_fps, seed=3)
    src_path = write_video(spec, tmp_path / "src.mp4")
    gt = ground_truth(spec)
    masks = {1: gt == 1, 2: gt == 2, 3: _stamp(FRAMES, spec.height, spec.width)}
    out = tmp_path / "overlay.mp4"
    with open_video(src_path, fps=task_fps) as video:
        encode_overlay(video, _objects(masks), COLORS, task_fps, out)

    ov, (avg, guessed, w, h) = _decode(out)
    src, _ = _decode(src_path)
    assert len(ov) == len(src) == FRAMES
    assert avg == guessed == rate  # exact, as a fraction
    assert (w, h) == (spec.width, spec.height)
    data = out.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # +faststart: the index first

    for i in (0, 1, FRAMES // 2, FRAMES - 1):
        union = masks[1][i] | masks[2][i] | masks[3][i]
        far = ~binary_dilation(union, iterations=4)
        diff = np.abs(ov[i] - src[i])[far]
        assert diff.mean() <= 4 and np.percentile(diff, 99) <= 16, (i, diff.mean())
        for k, color in zip((1, 2, 3), COLORS):
            others = union & ~masks[k][i]
            inner = binary_erosion(masks[k][i], iterations=3) & ~binary_dilation(others, iterations=3)
            if inner.sum() < 20:
                continue  # object 2 is out of the frame at times
            c = np.asarray(color, dtype=np.float32)
            expected = src[i] * (1 - ALPHA) + c * ALPHA
            assert np.abs(ov[i] - expected)[inner].mean() <= 12, (i, k)
            assert np.abs(ov[i] - c)[inner].mean() <= 0.75 * np.abs(src[i] - c)[inner].mean(), (i, k)


def test_an_odd_sized_video_is_padded_right_and_bottom(tmp_path):
    spec = SyntheticSpec(num_frames=4, width=81, height=61, fps=25, seed=1)
    folder = write_frame_folder(spec, tmp_path / "frames", ext="png")
    out = tmp_path / "overlay.mp4"
    with open_video(folder, fps=25) as video:
        encode_overlay(video, [], [], 25, out)
        first = video.frame(0).astype(np.float32)
    ov, (_, _, w, h) = _decode(out)
    assert (w, h) == even_size(81, 61) == (82, 62)
    assert len(ov) == 4
    # pixel (x, y) stays where it was: closest to the source unshifted (lossless PNG source,
    # so only the yuv420p conversion and H.264 differ)
    err = np.abs(ov[0, :61, :81] - first).mean()
    assert err <= 8
    assert err < np.abs(ov[0, :61, 1:82] - first).mean() and err < np.abs(ov[0, 1:62, :81] - first).mean()


def test_overlay_rate_is_exact_and_follows_the_file():
    assert overlay_rate(29.97) == Fraction(30000, 1001)
    assert overlay_rate(23.976) == Fraction(24000, 1001)
    assert overlay_rate(30) == 30 and overlay_rate(25) == 25 and overlay_rate(12.5) == Fraction(25, 2)


def test_label_colours_come_from_the_config_else_the_palette():
    colors = {"Car": "#3cb44b", "Odd": "not a colour"}
    assert label_color("Car", 1, colors) == (60, 180, 75)
    assert label_color("Odd", 3, colors) == PALETTE[3]
    assert label_color(None, 12, colors) == PALETTE[12 % len(PALETTE)]


def _whole_frame_blend(frame, masks):
    """The overlay's drawing as first written: the whole frame in float32, each mask blended
    and its OUTLINE-pixel edge (full-frame erosion) set to the colour, then rounded."""
    from vrshq.backend.labelstudio.overlay import OUTLINE

    out = frame.astype(np.float32)
    for mask, color in masks:
        if not mask.any():
            continue
        c = np.asarray(color, dtype=np.float32)
        out[mask] = out[mask] * (1 - ALPHA) + c * ALPHA
        out[mask & ~binary_erosion(mask, iterations=OUTLINE, border_value=0)] = c
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def test_drawing_only_the_masks_pixels_gives_the_whole_frame_blends_bytes():
    # draw_masks works on the masks' pixels and boxes only: bit-equal to the whole-frame blend,
    # with overlapping objects, masks on the frame's border, speckle, empty and one-pixel masks.
    from vrshq.backend.labelstudio.overlay import draw_masks

    rng = np.random.default_rng(4)
    for _ in range(150):
        h, w = (int(v) for v in rng.integers(1, 48, 2))
        frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        masks = []
        for _ in range(int(rng.integers(0, 4))):
            m = np.zeros((h, w), bool)
            kind = int(rng.integers(0, 4))
            if kind == 0:
                m = rng.random((h, w)) < rng.random()
            elif kind == 1:
                y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
                m[y:y + int(rng.integers(1, 30)), x:x + int(rng.integers(1, 30))] = True
            elif kind == 2:
                m[int(rng.integers(0, h)), int(rng.integers(0, w))] = True
            masks.append((m, tuple(int(v) for v in rng.integers(0, 256, 3))))
        got = draw_masks(frame, masks)
        assert got.dtype == np.uint8 and np.array_equal(got, _whole_frame_blend(frame, masks))
