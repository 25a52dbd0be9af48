"""`vrshq corrections sync` against a real Label Studio: annotations submitted while the backend was
down (no webhook reached it) are logged afterwards, compared with the prediction each started
from; what the webhook already logged, unchanged annotations and a second run add nothing.
"""

from __future__ import annotations

import numpy as np
import pytest

from vrshq.backend.http.app import create_app
from vrshq.backend.corrections import CorrectionsLog
from tests.backend_fixtures import TEXT_XML, make_backend
from tests.cli_helpers import run_cli
from tests.test_backend_corrections import with_mask
from vrshq.masks import decode_rle
from vrshq.synthetic import SyntheticSpec, write_video

pytestmark = pytest.mark.timeout(600)
SPEC = SyntheticSpec(num_frames=8, width=96, height=64, fps=10.0, num_objects=2, seed=43)


def square(y0: int, x0: int, size: int = 20) -> np.ndarray:
    m = np.zeros((SPEC.height, SPEC.width), bool)
    m[y0:y0 + size, x0:x0 + size] = True
    return m


def test_sync_logs_the_corrections_no_webhook_brought(label_studio, ls_api, tiny_models, tmp_path,
                                                      capfd, monkeypatch):
    clips = label_studio.doc_root / "sync"
    clips.mkdir(parents=True, exist_ok=True)
    write_video(SPEC, clips / "v.mp4")
    pid = ls_api.create_project("vrshq sync", TEXT_XML)
    ls_api.add_local_storage(pid, clips)
    (tid,) = ls_api.import_tasks(pid, [{"data": {"video": "/data/local-files/?d=sync/v.mp4", "fps": 10,
                                                  "prompt": "the red disc\nthe car"}}])
    data = tmp_path / "model-dir"
    backend = make_backend(tiny_models, label_studio.doc_root, data,
                           label_studio_url=label_studio.url, api_key=label_studio.token)
    try:
        client = create_app(backend=backend).test_client()
        (pred,) = client.post("/predict", json={"tasks": [ls_api.get_task(tid)], "project": str(pid),
                                                "label_config": TEXT_XML}).json["results"]
        parent = backend.post_prediction(str(pid), tid, pred)
        one, two = f"vrshq-{tid}-1", f"vrshq-{tid}-2"
        # Submitted while the backend was down: a corrected mask, an unchanged annotation, and
        # one drawn from scratch (no prediction to compare with).
        fixed = square(10, 20)
        missed = ls_api.create_annotation(tid, with_mask(pred["result"], one, fixed), parent_prediction=parent)
        ls_api.create_annotation(tid, pred["result"], parent_prediction=parent)
        ls_api.create_annotation(tid, with_mask(pred["result"], two, square(30, 50)))
        # One that did reach the backend by webhook.
        seen_mask = square(40, 60)
        seen = ls_api.create_annotation(tid, with_mask(pred["result"], two, seen_mask), parent_prediction=parent)
        r = client.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": pid, "label_config": TEXT_XML},
                                          "task": {"id": tid}, "annotation": ls_api.get_annotation(seen)})
        assert r.status_code == 201 and r.json["result"]["corrections"] == 1, r.json
    finally:
        backend.close()

    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.token)
    rc, out, err = run_cli(capfd, "corrections", "sync", "--project", pid, "--data-dir", data)
    assert rc == 0, err
    assert "4 annotation(s) read, 1 correction(s) logged, 1 not started from a backend prediction" in out
    with CorrectionsLog.for_model_dir(data) as log:
        rows = log.list(project=pid, task=tid)
    assert [(r.annotation, r.obj_id, r.event) for r in rows] == [(seen, 2, "ANNOTATION_CREATED"), (missed, 1, "SYNC")]
    assert np.array_equal(decode_rle(rows[1].corrected_mask), fixed)
    assert rows[1].annotated_at and rows[1].prompt == "the red disc"
    # Again: nothing new.
    rc, out, _ = run_cli(capfd, "corrections", "sync", "--project", pid, "--data-dir", data)
    assert rc == 0 and "0 correction(s) logged" in out

    # Clear errors: another project, no Label Studio credentials.
    rc, _, err = run_cli(capfd, "corrections", "sync", "--project", pid + 1000, "--data-dir", data)
    assert rc != 0 and "no predicted task of project" in err and "Traceback" not in err
    monkeypatch.delenv("LABEL_STUDIO_API_KEY")
    rc, _, err = run_cli(capfd, "corrections", "sync", "--project", pid, "--data-dir", data)
    assert rc != 0 and "LABEL_STUDIO_API_KEY" in err and len(err.strip().splitlines()) == 1


def test_sync_with_label_studio_down_names_the_url_it_tried(tmp_path, capfd):
    from vrshq.backend.tasks.state import TaskState, TaskStateStore
    from tests.cli_helpers import assert_one_line_error
    from tests.test_serve import free_port

    data = tmp_path / "model-dir"
    TaskStateStore(data).save(TaskState(project="1", task="5", plugin="vrshq", model_version="m",
                                        video="/data/local-files/?d=v.mp4", fps=10.0, frames_count=8))
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    rc, _, err = run_cli(capfd, "corrections", "sync", "--project", "1", "--data-dir", data,
                         "--label-studio-url", url, "--api-key", "some-token")
    assert_one_line_error(rc, err, url, "LABEL_STUDIO_URL")
    assert "some-token" not in err
