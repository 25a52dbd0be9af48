"""The backend with the sam3 plugin: a task without a prompt takes the project's labels as concepts."""

from __future__ import annotations

import pytest

from tests.backend_fixtures import make_backend, media_root, next_task_id, SPEC  # noqa: F401
from tests.backend_fixtures import TEXT_XML
from tests.sam3_fixtures import tiny_sam3_dir  # noqa: F401 - fixture
from vrshq.backend.http.app import create_app

pytest.importorskip("transformers")


def test_a_task_without_a_prompt_is_predicted_with_the_labels_as_concepts(tiny_sam3_dir, media_root,  # noqa: F811
                                                                           tmp_path):
    backend = make_backend(tiny_sam3_dir, media_root, tmp_path, plugin="sam3")
    try:
        client = create_app(backend=backend).test_client()
        task = {"id": next_task_id(), "project": 1,
                "data": {"video": "/data/local-files/?d=clips/a.mp4", "fps": SPEC.fps}}
        r = client.post("/predict", json={"tasks": [task], "project": "1", "label_config": TEXT_XML})
        assert r.status_code == 200, r.get_data(as_text=True)[:500]
        results = r.json["results"]
        assert len(results) == 1 and results[0], "the labels found nothing: no prediction"
        tracks = [r for r in results[0]["result"] if r["type"] == "videorectangle"]
        labels = {lb for t in tracks for lb in t["value"]["labels"]}
        # the config's labels but its fallback ("Object"), each instance labelled by its concept
        assert tracks and labels <= {"Person", "Car", "Animal"}
        assert all(t["meta"]["label_rule"] for t in tracks)
    finally:
        backend.close()


def test_a_sam3_task_asked_again_gets_its_saved_prediction_with_its_corrections(  # noqa: F811
        tiny_sam3_dir, media_root, tmp_path, monkeypatch):
    import numpy as np

    from vrshq.masks import decode_brush
    from vrshq.plugins.base import Correction

    backend = make_backend(tiny_sam3_dir, media_root, tmp_path, plugin="sam3")
    try:
        client = create_app(backend=backend).test_client()

        def ask(prompt=None):
            data = {"video": "/data/local-files/?d=clips/a.mp4", "fps": SPEC.fps}
            if prompt is not None:
                data["prompt"] = prompt
            r = client.post("/predict", json={"tasks": [{"id": tid, "project": 1, "data": data}],
                                              "project": "1", "label_config": TEXT_XML})
            assert r.status_code == 200, r.get_data(as_text=True)[:500]
            return r.json["results"][0]

        def masks(pred):
            return {x["id"]: decode_brush(x["value"]["rle"], SPEC.height, SPEC.width) > 0
                    for x in pred["result"] if x["type"] == "brushlabels"}

        tid = next_task_id()
        first = ask()  # the labels as concepts
        state = backend.states.load("1", tid)
        assert len(state.objects) >= 2, "too few instances to tell reuse from a new numbering"
        obj = state.objects[-1]  # an instance of a later concept: ids differ from prompt ids
        fixed = np.zeros((SPEC.height, SPEC.width), bool)
        fixed[10:40, 20:60] = True
        backend.correct_task("1", tid, [Correction(obj.obj_id, obj.keyframe, fixed)])
        calls = []
        monkeypatch.setattr(backend.plugin, "predict", lambda *a, **k: calls.append(a) or [])
        again = ask()
        assert calls == [], "a saved sam3 prediction was predicted anew"
        assert [x["id"] for x in again["result"]] == [x["id"] for x in first["result"]]
        assert np.array_equal(masks(again)[f"vrshq-{tid}-{obj.obj_id}-mask"], fixed)
        monkeypatch.undo()
        # other concepts are another request: predicted anew, the correction not carried over
        other = ask("car")
        assert all(not np.array_equal(m, fixed) for m in masks(other).values())
        assert {o.details["concept"] for o in backend.states.load("1", tid).objects} == {"car"}
    finally:
        backend.close()


def _post(client, tid, data=None, context=None):
    body = {"tasks": [{"id": tid, "project": 1,
                       "data": data or {"video": "/data/local-files/?d=clips/a.mp4", "fps": SPEC.fps}}],
            "project": "1", "label_config": TEXT_XML}
    if context is not None:
        body["params"] = {"context": context}
    r = client.post("/predict", json=body)
    assert r.status_code == 200, r.get_data(as_text=True)[:500]
    return r.json["results"][0]


def test_a_box_drawn_on_a_sam3_task_is_tracked_as_its_own_object(tiny_sam3_dir, media_root,  # noqa: F811
                                                                 tmp_path):
    import numpy as np

    from vrshq.plugins.base import ObjectPrompt

    # the random tiny model finds some 27 instances of the labels: room for one more
    backend = make_backend(tiny_sam3_dir, media_root, tmp_path, plugin="sam3", max_objects=64)
    try:
        client = create_app(backend=backend).test_client()
        tid = next_task_id()
        _post(client, tid)  # the labels as concepts
        before = backend.states.load("1", tid).objects
        assert before, "the labels found nothing: nothing for the new id to pass"
        # a track drawn on LS frame 4 (decoded frame 3) and labelled Animal
        box = {"x": 25.0, "y": 20.0, "width": 40.0, "height": 50.0}
        drawn = {"id": "Dr4wn", "from_name": "box", "to_name": "video", "type": "videorectangle",
                 "origin": "manual", "value": {"framesCount": SPEC.num_frames, "labels": ["Animal"],
                                               "sequence": [{"frame": 4, "enabled": True, "rotation": 0,
                                                             "time": 0.4, **box}]}}
        out = _post(client, tid, context={"result": [drawn]})
        assert {x["id"] for x in out["result"]} >= {"Dr4wn", "Dr4wn-mask"}
        track = next(x for x in out["result"] if x["type"] == "videorectangle")
        assert track["value"]["labels"] == ["Animal"]
        state = backend.states.load("1", tid)
        new = state.objects[-1]
        assert [o.obj_id for o in state.objects[:-1]] == [o.obj_id for o in before]
        assert new.obj_id == 1 + max(o.obj_id for o in before)  # its own id, no instance's
        assert (new.label, new.keyframe, new.details["region_id"]) == ("Animal", 3, "Dr4wn")
        # the tracker's own answer for that box, in pixels, on the same video
        w, h = SPEC.width, SPEC.height
        pixels = (0.25 * w, 0.20 * h, 0.65 * w, 0.70 * h)
        video = backend.open_video("1", tid, state.video, state.fps)
        try:
            (ref,) = backend.plugin.predict(video, [ObjectPrompt(obj_id=1, box=pixels, frame=3)])
        finally:
            video.close()
        assert new.track.frames() == list(range(SPEC.num_frames))
        assert any(ref.track.mask(f).any() for f in ref.track.frames())
        for f in ref.track.frames():
            assert np.array_equal(new.track.mask(f), ref.track.mask(f)), f"frame {f}"
    finally:
        backend.close()


def test_a_deleted_sam3_object_stays_deleted(tiny_sam3_dir, media_root, tmp_path):  # noqa: F811
    import numpy as np

    from vrshq.backend.labelstudio.labelconfig import parse_label_config
    from vrshq.backend.labelstudio.results import state_prediction
    from vrshq.masks import decode_brush
    from vrshq.plugins.base import Correction

    backend = make_backend(tiny_sam3_dir, media_root, tmp_path, plugin="sam3")
    info = parse_label_config(TEXT_XML)
    try:
        client = create_app(backend=backend).test_client()
        tid = next_task_id()
        first = _post(client, tid)
        state = backend.states.load("1", tid)
        assert len(state.objects) >= 2, "too few instances to delete one and keep another"
        gone, kept = state.objects[0], state.objects[1]
        gone_rid, kept_rid = f"vrshq-{tid}-{gone.obj_id}", f"vrshq-{tid}-{kept.obj_id}"

        def ids(pred):
            return {x["id"] for x in pred["result"]}

        def of_gone(rid):  # its track, keyframe mask and pages (not object 10's for object 1)
            return rid == gone_rid or rid.startswith(gone_rid + "-")

        def webhook(result, aid):
            r = client.post("/webhook", json={
                "action": "ANNOTATION_UPDATED", "project": {"id": 1, "label_config": TEXT_XML},
                "task": {"id": tid, "data": {"video": "/data/local-files/?d=clips/a.mp4", "fps": SPEC.fps}},
                "annotation": {"id": aid, "task": tid, "completed_by": 9, "result": result,
                               "was_cancelled": False, "updated_at": "2026-12-06T10:00:00+00:00"}})
            assert r.status_code == 201, r.json
            return r.json["result"]

        assert any(of_gone(i) for i in ids(first))
        # the annotator deletes the object (its track and mask pages) and submits
        without = [x for x in first["result"] if not of_gone(x["id"])]
        assert webhook(without, 71)["corrections"] == 1
        # what a correction job would post, and the saved prediction served again: no trace of it
        shown = state_prediction(backend.states.load("1", tid), info)
        again = _post(client, tid)
        for pred in (shown, again):
            assert not any(of_gone(i) for i in ids(pred))
            assert ids(pred) == {i for i in ids(first) if not of_gone(i)}
        # a later correction of another object re-propagates it; the deleted one stays gone
        fixed = np.zeros((SPEC.height, SPEC.width), bool)
        fixed[30:70, 40:100] = True
        backend.correct_task("1", tid, [Correction(kept.obj_id, kept.keyframe, fixed)])
        after = _post(client, tid)
        assert not any(of_gone(i) for i in ids(after))
        brush = next(x for x in after["result"] if x["id"] == f"{kept_rid}-mask")
        assert np.array_equal(decode_brush(brush["value"]["rle"], SPEC.height, SPEC.width) > 0, fixed)
        # the next submission (still without it) is not a second deletion
        assert webhook([x for x in after["result"]], 72)["corrections"] == 0
        assert not any(of_gone(i) for i in ids(_post(client, tid)))
        # an annotation that carries it again (the annotator undid the deletion) brings it back
        webhook(first["result"], 73)
        assert {i for i in ids(first) if of_gone(i)} <= ids(_post(client, tid))
    finally:
        backend.close()
