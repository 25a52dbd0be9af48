"""The sam3 plugin on a long video: the prediction and the objects added to it run as jobs.

A video longer than the backend's frame budget is predicted by a job that writes its prediction
back to the real Label Studio; a concept typed in the editor, or a box drawn there, is then an
``add`` job (:mod:`vrshq.backend.jobs.add_objects`). Its new objects are numbered past the task's
objects and equal, bit for bit, what the plugin itself answers for the same prompts.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.backend_fixtures import TEXT_XML, make_backend
from tests.sam3_fixtures import tiny_sam3_dir  # noqa: F401 - fixture
from tests.served_backend import poll
from vrshq.backend.http.app import create_app
from vrshq.synthetic import SyntheticSpec, write_video

pytest.importorskip("transformers")

SPEC = SyntheticSpec(num_frames=10, width=96, height=72, fps=10.0, num_objects=2, seed=31)


def _job_done(client, job_id: str) -> dict:
    """The job's status once it has finished (a failed job fails the test with its error)."""
    def finished():
        status = client.get(f"/jobs/{job_id}").json
        assert status["state"] not in ("failed", "cancelled"), status
        return status if status["state"] == "done" else None
    return poll(f"job {job_id}", finished, timeout=300)


def _masks(backend, pid, tid) -> dict[int, dict[int, np.ndarray]]:
    state = backend.states.load(str(pid), tid)
    return {o.obj_id: {f: o.track.mask(f) for f in o.track.frames()} for o in state.objects}


def _assert_same_tracks(got: dict[int, np.ndarray], want) -> None:
    assert sorted(got) == want.track.frames()
    for f in want.track.frames():
        assert np.array_equal(got[f], want.track.mask(f)), f"frame {f}"


@pytest.mark.timeout(900)
def test_sam3_objects_typed_or_drawn_on_a_long_video_are_added_by_jobs(
        tiny_sam3_dir, tmp_path, label_studio, ls_api):  # noqa: F811
    from vrshq.plugins.base import ObjectPrompt

    clips = label_studio.doc_root / "sam3jobs"
    clips.mkdir(parents=True, exist_ok=True)
    write_video(SPEC, clips / "long.mp4")
    pid = ls_api.create_project("vrshq sam3 jobs", TEXT_XML)
    ls_api.add_local_storage(pid, clips)
    (tid,) = ls_api.import_tasks(pid, [{"data": {"video": "/data/local-files/?d=sam3jobs/long.mp4",
                                                  "fps": SPEC.fps, "prompt": "person"}}])
    # the random tiny model admits every query: cap the instances so the task stays small
    backend = make_backend(tiny_sam3_dir, label_studio.doc_root, tmp_path / "data", plugin="sam3",
                           sync_frame_budget=5, max_objects=64, label_studio_url=label_studio.url,
                           api_key=label_studio.token)
    try:
        client = create_app(backend=backend).test_client()

        def predict(context=None):
            body = {"tasks": [ls_api.get_task(tid)], "project": str(pid), "label_config": TEXT_XML}
            if context is not None:
                body["params"] = {"context": {"result": context}}
            seen = {j["id"] for j in client.get("/jobs").json["jobs"]}
            r = client.post("/predict", json=body)
            assert r.status_code == 200 and r.json["results"] == [[]], r.get_data(as_text=True)[:500]
            # the interactive answer is empty; its job is listed (kind "add")
            (job,) = [j for j in client.get("/jobs").json["jobs"] if j["id"] not in seen]
            assert job["kind"] == ("predict" if context is None else "add"), job
            return _job_done(client, job["id"])

        predict()
        first = _masks(backend, pid, tid)
        assert first, "the concept found nothing: nothing for the new ids to pass"
        video = backend.open_video(str(pid), tid, "/data/local-files/?d=sam3jobs/long.mp4", SPEC.fps)
        try:
            # a typed concept: its instances numbered on from the task's next free id
            typed = {"from_name": "prompt", "to_name": "video", "type": "textarea",
                     "value": {"text": ["car"]}}
            added = predict([typed])
            after = _masks(backend, pid, tid)
            start = 1 + max(first)
            with backend.model_lock:
                want = backend.plugin.predict(video, [ObjectPrompt(obj_id=start, text="car", label="Car")])
            assert want, "the concept 'car' found nothing: the comparison would be empty"
            assert sorted(after) == sorted(first) + [t.obj_id for t in want]
            for obj_id, frames in first.items():  # the earlier objects are untouched
                assert all(np.array_equal(after[obj_id][f], m) for f, m in frames.items()), obj_id
            for t in want:
                _assert_same_tracks(after[t.obj_id], t)
            state = backend.states.load(str(pid), tid)
            assert {o.label for o in state.objects if o.obj_id >= start} == {"Car"}
            # the job wrote its prediction back: the newest in Label Studio holds every object
            preds = sorted(ls_api.list_predictions(tid), key=lambda p: p["id"])
            assert added["result"]["prediction"] == preds[-1]["id"]
            boxes = [x for x in preds[-1]["result"] if x["type"] == "videorectangle"]
            assert len(boxes) == len(after)

            # a drawn box: tracked by SAM 3's tracker under the next free id
            box = {"x": 20.0, "y": 25.0, "width": 50.0, "height": 40.0}
            drawn = {"id": "JobBox", "from_name": "box", "to_name": "video", "type": "videorectangle",
                     "origin": "manual", "value": {"framesCount": SPEC.num_frames, "labels": ["Animal"],
                                                   "sequence": [{"frame": 3, "enabled": True, "rotation": 0,
                                                                 "time": 0.3, **box}]}}
            predict([drawn])
            final = _masks(backend, pid, tid)
            new_id = 1 + max(after)
            assert sorted(final) == sorted(after) + [new_id]
            w, h = SPEC.width, SPEC.height
            pixels = (0.20 * w, 0.25 * h, 0.70 * w, 0.65 * h)
            with backend.model_lock:
                (ref,) = backend.plugin.predict(video, [ObjectPrompt(obj_id=new_id, box=pixels, frame=2)])
            assert any(ref.track.mask(f).any() for f in ref.track.frames())
            _assert_same_tracks(final[new_id], ref)
            obj = backend.states.load(str(pid), tid).objects[-1]
            assert (obj.label, obj.keyframe, obj.details["region_id"]) == ("Animal", 2, "JobBox")
        finally:
            video.close()
    finally:
        backend.close()
