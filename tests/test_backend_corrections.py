"""Corrections through the backend: interactive requests (context) and webhooks, on the tiny models.

The webhook's write-back to Label Studio is proven against a real Label Studio in
test_labelstudio_e2e.py; here the backend has no Label Studio, so webhooks log corrections and
say that the re-propagation needs one.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from vrshq.backend.http.app import create_app
from vrshq.backend.labelstudio.labelconfig import parse_label_config
from vrshq.backend.labelstudio.predictions import parse_annotation
from tests.backend_fixtures import BOX_XML, SPEC, TEXT_XML, make_backend, next_task_id, text_task
from vrshq.masks import encode_brush

INFO = parse_label_config(TEXT_XML)


def predicted(client, tid):
    r = client.post("/predict", json={"tasks": [text_task(tid)], "project": "1", "label_config": TEXT_XML})
    assert r.status_code == 200, r.json
    return r.json["results"][0]


def with_mask(result: list[dict], region: str, mask: np.ndarray) -> list[dict]:
    out = copy.deepcopy(result)
    for r in out:
        if r["type"] == "brushlabels" and r["id"] == region + "-mask":
            r["value"]["rle"] = encode_brush(mask)
    return out


def square(y0, x0, size=30) -> np.ndarray:
    m = np.zeros((SPEC.height, SPEC.width), bool)
    m[y0:y0 + size, x0:x0 + size] = True
    return m


def webhook(client, action, tid, result, annotation_id=1):
    return client.post("/webhook", json={
        "action": action, "project": {"id": 1, "label_config": TEXT_XML},
        "task": {"id": tid, "data": text_task(tid)["data"]},
        "annotation": {"id": annotation_id, "task": tid, "completed_by": 9, "result": result,
                       "was_cancelled": False, "updated_at": "2026-11-25T10:00:00.000000+00:00"}})


# --- webhooks ---------------------------------------------------------------------------------

def test_unknown_events_and_training(client):
    r = client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 1}})
    assert (r.status_code, r.json) == (200, {"status": "Unknown event"})
    # The Train button with nothing logged yet starts no job (training is in test_versions.py).
    r = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
    assert r.status_code == 200 and r.json["result"] == {"job": None, "note": "no corrections logged yet"}


def test_an_unchanged_annotation_logs_nothing(client, vrshq_backend):
    tid = next_task_id()
    pred = predicted(client, tid)
    before = vrshq_backend.corrections.count()
    r = webhook(client, "ANNOTATION_CREATED", tid, pred["result"])
    assert r.status_code == 201 and r.json["result"]["corrections"] == 0
    assert r.json["result"]["job"] is None
    assert vrshq_backend.corrections.count() == before


def test_a_corrected_mask_is_logged_once_with_what_changed(client, vrshq_backend):
    tid = next_task_id()
    pred = predicted(client, tid)
    fixed = square(40, 60)
    result = with_mask(pred["result"], f"vrshq-{tid}-2", fixed)
    r = webhook(client, "ANNOTATION_CREATED", tid, result, annotation_id=55)
    assert r.status_code == 201, r.json
    assert r.json["result"]["corrections"] == 1
    assert "LABEL_STUDIO_URL" in r.json["result"]["note"]  # no Label Studio to write back to
    (logged,) = vrshq_backend.corrections.list(project=1, task=tid)
    state = vrshq_backend.states.load(1, tid)
    obj = state.object(2)
    assert (logged.obj_id, logged.frame, logged.label) == (2, obj.keyframe, "Car")
    assert (logged.annotation, logged.annotator, logged.event) == (55, 9, "ANNOTATION_CREATED")
    assert logged.prompt == "the car" and logged.model_version == vrshq_backend.model_version
    from vrshq.masks import decode_rle
    assert np.array_equal(decode_rle(logged.corrected_mask), fixed)
    assert np.array_equal(decode_rle(logged.predicted_mask), obj.keyframe_mask)
    # The same annotation sent again (ANNOTATION_UPDATED without changes) is not logged twice.
    again = webhook(client, "ANNOTATION_UPDATED", tid, result, annotation_id=55)
    assert again.json["result"]["corrections"] == 0
    assert len(vrshq_backend.corrections.list(project=1, task=tid)) == 1


def test_a_deleted_object_and_a_moved_box_are_logged(client, vrshq_backend):
    tid = next_task_id()
    pred = predicted(client, tid)
    result = [r for r in copy.deepcopy(pred["result"]) if not r["id"].startswith(f"vrshq-{tid}-1")]
    track = next(r for r in result if r["type"] == "videorectangle")
    track["value"]["sequence"][0]["x"] += 5.0
    r = webhook(client, "ANNOTATION_UPDATED", tid, result)
    assert r.json["result"]["corrections"] == 2
    assert r.json["result"]["objects"] == []  # nothing to re-propagate: no mask changed
    logged = {c.obj_id: c for c in vrshq_backend.corrections.list(project=1, task=tid)}
    assert logged[1].corrected_boxes == [] and not decode_any(logged[1].corrected_mask)
    assert logged[2].corrected_boxes[0]["x"] == pytest.approx(logged[2].predicted_boxes[0]["x"] + 5)
    assert logged[2].corrected_mask is None


def decode_any(rle) -> bool:
    from vrshq.masks import decode_rle
    return bool(decode_rle(rle).any())


def test_webhook_for_a_task_the_backend_never_predicted(client):
    r = webhook(client, "ANNOTATION_CREATED", next_task_id(), [])
    assert r.status_code == 201 and "no prediction" in r.json["result"]["note"]


@pytest.mark.parametrize(("payload", "words"), [
    ({"action": "ANNOTATION_CREATED", "project": {"id": 1}}, "annotation"),
    ({"action": "ANNOTATION_CREATED", "project": {"id": 1}, "annotation": {"result": "x"}}, "list"),
    ({"action": "ANNOTATION_CREATED", "project": {"id": 1}, "annotation": {"result": []}}, "task id"),
    ({"action": "ANNOTATION_CREATED", "annotation": {"result": [], "task": 3}}, "project"),
])
def test_malformed_webhooks_are_4xx(client, payload, words):
    r = client.post("/webhook", json=payload)
    assert r.status_code == 400 and words in r.json["error"]


# --- interactive (context) --------------------------------------------------------------------

def test_an_interactive_mask_correction_re_propagates_that_object(client, vrshq_backend):
    tid = next_task_id()
    pred = predicted(client, tid)
    before = vrshq_backend.states.load(1, tid)
    fixed = square(20, 20, 40)
    brush = next(r for r in with_mask(pred["result"], f"vrshq-{tid}-1", fixed)
                 if r["type"] == "brushlabels" and r["id"] == f"vrshq-{tid}-1-mask")
    r = client.post("/predict", json={"tasks": [text_task(tid)], "project": "1", "label_config": TEXT_XML,
                                      "params": {"context": {"result": [brush]}}})
    assert r.status_code == 200, r.json
    (out,) = r.json["results"]
    after = vrshq_backend.states.load(1, tid)
    pages = {f"vrshq-{tid}-1-mask-f{p.frame + 1}" for p in after.pages if p.obj_id == 1}
    assert pages  # VRSHQ_MASK_PAGES (default 2): the object's extra mask pages come with it
    assert {x["id"] for x in out["result"]} == {f"vrshq-{tid}-1", f"vrshq-{tid}-1-mask"} | pages  # only that object
    obj = after.object(1)
    assert np.array_equal(after.object(2).track.mask(3), before.object(2).track.mask(3))
    assert [c.frame for c in obj.corrections] == [obj.keyframe]
    # The returned mask is the correction; the track on the keyframe follows it.
    region = parse_annotation(out["result"], INFO)[f"vrshq-{tid}-1"]
    assert np.array_equal(region.mask, fixed)
    got = obj.track.mask(obj.keyframe)
    assert (got & fixed).sum() / (got | fixed).sum() > 0.9
    (logged,) = vrshq_backend.corrections.list(project=1, task=tid)
    assert logged.event == "interactive" and logged.obj_id == 1


def test_an_interactive_text_prompt_adds_an_object(client, vrshq_backend):
    tid = next_task_id()
    predicted(client, tid)
    typed = {"from_name": "prompt", "to_name": "video", "type": "textarea",
             "value": {"text": ["the animal on the left"]}}
    r = client.post("/predict", json={"tasks": [text_task(tid)], "project": "1", "label_config": TEXT_XML,
                                      "params": {"context": {"result": [typed]}}})
    assert r.status_code == 200, r.json
    (out,) = r.json["results"]
    track = next(x for x in out["result"] if x["type"] == "videorectangle")
    assert track["id"] == f"vrshq-{tid}-3" and track["value"]["labels"] == ["Animal"]
    assert track["meta"] == {"label_rule": "predicted_values"}  # "animal" is an Animal value
    mask = next(x for x in out["result"] if x["type"] == "brushlabels")
    assert mask["item_index"] == 2
    state = vrshq_backend.states.load(1, tid)
    assert [o.obj_id for o in state.objects] == [1, 2, 3] and len(state.keyframe_urls) == 3


def test_a_mask_correction_before_any_prediction_is_refused(client):
    brush = {"id": "x", "from_name": "mask", "to_name": "keyframes", "type": "brushlabels",
             "original_width": SPEC.width, "original_height": SPEC.height, "item_index": 0,
             "value": {"format": "rle", "rle": encode_brush(square(0, 0)), "brushlabels": ["Car"]}}
    r = client.post("/predict", json={"tasks": [text_task(next_task_id())], "project": "1",
                                      "label_config": TEXT_XML,
                                      "params": {"context": {"result": [brush]}}})
    assert r.status_code == 400 and "predict it first" in r.json["error"]


def test_the_sam2_backend_tracks_a_drawn_box_under_its_region_id(tiny_models, media_root, tmp_path, truth):
    backend = make_backend(tiny_models, media_root, tmp_path, plugin="sam2")
    try:
        client = create_app(backend=backend).test_client()
        tid = next_task_id()
        task = {"id": tid, "data": {"video": "/data/local-files/?d=clips/a.mp4", "fps": SPEC.fps}}
        # No prompt yet: nothing to predict, and no error.
        r = client.post("/predict", json={"tasks": [task], "project": "2", "label_config": BOX_XML})
        assert r.status_code == 200 and r.json["results"] == [[]]
        ys, xs = np.nonzero(truth[2] == 1)
        box = {"x": xs.min() / SPEC.width * 100, "y": ys.min() / SPEC.height * 100,
               "width": (xs.max() + 1 - xs.min()) / SPEC.width * 100,
               "height": (ys.max() + 1 - ys.min()) / SPEC.height * 100}
        drawn = {"id": "Ab3dE", "from_name": "box", "to_name": "video", "type": "videorectangle",
                 "origin": "manual", "value": {"framesCount": SPEC.num_frames, "duration": 1.2,
                                               "labels": ["Animal"],
                                               "sequence": [{"frame": 3, "enabled": True, "rotation": 0,
                                                             "time": 0.3, **box}]}}
        r = client.post("/predict", json={"tasks": [task], "project": "2", "label_config": BOX_XML,
                                          "params": {"context": {"result": [drawn]}}})
        assert r.status_code == 200, r.json
        (out,) = r.json["results"]
        ids = {(x["type"], x["id"]) for x in out["result"]}
        pages = {(t, i) for t, i in ids if i.startswith("Ab3dE-mask-f")}  # its extra mask pages
        assert ids - pages == {("videorectangle", "Ab3dE"), ("brushlabels", "Ab3dE-mask")}
        track = next(x for x in out["result"] if x["type"] == "videorectangle")
        assert track["value"]["labels"] == ["Animal"]
        assert min(k["frame"] for k in track["value"]["sequence"]) <= 3
        state = backend.states.load(2, tid)
        assert state.objects[0].keyframe == 2
        # A text prompt is refused by the box plugin, naming what it takes.
        typed = {"from_name": "prompt", "to_name": "video", "type": "textarea", "value": {"text": ["x"]}}
        r = client.post("/predict", json={"tasks": [text_task(tid)], "project": "2", "label_config": TEXT_XML,
                                          "params": {"context": {"result": [typed]}}})
        assert r.status_code == 400 and "does not take text prompts" in r.json["error"]
    finally:
        backend.close()
