"""Per-object predictions (track + keyframe brush mask, one region id) and reading them back."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from label_studio_sdk.label_interface import LabelInterface

from vrshq.backend.labelstudio.labelconfig import LabelConfigError, parse_label_config
from vrshq.backend.labelstudio.predictions import mask_region_id, object_results, parse_annotation, prediction, region_id
from vrshq.errors import MaskFormatError
from vrshq.masks import Track, decode_brush
from vrshq.masks.labelstudio import BOX_KEYS

CONFIGS = Path(__file__).resolve().parents[1] / "backend" / "configs"
XML = (CONFIGS / "video_text_prompt.xml").read_text()
INFO = parse_label_config(XML)
H, W, FPS, N = 48, 64, 25.0, 12


def _track(obj_id: int, x0: int, frames: range) -> Track:
    track = Track(obj_id, H, W)
    for f in frames:
        mask = np.zeros((H, W), bool)
        mask[6 + f : 20 + f, x0 + 2 * f : x0 + 10 + 3 * f] = True
        mask[8 + f, x0 + 2 * f + 1] = False  # not a plain rectangle: the RLE must keep holes
        track.set(f, mask)
    return track


def _two_objects() -> tuple[list[dict], dict[str, tuple[Track, int, str]]]:
    objects = {
        region_id(7, 1): (_track(1, 2, range(8)), 3, "Person"),
        region_id(7, 2): (_track(2, 20, range(4, N)), 6, "Car"),
    }
    results: list[dict] = []
    for index, (rid, (track, keyframe, label)) in enumerate(objects.items()):
        results += object_results(
            track, keyframe, track.mask(keyframe), label, rid, INFO, FPS, N, index, 0.9
        )
    return results, objects


def test_region_id_is_deterministic_and_distinct() -> None:
    assert region_id(7, 1) == region_id(7, 1) == region_id("7", "1")
    assert len({region_id(7, 1), region_id(7, 2), region_id(8, 1)}) == 3


def test_object_results_shape_frames_and_time() -> None:
    track = _track(1, 2, range(8))
    results = object_results(track, 3, track.mask(3), "Person", "r1", INFO, FPS, N, 0, 0.75)
    json.dumps(results)
    rect, brush = results
    assert (rect["id"], rect["from_name"], rect["to_name"], rect["type"]) == ("r1", "box", "video", "videorectangle")
    assert rect["value"]["labels"] == ["Person"] and rect["score"] == 0.75
    assert rect["value"]["framesCount"] == N and rect["value"]["duration"] == pytest.approx(N / FPS)
    seq = rect["value"]["sequence"]
    assert seq[0]["frame"] == 1  # decoded frame 0 is LS frame 1
    for item in seq:
        assert item["time"] == pytest.approx(item["frame"] / FPS)
    assert seq[-1]["frame"] == 8 and seq[-1]["enabled"] is False  # track ends before the video
    # Paired, not shared, ids: the editor merges results that share an id into one region.
    assert (brush["id"], brush["from_name"], brush["to_name"], brush["type"]) == ("r1-mask", "mask", "keyframes", "brushlabels")
    assert brush["item_index"] == 0 and brush["image_rotation"] == 0
    assert (brush["original_width"], brush["original_height"]) == (W, H)
    assert brush["value"]["format"] == "rle" and brush["value"]["brushlabels"] == ["Person"]
    assert np.array_equal(decode_brush(brush["value"]["rle"], H, W), track.mask(3))


def test_two_objects_keep_their_own_labels_and_ids() -> None:
    results, objects = _two_objects()
    assert len(results) == 4
    for rid, (_, _, label) in objects.items():
        mine = [r for r in results if r["id"] in (rid, mask_region_id(rid))]
        assert {r["type"] for r in mine} == {"videorectangle", "brushlabels"}
        rect = next(r for r in mine if r["type"] == "videorectangle")
        brush = next(r for r in mine if r["type"] == "brushlabels")
        assert rect["value"]["labels"] == [label] and brush["value"]["brushlabels"] == [label]
    assert [r["item_index"] for r in results if r["type"] == "brushlabels"] == [0, 1]
    # The second track starts at decoded frame 4 = LS frame 5 and runs to the end.
    seq = [r for r in results if r["type"] == "videorectangle"][1]["value"]["sequence"]
    assert seq[0]["frame"] == 5 and seq[-1]["enabled"] is True


def test_prediction_validates_against_the_config() -> None:
    results, _ = _two_objects()
    pred = prediction(results, "vrshq-0.1", 0.9)
    assert set(pred) == {"result", "model_version", "score"} and pred["model_version"] == "vrshq-0.1"
    li = LabelInterface(XML)
    assert li.validate_prediction(pred, return_errors=True) == []
    bad = copy.deepcopy(pred)
    bad["result"][1]["value"]["brushlabels"] = ["Tree"]
    assert li.validate_prediction(bad, return_errors=True)
    for name in ("video_box_prompt.xml",):
        other = (CONFIGS / name).read_text()
        assert LabelInterface(other).validate_prediction(pred, return_errors=True) == []


def test_config_without_masks_gives_tracks_only() -> None:
    xml = ('<View><Labels name="lab" toName="vid"><Label value="Person"/></Labels>'
           '<Video name="vid" value="$v" frameRate="$fps"/><VideoRectangle name="trk" toName="vid"/></View>')
    info = parse_label_config(xml)
    track = _track(1, 2, range(4))
    results = object_results(track, 0, track.mask(0), "Person", "r", info, FPS, N, 0, 0.5)
    assert [(r["type"], r["from_name"], r["to_name"]) for r in results] == [("videorectangle", "trk", "vid")]
    assert LabelInterface(xml).validate_prediction(prediction(results, "m", 0.5), return_errors=True) == []


def test_bad_inputs_are_refused() -> None:
    track = _track(1, 2, range(4))
    mask = track.mask(0)
    with pytest.raises(LabelConfigError, match="Tree"):
        object_results(track, 0, mask, "Tree", "r", INFO, FPS, N, 0, 0.5)
    with pytest.raises(ValueError, match="score"):
        object_results(track, 0, mask, "Car", "r", INFO, FPS, N, 0, 1.5)
    with pytest.raises(ValueError, match="score"):
        prediction([], "m", -0.1)
    with pytest.raises(ValueError, match="item_index"):
        object_results(track, 0, mask, "Car", "r", INFO, FPS, N, -1, 0.5)
    with pytest.raises(MaskFormatError):
        object_results(track, 0, np.zeros((H + 1, W), bool), "Car", "r", INFO, FPS, N, 0, 0.5)


def test_parse_annotation_round_trip() -> None:
    results, objects = _two_objects()
    # Extra results LS may hold: a typed prompt and an unrelated region.
    results.append({"id": "p", "from_name": "prompt", "to_name": "video", "type": "textarea", "value": {"text": ["x"]}})
    parsed = parse_annotation(json.loads(json.dumps(results)), INFO, keyframe_frames=[4, 7])
    assert set(parsed) == set(objects)
    for rid, (track, keyframe, label) in objects.items():
        region = parsed[rid]
        assert region.label == label and region.has_track
        assert np.array_equal(region.mask, track.mask(keyframe))
        assert region.keyframe == keyframe  # LS frame keyframe + 1 in keyframe_frames
        assert set(region.boxes) == set(track.present_frames())
        for frame, box in region.boxes.items():
            own = track.percent_box(frame)
            assert max(abs(box[k] - own[k]) for k in BOX_KEYS) <= 0.5 + 1e-6
    assert [parsed[r].keyframe_item_index for r in objects] == [0, 1]


def test_parse_annotation_reads_an_edited_mask_and_a_new_brush_region() -> None:
    results, objects = _two_objects()
    rid = region_id(7, 1)
    edited = np.zeros((H, W), bool)
    edited[10:30, 5:25] = True
    brush = next(r for r in results if r["id"] == mask_region_id(rid) and r["type"] == "brushlabels")
    new_value = object_results(objects[rid][0], 3, edited, "Person", rid, INFO, FPS, N, 0, 0.9)[1]["value"]
    brush["value"] = new_value
    extra = dict(brush, id="drawn", value=dict(new_value, brushlabels=["Car"]), item_index=1)
    parsed = parse_annotation(results + [extra], INFO)
    assert np.array_equal(parsed[rid].mask, edited) and parsed[rid].keyframe is None
    assert parsed["drawn"].label == "Car" and parsed["drawn"].boxes == {} and not parsed["drawn"].has_track
    broken = dict(brush, original_height=H + 1)
    with pytest.raises(MaskFormatError):
        parse_annotation([broken], INFO)
