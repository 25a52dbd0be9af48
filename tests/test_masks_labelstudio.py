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
