"""Tracks as Label Studio videorectangle results: frames, time, enabled flags, compression."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vrshq.errors import MaskFormatError
from vrshq.masks import (
    Track,
    boxes_to_sequence,
    simplify_keyframes,
    track_to_videorectangle,
    videorectangle_to_boxes,
)
from vrshq.masks.labelstudio import BOX_KEYS

FPS = 25.0


def _rect(h: int, w: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    mask = np.zeros((h, w), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _box(x: float, y: float = 10.0, width: float = 5.0, height: float = 8.0) -> dict[str, float]:
    return {"x": x, "y": y, "width": width, "height": height}


def _assert_shows(sequence: list[dict], frames_count: int, boxes: dict, tolerance: float) -> None:
    """What LS shows is exactly the present frames, each within tolerance of its own box."""
    shown = videorectangle_to_boxes({"sequence": sequence, "framesCount": frames_count})
    present = {f for f, b in boxes.items() if b is not None and f < frames_count}
    assert set(shown) == present
    for frame in present:
        worst = max(abs(shown[frame][k] - boxes[frame][k]) for k in BOX_KEYS)
        assert worst <= tolerance + 1e-6, (frame, worst)


def test_result_shape_frames_and_time() -> None:
    track = Track(3, 40, 50)
    for frame in range(3):
        track.set(frame, _rect(40, 50, 10 * frame, 0, 10 * frame + 5, 4))
    result = track_to_videorectangle(track, FPS, 10, labels=["Player"], tolerance=0.0)
    json.dumps(result)
    assert result["id"] == "trk_3"
    assert (result["from_name"], result["to_name"], result["type"]) == ("box", "video", "videorectangle")
    assert result["origin"] == "manual"
    value = result["value"]
    assert value["framesCount"] == 10 and value["duration"] == pytest.approx(10 / FPS)
    assert value["labels"] == ["Player"]
    seq = value["sequence"]
    # Linear motion: only the span's ends are kept.
    assert [item["frame"] for item in seq] == [1, 3]
    for item in seq:
        assert set(item) == {"frame", "x", "y", "width", "height", "rotation", "enabled", "time"}
        assert item["rotation"] == 0
        # Brief §2.7: time = frame / framerate with the 1-based LS frame.
        assert item["time"] == pytest.approx(item["frame"] / FPS)
    assert seq[0] == pytest.approx(
        {"frame": 1, "x": 0.0, "y": 0.0, "width": 10.0, "height": 10.0, "rotation": 0, "enabled": True, "time": 0.04}
    )
    assert seq[1]["x"] == pytest.approx(40.0)
    assert seq[1]["enabled"] is False  # the object is not tracked on frames 3..9


def test_custom_names_and_region_id() -> None:
    track = Track(1, 10, 10)
    track.set(0, _rect(10, 10, 0, 0, 2, 2))
    result = track_to_videorectangle(track, FPS, 1, region_id="abc", from_name="bbox", to_name="clip")
    assert (result["id"], result["from_name"], result["to_name"]) == ("abc", "bbox", "clip")
    assert result["value"]["labels"] == []
    # Present up to the last video frame: nothing after it to hide.
    assert result["value"]["sequence"][0]["enabled"] is True


def test_gap_in_the_middle() -> None:
    h, w, count = 40, 100, 40
    track = Track(1, h, w)
    for frame in range(30):
        absent = 10 <= frame < 20
        track.set(frame, np.zeros((h, w), bool) if absent else _rect(h, w, frame, 5, frame + 10, 15))
    seq = track_to_videorectangle(track, FPS, count, tolerance=0.0)["value"]["sequence"]
    assert [(item["frame"], item["enabled"]) for item in seq] == [(1, True), (10, False), (21, True), (30, False)]
    boxes = {f: track.percent_box(f) for f in track.frames()}
    _assert_shows(seq, count, boxes, 0.0)


def test_frames_never_set_are_a_gap_too() -> None:
    boxes = {f: _box(float(f)) for f in [*range(0, 5), *range(8, 11)]}
    seq = boxes_to_sequence(boxes, FPS, 11, tolerance=0.0)
    assert [(item["frame"], item["enabled"]) for item in seq] == [(1, True), (5, False), (9, True), (11, True)]
    _assert_shows(seq, 11, boxes, 0.0)


def test_track_starting_after_frame_zero_and_running_to_the_end() -> None:
    boxes = {f: _box(2.0 * f) for f in range(5, 15)}
    seq = boxes_to_sequence(boxes, FPS, 15, tolerance=0.0)
    assert [(item["frame"], item["enabled"]) for item in seq] == [(6, True), (15, True)]
    assert seq[0]["time"] == pytest.approx(6 / FPS)
    shown = videorectangle_to_boxes({"sequence": seq}, 15)
    assert min(shown) == 5 and max(shown) == 14
    _assert_shows(seq, 15, boxes, 0.0)


def test_single_frame_spans() -> None:
    boxes = {3: _box(1.0), 7: _box(9.0), 9: _box(4.0)}
    seq = boxes_to_sequence(boxes, FPS, 10)
    assert [(item["frame"], item["enabled"]) for item in seq] == [(4, False), (8, False), (10, True)]
    _assert_shows(seq, 10, boxes, 0.0)


def test_frames_past_the_video_are_dropped() -> None:
    boxes = {f: _box(float(f)) for f in range(0, 20)}
    seq = boxes_to_sequence(boxes, FPS, 12, tolerance=0.0)
    assert [(item["frame"], item["enabled"]) for item in seq] == [(1, True), (12, True)]
    _assert_shows(seq, 12, boxes, 0.0)


def test_empty_track_gives_empty_sequence() -> None:
    track = Track(1, 10, 10)
    track.set(0, np.zeros((10, 10), bool))
    assert track_to_videorectangle(track, FPS, 5)["value"]["sequence"] == []
    assert boxes_to_sequence({}, FPS, 5) == []


def test_long_linear_track_compresses_to_a_handful() -> None:
    h, w, count = 48, 1000, 3000
    track = Track(1, h, w)
    for frame in range(count):
        # Integer pixels only approximate the line (< 1 px = 0.1 % off), well within 0.5 %.
        x0 = 100 + frame * 600 // (count - 1)
        track.set(frame, _rect(h, w, x0, 10, x0 + 80, 30))
    seq = track_to_videorectangle(track, FPS, count)["value"]["sequence"]
    assert len(seq) < 10
    assert seq[0]["frame"] == 1 and seq[-1]["frame"] == count
    assert all(item["enabled"] for item in seq)
    boxes = {f: track.percent_box(f) for f in track.frames()}
    _assert_shows(seq, count, boxes, 0.5)


def test_jittery_track_keeps_more_keyframes() -> None:
    rng = np.random.default_rng(3)
    count = 300
    smooth = {f: _box(10 + 0.1 * f) for f in range(count)}
    jitter = {f: _box(10 + 0.1 * f + rng.uniform(-2, 2), 10 + rng.uniform(-2, 2)) for f in range(count)}
    smooth_seq = boxes_to_sequence(smooth, FPS, count)
    jitter_seq = boxes_to_sequence(jitter, FPS, count)
    assert len(smooth_seq) == 2
    assert len(jitter_seq) > 50
    _assert_shows(jitter_seq, count, jitter, 0.5)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("tolerance", [0.0, 0.25, 1.0, 3.0])
def test_compression_bound_holds_for_random_tracks(seed: int, tolerance: float) -> None:
    rng = np.random.default_rng(seed)
    count = int(rng.integers(1, 400))
    present = rng.random(count) < rng.uniform(0.3, 1.0)
    # Smooth random-walk motion with occasional jumps, so every split rule is exercised.
    steps = rng.normal(0, 0.3, (count, 4)) + (rng.random((count, 1)) < 0.02) * rng.normal(0, 10, (count, 4))
    path = 30 + np.cumsum(steps, axis=0)
    boxes = {f: dict(zip(BOX_KEYS, path[f].tolist())) if present[f] else None for f in range(count)}
    seq = boxes_to_sequence(boxes, FPS, count, tolerance=tolerance)
    _assert_shows(seq, count, boxes, tolerance)
    frames = [item["frame"] for item in seq]
    assert frames == sorted(frames) and len(set(frames)) == len(frames)


def test_tolerance_zero_keeps_every_bend() -> None:
    values = np.array([[0, 0, 1, 1], [1, 0, 1, 1], [2, 0, 1, 1], [3, 0.01, 1, 1], [4, 0, 1, 1]], float)
    assert simplify_keyframes(values, 0.0) == [0, 2, 3, 4]
    assert simplify_keyframes(values, 0.01) == [0, 4]
    assert simplify_keyframes(values[:1], 0.0) == [0]
    assert simplify_keyframes(values[:2], 5.0) == [0, 1]
    with pytest.raises(ValueError):
        simplify_keyframes(values, -1.0)


def test_reconstructs_the_brief_example() -> None:
    value = {
        "framesCount": 250,
        "duration": 10.0,
        "sequence": [
            {"frame": 1, "x": 12.5, "y": 30.0, "width": 8.0, "height": 20.0, "rotation": 0, "enabled": True},
            {"frame": 2, "x": 12.9, "y": 30.1, "width": 8.0, "height": 20.1, "rotation": 0, "enabled": True},
            {"frame": 90, "x": 40.0, "y": 31.0, "width": 7.5, "height": 19.0, "rotation": 0, "enabled": False},
        ],
    }
    shown = videorectangle_to_boxes(value)
    assert sorted(shown) == list(range(90))
    r = (46 - 2) / (90 - 2)
    assert shown[45]["x"] == pytest.approx(12.9 + (40.0 - 12.9) * r)
    assert shown[89] == pytest.approx({"x": 40.0, "y": 31.0, "width": 7.5, "height": 19.0})


def test_enabled_last_keyframe_is_held_to_the_end() -> None:
    value = {"sequence": [{"frame": 3, "x": 1, "y": 2, "width": 3, "height": 4, "enabled": True}]}
    shown = videorectangle_to_boxes(value, 6)
    assert sorted(shown) == [2, 3, 4, 5]
    assert shown[5] == {"x": 1.0, "y": 2.0, "width": 3.0, "height": 4.0}


@pytest.mark.parametrize(
    "value",
    [
        {},
        {"sequence": "x", "framesCount": 3},
        {"sequence": [{"x": 1, "y": 1, "width": 1, "height": 1}], "framesCount": 3},
        {"sequence": [{"frame": 1, "x": 1, "y": 1, "width": 1}], "framesCount": 3},
        {"sequence": [{"frame": 1, "x": "a", "y": 1, "width": 1, "height": 1}], "framesCount": 3},
        {"sequence": []},
    ],
)
def test_videorectangle_to_boxes_rejects_malformed(value: dict) -> None:
    with pytest.raises(MaskFormatError):
        videorectangle_to_boxes(value)


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        boxes_to_sequence({0: _box(1.0)}, 0.0, 5)
    with pytest.raises(ValueError):
        boxes_to_sequence({0: _box(1.0)}, FPS, -1)
    with pytest.raises(ValueError):
        boxes_to_sequence({0: _box(1.0), 1: _box(2.0), 2: _box(5.0)}, FPS, 5, tolerance=-0.1)
    with pytest.raises(MaskFormatError):
        boxes_to_sequence({-1: _box(1.0)}, FPS, 5)


# --- against Label Studio's own rule, on hand-worked cases -------------------------------------
#
# How the Label Studio editor shows a videorectangle (VideoRectangle docs: "enabled: whether the
# region is visible on this and next frames"; the frontend's VideoRegion lifespan and
# VideoRectangleRegion shape), on LS frame f = 1 .. framesCount:
# * shown when the last keyframe at or before f is enabled, or sits on f itself; nothing before
#   the first keyframe;
# * its shape: a keyframe's own on its frame; between two keyframes each of x, y, width, height
#   and rotation is start + (end - start) * (f - start.frame) / (end.frame - start.frame), whether
#   or not the later keyframe is enabled; after the last keyframe, the last keyframe's.
# ls_shows() below is that rule, written from the description, not from vrshq's decoder; the
# expected lists in the cases are worked out by hand from it.

SHAPE = ("x", "y", "width", "height", "rotation")


def ls_shows(sequence: list[dict], frames_count: int) -> dict[int, tuple[float, ...]]:
    """LS frame (1-based) -> (x, y, width, height, rotation) of what the editor draws there."""
    keys = sorted(sequence, key=lambda k: k["frame"])
    shown = {}
    for f in range(1, frames_count + 1):
        before = [k for k in keys if k["frame"] <= f]
        if not before or not (before[-1]["enabled"] or before[-1]["frame"] == f):
            continue
        prev = before[-1]
        after = [k for k in keys if k["frame"] > f]
        if prev["frame"] == f or not after:
            shown[f] = tuple(float(prev.get(p, 0)) for p in SHAPE)
        else:
            nxt = after[0]
            r = (f - prev["frame"]) / (nxt["frame"] - prev["frame"])
            shown[f] = tuple(prev.get(p, 0) + (nxt.get(p, 0) - prev.get(p, 0)) * r for p in SHAPE)
    return shown


def _b(x: float, y: float = 5.0, width: float = 10.0, height: float = 10.0) -> dict[str, float]:
    return {"x": x, "y": y, "width": width, "height": height}


# name: (0-based frame -> box given to the encoder, framesCount,
#        keyframes the encoder must write [(LS frame, enabled)],
#        what Label Studio shows {LS frame: (x, y, width, height, rotation)}, worked by hand)
HAND_WORKED = {
    # One frame mid-video: a lone disabled keyframe, shown on its own frame only.
    "single keyframe, mid-video": (
        {2: _b(10, 20, 30, 40)}, 5,
        [(3, False)],
        {3: (10, 20, 30, 40, 0)}),
    # One frame at the end: enabled (nothing follows to hide), shown on that frame.
    "single keyframe, last frame": (
        {4: _b(10, 20, 30, 40)}, 5,
        [(5, True)],
        {5: (10, 20, 30, 40, 0)}),
    # Frames 0-2 move by 10, frames 3-4 absent, 5-6 still; 8 frames. Frame 2 is interpolated
    # between keyframes 1 and 3; 4-5 hidden by the disabled keyframe 3; 8 by the disabled 7.
    "disabled gap": (
        {0: _b(0), 1: _b(10), 2: _b(20), 5: _b(50), 6: _b(50)}, 8,
        [(1, True), (3, False), (6, True), (7, False)],
        {1: (0, 5, 10, 10, 0), 2: (10, 5, 10, 10, 0), 3: (20, 5, 10, 10, 0),
         6: (50, 5, 10, 10, 0), 7: (50, 5, 10, 10, 0)}),
    # The track ends at frame 3 of 6: its last keyframe is disabled, frames 5 and 6 are empty.
    "last keyframe disabled": (
        {0: _b(0), 1: _b(4), 2: _b(8), 3: _b(12)}, 6,
        [(1, True), (4, False)],
        {1: (0, 5, 10, 10, 0), 2: (4, 5, 10, 10, 0), 3: (8, 5, 10, 10, 0), 4: (12, 5, 10, 10, 0)}),
    # Starts at frame 2 and runs to the end: nothing before LS frame 3, the last one enabled.
    "late start, held to the end": (
        {2: _b(30), 3: _b(30), 4: _b(30)}, 5,
        [(3, True), (5, True)],
        {3: (30, 5, 10, 10, 0), 4: (30, 5, 10, 10, 0), 5: (30, 5, 10, 10, 0)}),
    # x 0,1,2,3 then a jump to 10, width 10,12,14,16,16 (tolerance 0): the line from frame 1 to 5
    # misses frame 4 by 4.5, so keyframes 1, 4, 5; frames 2 and 3 come from 1 -> 4 (thirds).
    "non-consecutive keyframes": (
        {0: _b(0, width=10), 1: _b(1, width=12), 2: _b(2, width=14), 3: _b(3, width=16),
         4: _b(10, width=16)}, 5,
        [(1, True), (4, True), (5, True)],
        {1: (0, 5, 10, 10, 0), 2: (1, 5, 12, 10, 0), 3: (2, 5, 14, 10, 0), 4: (3, 5, 16, 10, 0),
         5: (10, 5, 16, 10, 0)}),
}


@pytest.mark.parametrize("name", list(HAND_WORKED))
def test_label_studio_shows_what_the_encoder_means(name: str) -> None:
    boxes, frames_count, keyframes, want = HAND_WORKED[name]
    seq = boxes_to_sequence(boxes, FPS, frames_count, tolerance=0.0)
    assert [(k["frame"], k["enabled"]) for k in seq] == keyframes
    # Our boxes carry no rotation: every keyframe says 0, so Label Studio interpolates none.
    assert all(k["rotation"] == 0 for k in seq)
    shown = ls_shows(seq, frames_count)
    assert sorted(shown) == sorted(want)
    for f, values in want.items():
        assert shown[f] == pytest.approx(values), f
    # Our own decoder agrees with the rule on every frame (0-based, no rotation).
    ours = videorectangle_to_boxes({"sequence": seq, "framesCount": frames_count})
    assert sorted(ours) == [f - 1 for f in sorted(want)]
    for f, values in want.items():
        assert [ours[f - 1][k] for k in BOX_KEYS] == pytest.approx(list(values[:4])), f


def test_label_studio_interpolates_rotation_which_the_decoder_does_not_read() -> None:
    # An annotator's rotated box (the editor writes rotation): Label Studio turns it 0 -> 90 over
    # frames 1 -> 3, so frame 2 is at 45 degrees. videorectangle_to_boxes keeps x, y, width and
    # height (interpolated the same way) and drops the rotation.
    seq = [{"frame": 1, "x": 0, "y": 0, "width": 10, "height": 20, "rotation": 0, "enabled": True},
           {"frame": 3, "x": 10, "y": 0, "width": 10, "height": 20, "rotation": 90, "enabled": True}]
    assert ls_shows(seq, 3) == {1: (0, 0, 10, 20, 0), 2: (5, 0, 10, 20, 45), 3: (10, 0, 10, 20, 90)}
    ours = videorectangle_to_boxes({"sequence": seq, "framesCount": 3})
    assert ours == {0: _b(0, 0, 10, 20), 1: _b(5, 0, 10, 20), 2: _b(10, 0, 10, 20)}


@pytest.mark.parametrize("seed", range(40))
def test_decoder_matches_label_studios_rule_on_random_sequences(seed: int) -> None:
    # Sequences an annotator could leave: any frames (also past framesCount), any enabled flags.
    rng = np.random.default_rng(seed)
    frames_count = int(rng.integers(1, 40))
    frames = sorted(set(rng.integers(1, frames_count + 5, size=int(rng.integers(1, 8))).tolist()))
    seq = [{"frame": f, **dict(zip(BOX_KEYS, rng.uniform(0, 50, 4).tolist())), "rotation": 0,
            "enabled": bool(rng.random() < 0.6)} for f in frames]
    shown = ls_shows(seq, frames_count)
    ours = videorectangle_to_boxes({"sequence": seq, "framesCount": frames_count})
    assert sorted(ours) == [f - 1 for f in sorted(shown)]
    for f, values in shown.items():
        assert [ours[f - 1][k] for k in BOX_KEYS] == pytest.approx(list(values[:4]))
