"""The overlay job on the real queue: a real `vrshq worker`, real Redis, the real Label Studio 1.23.2.

A task of the overlay config on a video longer than the request budget: its fixes run as queued
``correct`` jobs; each posts its prediction, then queues an ``overlay`` job on the same queue
(a JSON payload the worker runs with its own backend). Two fixes queued before any worker runs
end with the overlay of the newest state: the first overlay job finds a newer state and skips.
The overlay's decoded frames are compared with ``overlay_frame`` of the saved state.
"""

from __future__ import annotations

import copy
import subprocess

import numpy as np
import pytest

from vrshq.backend.labelstudio.labelconfig import parse_label_config
from vrshq.masks import encode_brush
from tests.test_overlay_backend import OVERLAY_XML
from tests.test_overlay_job import _decoded, _reference
from tests.test_queue_rq import VRSHQ, redis_url, rq_task  # noqa: F401 - the module's redis-server fixture

INFO = parse_label_config(OVERLAY_XML)


def _worker(env: dict) -> None:
    done = subprocess.run([VRSHQ, "worker", "--burst"], env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]


def _square(spec, y0: int, x0: int, size: int) -> np.ndarray:
    m = np.zeros((spec.height, spec.width), bool)
    m[y0:y0 + size, x0:x0 + size] = True
    return m


@pytest.mark.timeout(900)
def test_queued_fixes_post_their_predictions_and_the_newest_overlay_follows(
        tiny_models, tmp_path, redis_url, label_studio, ls_api):  # noqa: F811
    spec, pid, tid, backend, client, env, _ = rq_task(
        label_studio, ls_api, tiny_models, tmp_path / "backend-data", redis_url, "overlayjob", 16, 23,
        OVERLAY_XML, overlay="")
    try:
        _worker(env)
        (predicted,) = ls_api.list_predictions(tid)
        first = ls_api.get_task(tid)["data"]["overlay"]  # the prediction's overlay, written inline
        assert first.startswith("/data/local-files/?d=overlayjob/vrshq-overlays/"), first
        assert not [j for j in client.get("/jobs").json["jobs"] if j["kind"] == "overlay"]
        state0 = backend.states.load(str(pid), tid)
        a, b = [p.frame for p in state0.pages if p.obj_id == 1][:2]
        fixes = {a: _square(spec, 20, 30, 40), b: _square(spec, 60, 90, 35)}
        for frame, fix in fixes.items():  # two fixes queued before any worker runs
            brush = copy.deepcopy(next(x for x in predicted["result"]
                                       if x["id"] == f"vrshq-{tid}-1-mask-f{frame + 1}"))
            brush["value"]["rle"] = encode_brush(fix)
            r = client.post("/predict", json={"tasks": [ls_api.get_task(tid)], "project": str(pid),
                                              "label_config": OVERLAY_XML,
                                              "params": {"context": {"result": [brush]}}})
            assert r.status_code == 200 and r.json["results"] == [[]], r.json
        _worker(env)  # the two correct jobs, then the overlay jobs they queued
        jobs = sorted(client.get("/jobs").json["jobs"], key=lambda j: j["created"])
        kinds = [(j["kind"], j["state"]) for j in jobs if j["kind"] in ("correct", "overlay")]
        assert kinds == [("correct", "done")] * 2 + [("overlay", "done")] * 2, kinds
        overlays = [j for j in jobs if j["kind"] == "overlay"]
        assert "newer correction" in overlays[0]["result"]["skipped"]
        assert len(ls_api.list_predictions(tid)) == 3  # each fix posted its prediction
        data = ls_api.get_task(tid)["data"]
        assert data["overlay"] == overlays[1]["result"]["overlay"] != first
        path = label_studio.doc_root / data["overlay"].split("?d=", 1)[1]
        assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # the old one removed
        state = backend.states.load(str(pid), tid)
        assert a + 1 in data["keyframe_frames"] and b + 1 in data["keyframe_frames"]
        for frame, fix in fixes.items():
            assert np.array_equal(state.object(1).track.mask(frame), fix)
            got = _decoded(path, frame)
            new, old = _reference(backend, state, frame), _reference(backend, state0, frame)
            region = np.abs(old - new).max(axis=-1) > 20
            assert region.sum() >= 100, region.sum()
            err_new, err_old = np.abs(got - new)[region].mean(), np.abs(got - old)[region].mean()
            assert err_new <= 12 and err_new < err_old / 3, (frame, err_new, err_old)
    finally:
        backend.close()
