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
