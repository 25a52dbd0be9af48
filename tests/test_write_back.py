"""A job's prediction is written to Label Studio once, even when the job runs twice and its
second run gives slightly different masks (a GPU re-run), and even when the first attempt died
right after its POST; a different job still writes its own.
"""

from __future__ import annotations

import copy

import pytest

from vrshq.backend.http.app import create_app
from tests.backend_fixtures import TEXT_XML, make_backend
from vrshq.synthetic import SyntheticSpec, write_video

pytestmark = pytest.mark.timeout(600)


def nudged(pred: dict, dx: float) -> dict:
    """The same prediction with its first box moved a little (what a re-run on a GPU may give)."""
    out = copy.deepcopy(pred)
    track = next(r for r in out["result"] if r["type"] == "videorectangle")
    track["value"]["sequence"][0]["x"] += dx
    return out


def test_a_job_writes_its_prediction_once(label_studio, ls_api, tiny_models, tmp_path):
    clips = label_studio.doc_root / "once"
    clips.mkdir(parents=True, exist_ok=True)
    write_video(SyntheticSpec(num_frames=8, width=96, height=64, fps=10.0, num_objects=1, seed=41),
                clips / "v.mp4")
    pid = ls_api.create_project("vrshq write once", TEXT_XML)
    ls_api.add_local_storage(pid, clips)
    (tid,) = ls_api.import_tasks(pid, [{"data": {"video": "/data/local-files/?d=once/v.mp4",
                                                  "fps": 10, "prompt": "the red disc"}}])
    backend = make_backend(tiny_models, label_studio.doc_root, tmp_path / "data",
                           label_studio_url=label_studio.url, api_key=label_studio.token)
    try:
        client = create_app(backend=backend).test_client()
        r = client.post("/predict", json={"tasks": [ls_api.get_task(tid)], "project": str(pid),
                                          "label_config": TEXT_XML})
        (pred,) = r.json["results"]
        project = str(pid)

        def count() -> int:
            return len(ls_api.list_predictions(tid))

        first = backend.post_prediction(project, tid, pred, key="job-1")
        # The same job again (re-run after its worker died late), with other pixels: no new one.
        assert backend.post_prediction(project, tid, nudged(pred, 0.5), key="job-1") == first
        assert count() == 1
        # An attempt that died between its POST and its record: the re-run finds that POST.
        backend.writes.put("job-2", {"task": tid, "before": first})
        landed = backend.writer(project).post_prediction(tid, nudged(pred, 1.0)["result"], pred["score"],
                                                          pred["model_version"])
        assert backend.post_prediction(project, tid, nudged(pred, 1.5), key="job-2") == landed
        assert count() == 2
        # An attempt that died before its POST: the re-run writes it.
        backend.writes.put("job-3", {"task": tid, "before": landed})
        third = backend.post_prediction(project, tid, nudged(pred, 2.0), key="job-3")
        assert third not in (first, landed) and count() == 3
        # Another job with the very same result is another correction: it is written too.
        assert backend.post_prediction(project, tid, nudged(pred, 2.0), key="job-4") != third
        assert count() == 4
        # Without a job key (a request), the same result is recognised as JSON and not repeated.
        assert backend.post_prediction(project, tid, nudged(pred, 2.0)) == third
        assert count() == 4
        assert backend.writes.prune(older_than_s=-1) == 4 and backend.writes.get("job-1") is None
    finally:
        backend.close()
