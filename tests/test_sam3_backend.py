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
