"""Track and TrackSet: per-frame masks as COCO RLE, and the track.json document."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vrshq.errors import MaskFormatError
from vrshq.masks import Track, TrackSet, encode_rle

H, W = 37, 53


def _rect(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _track(obj_id: int = 1) -> Track:
    track = Track(obj_id, H, W)
    track.set(0, _rect(0, 0, 5, 5), score=9.5)
    track.set(1, np.zeros((H, W), bool), score=-3.0)
    track.set(4, _rect(W - 3, H - 2, W, H))
    return track


def test_set_and_read_back() -> None:
    track = _track()
    assert track.frames() == [0, 1, 4]
    assert len(track) == 3
    assert track.has(1) and 1 in track and not track.has(2)
    assert np.array_equal(track.mask(0), _rect(0, 0, 5, 5))
    assert track.mask(0).dtype == bool and track.mask(0).shape == (H, W)
    assert not track.mask(1).any()
    assert track.score(0) == 9.5 and track.score(4) is None
    assert track.present_frames() == [0, 4]
    assert track.is_present(0) and not track.is_present(1) and not track.is_present(2)
    with pytest.raises(KeyError):
        track.mask(2)
    with pytest.raises(KeyError):
        track.score(2)


def test_boxes() -> None:
    track = _track()
    assert track.box(0) == (0, 0, 5, 5)
    assert track.box(1) is None
    assert track.box(4) == (W - 3, H - 2, W, H)
    assert track.percent_box(4) == pytest.approx(
        {"x": 100 * (W - 3) / W, "y": 100 * (H - 2) / H, "width": 300 / W, "height": 200 / H}
    )
    assert track.percent_box(1) is None


def test_set_replaces_and_remove_forgets() -> None:
    track = _track()
    track.set(0, _rect(1, 1, 2, 2), score=1.0)
    assert track.box(0) == (1, 1, 2, 2) and track.score(0) == 1.0
    track.remove(0)
    assert track.frames() == [1, 4]


def test_rejects_bad_input() -> None:
    track = Track(1, H, W)
    with pytest.raises(MaskFormatError, match="shape"):
        track.set(0, np.zeros((H, W + 1), bool))
    with pytest.raises(MaskFormatError):
        track.set(-1, np.zeros((H, W), bool))
    with pytest.raises(MaskFormatError):
        track.set(0, np.zeros((H, W), bool), score=float("nan"))
    with pytest.raises(MaskFormatError):
        track.set_rle(0, encode_rle(np.zeros((H + 1, W), bool)))
    with pytest.raises(MaskFormatError):
        Track(0, H, W)
    with pytest.raises(MaskFormatError):
        Track(1, 0, W)


def test_set_rle_accepts_list_counts() -> None:
    track = Track(3, 2, 3)
    track.set_rle(0, {"size": [2, 3], "counts": [1, 4, 1]})
    assert np.array_equal(track.mask(0), np.array([[False, True, True], [True, True, False]]))
    assert isinstance(track.rle(0)["counts"], str)


def test_track_json_round_trip() -> None:
    track = _track(obj_id=4)
    doc = json.loads(json.dumps(track.to_json()))
    assert doc["obj_id"] == 4 and doc["height"] == H and doc["width"] == W
    assert set(doc["frames"]) == {"0", "1", "4"}
    assert doc["frames"]["0"]["score"] == 9.5 and "score" not in doc["frames"]["4"]
    again = Track.from_json(doc)
    assert again == track
    for frame in track.frames():
        assert np.array_equal(again.mask(frame), track.mask(frame))


def test_equality_compares_masks_and_scores() -> None:
    a, b = _track(), _track()
    assert a == b
    b.set(4, _rect(W - 3, H - 2, W, H), score=0.5)
    assert a != b
    c = _track()
    c.set(2, np.zeros((H, W), bool))
    assert a != c
    d = _track()
    d.set(0, _rect(0, 0, 5, 6), score=9.5)
    assert a != d
    assert a != _track(obj_id=2)


def test_trackset_json_document(tmp_path: Path) -> None:
    tracks = TrackSet(height=H, width=W, num_frames=10, fps=25.0)
    tracks.add(_track(1))
    second = tracks.new_track(7)
    second.set(9, _rect(10, 10, 20, 20), score=2.25)
    doc = json.loads(json.dumps(tracks.to_json()))
    assert doc["version"] == 1
    assert (doc["height"], doc["width"], doc["num_frames"], doc["fps"]) == (H, W, 10, 25.0)
    assert set(doc["objects"]) == {"1", "7"}
    assert doc["objects"]["7"]["frames"]["9"]["rle"]["size"] == [H, W]
    assert doc["objects"]["7"]["frames"]["9"]["score"] == 2.25
    assert TrackSet.from_json(doc) == tracks
    path = tmp_path / "track.json"
    tracks.save(path)
    loaded = TrackSet.load(path)
    assert loaded == tracks
    assert loaded.obj_ids() == [1, 7] and [t.obj_id for t in loaded] == [1, 7]
    assert 7 in loaded and len(loaded) == 2 and loaded[7].score(9) == 2.25
    assert list(tmp_path.iterdir()) == [path]


def test_trackset_rejects_mismatched_sizes() -> None:
    tracks = TrackSet(height=H, width=W)
    with pytest.raises(MaskFormatError):
        tracks.add(Track(1, H + 1, W))
    doc = TrackSet(height=H, width=W, tracks={1: _track(1)}).to_json()
    doc["objects"]["1"]["frames"]["0"]["rle"] = encode_rle(np.zeros((H, W + 1), bool))
    with pytest.raises(MaskFormatError, match="size"):
        TrackSet.from_json(doc)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("height"),
        lambda d: d.update(version=2),
        lambda d: d.update(objects=[]),
        lambda d: d["objects"].update({"0": {"frames": {}}}),
        lambda d: d["objects"].update({"x": {"frames": {}}}),
        lambda d: d["objects"]["1"]["frames"].update({"-1": d["objects"]["1"]["frames"]["0"]}),
        lambda d: d["objects"]["1"]["frames"]["0"].pop("rle"),
        lambda d: d["objects"]["1"]["frames"]["0"].update(score="high"),
        lambda d: d["objects"]["1"]["frames"]["0"]["rle"].update(counts="92200"),
        lambda d: d.update(fps=-1),
    ],
)
def test_trackset_rejects_malformed_documents(mutate) -> None:  # type: ignore[no-untyped-def]
    doc = json.loads(json.dumps(TrackSet(height=H, width=W, tracks={1: _track(1)}).to_json()))
    mutate(doc)
    with pytest.raises(MaskFormatError):
        TrackSet.from_json(doc)


def test_load_rejects_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "track.json"
    path.write_text("{not json")
    with pytest.raises(MaskFormatError):
        TrackSet.load(path)


def test_long_hd_track_stays_small() -> None:
    # A moving 1080p object: each frame's RLE is a few hundred bytes, not 2 MB.
    track = Track(1, 1080, 1920)
    for frame in range(30):
        mask = np.zeros((1080, 1920), bool)
        mask[200 + frame : 700 + frame, 300 + 5 * frame : 900 + 5 * frame] = True
        track.set(frame, mask, score=10.0)
    size = len(json.dumps(track.to_json()))
    assert size < 30 * 2_000
