"""Thumbnail strips (backend.labelstudio.strips): which frames, in which order, and the picture."""

from __future__ import annotations

import numpy as np
import pytest

from vrshq.backend.labelstudio.strips import GAP, THUMB_HEIGHT, frames_to_check, strip_image
from vrshq.masks import Track
from vrshq.plugins.base import ObjectTrack
from vrshq.synthetic import SyntheticSpec, write_video
from vrshq.video.reader import open_video


def _mark(text: str) -> np.ndarray:
    """Where ``text`` is white when drawn as the strip draws it on black."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (64, 32))
    ImageDraw.Draw(img).text((3, 2), text, fill=(255, 255, 255))
    return np.asarray(img).min(axis=2) >= 128


def _track(areas: list[int | None], h: int = 40, w: int = 40) -> Track:
    """A track whose frame f has a mask of ``areas[f]`` pixels (0: absent, None: untracked)."""
    t = Track(1, h, w)
    for f, a in enumerate(areas):
        if a is not None:
            m = np.zeros((h, w), bool)
            m.reshape(-1)[:a] = True
            t.set(f, m)
    return t


# 20 frames: present 0-4, gone 5-7 (disappears at 5, appears at 8), a bigger mask on 12 only
# (jumps of 1/2 at 12 and 13: a tie, the lower frame first), keyframe 0.
AREAS = [100] * 5 + [0] * 3 + [100] * 4 + [200] + [100] * 7


@pytest.mark.parametrize("n,expected", [
    (6, [5, 8, 12, 13, 18, 19]),  # event 5, jump 12, far 19, event 8, jump 13, far 18
    (2, [5, 12]),
    (1, [5]),
    (0, []),
])
def test_frames_to_check_takes_events_jumps_and_far_frames_in_turn(n, expected):
    assert frames_to_check(_track(AREAS), 20, [0], n) == expected


def test_far_frames_count_from_every_anchor_and_ties_go_to_the_lower_frame():
    steady = _track([50] * 21)  # no events, no jumps: only distance from the anchors
    assert frames_to_check(steady, 21, [10], 1) == [0]  # 0 and 20 both 10 away
    assert frames_to_check(steady, 21, [10], 2) == [0, 20]
    assert frames_to_check(steady, 21, [0, 20], 1) == [10]  # a correction at 20 is an anchor
    assert frames_to_check(steady, 3, [0], 10) == [0, 1, 2]  # never more than the video has


def test_an_untracked_frame_counts_as_absent():
    assert frames_to_check(_track([None, 30, 30, None]), 4, [1], 2) == [1, 3]


def test_the_strip_is_n_thumbnails_side_by_side_with_their_frame_numbers(tmp_path):
    spec = SyntheticSpec(num_frames=10, width=160, height=120, fps=10, seed=2)
    video = open_video(write_video(spec, tmp_path / "v.mp4"), fps=10)
    track = _track([400] * 10, 120, 160)
    obj = ObjectTrack(1, "Car", track, 0, track.mask(0), 1.0)
    img = strip_image(video, obj, [1, 4, 8], (255, 0, 0))
    width = round(160 * THUMB_HEIGHT / 120)
    assert img.shape == (THUMB_HEIGHT, 3 * width + 2 * GAP, 3)
    corners = [img[:14, i * (width + GAP):i * (width + GAP) + 24].astype(int) for i in range(3)]
    for c in corners:  # white text on a black box
        assert (c.min(axis=2) >= 200).sum() >= 5 and (c.max(axis=2) <= 20).sum() >= 50
    # The marks are Label Studio's 1-based frame numbers: F2, F5, F9, as PIL draws them.
    for c, text in zip(corners, ("F2", "F5", "F9")):
        assert np.array_equal(c.min(axis=2) >= 128, _mark(text)[:14, :24]), text
    assert strip_image(video, obj, [], (255, 0, 0)).shape == (THUMB_HEIGHT, width, 3)


class _CountingReader:
    """The video, counting the frames read from it."""

    def __init__(self, video):
        self.video, self.reads = video, 0

    def __getattr__(self, name):
        return getattr(self.video, name)

    def __len__(self):
        return len(self.video)

    def frame(self, i):
        self.reads += 1
        return self.video.frame(i)


def test_strips_drawn_during_the_overlay_pass_are_the_strips_and_decode_nothing(tmp_path):
    from vrshq.backend.labelstudio.overlay import encode_overlay
    from vrshq.backend.labelstudio.strips import StripBuilder, object_anchors

    spec = SyntheticSpec(num_frames=20, width=96, height=64, fps=10, seed=3)
    video = open_video(write_video(spec, tmp_path / "v.mp4"), fps=10)
    objs = [ObjectTrack(1, "Car", _track(AREAS, 64, 96), 0, np.zeros((64, 96), bool), 1.0),
            ObjectTrack(2, None, _track([30] * 10 + [0] * 10, 64, 96), 3, np.zeros((64, 96), bool), 1.0)]
    colors = [(255, 0, 0), (0, 0, 255)]
    want = [strip_image(video, o, frames_to_check(o.track, 20, object_anchors(o), 6), c)
            for o, c in zip(objs, colors)]
    counted = _CountingReader(video)
    fed = StripBuilder(counted, objs, colors, 6)
    encode_overlay(counted, objs, colors, 10, tmp_path / "o.mp4", on_frame=fed.add)
    assert counted.reads == 20  # the overlay's own pass, nothing for the strips
    got = fed.images(counted)
    assert counted.reads == 20 and all(np.array_equal(g, w) for g, w in zip(got, want))
    # Without an overlay the builder decodes its frames itself: the same images.
    alone = StripBuilder(video, objs, colors, 6).images(video)
    assert all(np.array_equal(g, w) for g, w in zip(alone, want))
