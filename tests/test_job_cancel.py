"""Cancelling jobs: a queued job never runs, a running one stops at its next progress report and
keeps the frames it finished (written back to Label Studio as its prediction), a finished one
is left alone; the job-status route shows all of it.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from vrshq.backend.http.app import create_app
from vrshq.backend.jobs.runner import CANCELLED, DONE, JobRunner
from vrshq.plugins.base import Correction, ObjectPrompt
from tests.backend_fixtures import SPEC, TEXT_XML, make_backend, next_task_id
from vrshq.errors import Cancelled
from vrshq.synthetic import SyntheticSpec, write_video
from vrshq.video.reader import open_video


def stop_after(stage: str, frames: int):
    """A progress callback that cancels once ``frames`` results of ``stage`` are finished."""
    def report(s: str, done: int, total: int) -> None:
        if s == stage and done >= frames:
            raise Cancelled("cancelled by the test")
    return report


# ---------------------------------------------------------------------- the model side
def test_a_cancelled_prediction_keeps_the_frames_it_finished(vrshq_backend, media_root):
    prompts = [ObjectPrompt(1, text="the red disc"), ObjectPrompt(2, text="the car")]
    with open_video(media_root / "clips" / "a.mp4") as video:
        full = vrshq_backend.plugin.predict(video, prompts)
        part = vrshq_backend.plugin.predict(video, prompts, progress=stop_after("propagate", 4))
        with pytest.raises(Cancelled):  # cancelled before any frame was tracked: nothing to keep
            vrshq_backend.plugin.predict(video, prompts, progress=stop_after("anchor", 0))
    for f, p in zip(full, part):
        assert len(f.track.frames()) == SPEC.num_frames
        assert len(p.track.frames()) == 4 and p.keyframe == f.keyframe
        for frame in p.track.frames():  # the finished frames are the full run's frames
            assert p.track.rle(frame) == f.track.rle(frame)


def test_a_cancelled_correction_keeps_the_previous_track_where_it_did_not_reach(vrshq_backend, media_root):
    prompts = [ObjectPrompt(1, text="the red disc"), ObjectPrompt(2, text="the car")]
    with open_video(media_root / "clips" / "a.mp4") as video:
        previous = vrshq_backend.plugin.predict(video, prompts)
        mask = np.zeros((SPEC.height, SPEC.width), bool)
        mask[30:70, 40:90] = True
        frame = (previous[0].keyframe + 6) % SPEC.num_frames
        fix = [Correction(1, frame, mask)]
        full = vrshq_backend.plugin.correct(video, previous, fix)
        part = vrshq_backend.plugin.correct(video, previous, fix, progress=stop_after("propagate", 3))
    old, new, cut = previous[0].track, full[0].track, part[0].track
    assert cut.frames() == list(range(SPEC.num_frames))
    from_new = [f for f in cut.frames() if cut.rle(f) == new.rle(f) and new.rle(f) != old.rle(f)]
    assert all(cut.rle(f) in (new.rle(f), old.rle(f)) for f in cut.frames())
    assert 0 < len(from_new) <= 3 and part[0].corrections == full[0].corrections
    assert part[1].track == previous[1].track  # the uncorrected object is untouched


# ---------------------------------------------------------------------- the job runner
def test_the_runner_cancels_queued_running_and_leaves_finished_jobs():
    runner = JobRunner(workers=1)
    gate, reached = threading.Event(), threading.Event()
    try:
        def long_job(report):
            for i in range(1, 1001):
                report("propagate", i, 1000)
                if i == 10:
                    reached.set()
                    gate.wait(10)
            return {"frames": 1000}

        running, _ = runner.submit("predict", "a", long_job)
        queued, _ = runner.submit("predict", "b", lambda report: {"ran": True})
        assert reached.wait(10)
        assert runner.cancel(queued.id).state == CANCELLED  # at once: it never started
        runner.cancel(running.id)
        gate.set()
        ended = runner.wait(running.id, 10)
        assert ended.state == CANCELLED and ended.done == 11 and ended.total == 1000
        assert ended.to_json()["progress"] == 0.011 and ended.to_json()["cancel_requested"]
        assert runner.wait(queued.id, 10).started is None and runner.get(queued.id).result is None
        # the key is free again: asking anew starts a new job
        again, created = runner.submit("predict", "b", lambda report: {"ran": True})
        assert created and runner.wait(again.id, 10).result == {"ran": True}
        assert runner.cancel(again.id).state == DONE and runner.cancel("nope") is None
        assert runner.counts()[CANCELLED] == 2
    finally:
        gate.set()
        runner.shutdown()


def test_a_job_that_finishes_its_work_after_the_cancel_keeps_its_result():
    runner = JobRunner(workers=1)
    gate = threading.Event()
    try:
        def no_reports(report):
            gate.wait(10)  # no report after the cancel: the result is whole, still kept
            return {"prediction": 7}

        job, _ = runner.submit("predict", "k", no_reports)
        while runner.get(job.id).state != "running":
            time.sleep(0.01)
        runner.cancel(job.id)
        gate.set()
        ended = runner.wait(job.id, 10)
        assert ended.state == CANCELLED and ended.result == {"prediction": 7}
    finally:
        runner.shutdown()


def test_the_cancel_route(vrshq_backend):
    client = create_app(backend=vrshq_backend).test_client()
    assert client.post("/jobs/nope/cancel").status_code == 404
    job, _ = vrshq_backend.jobs.submit("predict", f"route-{next_task_id()}", lambda report: {})
    vrshq_backend.jobs.wait(job.id, 10)
    r = client.post(f"/jobs/{job.id}/cancel")
    assert r.status_code == 409 and "already ended (done)" in r.json["error"]


# ---------------------------------------------------------------------- with Label Studio
@pytest.mark.timeout(600)
def test_cancelling_a_long_prediction_writes_back_the_frames_it_finished(
        label_studio, ls_api, tiny_models, tmp_path):
    clips = label_studio.doc_root / "cancel"
    clips.mkdir(parents=True, exist_ok=True)
    spec = SyntheticSpec(num_frames=120, width=160, height=120, fps=10.0, num_objects=2, seed=31)
    write_video(spec, clips / "long.mp4")
    pid = ls_api.create_project("vrshq cancel", TEXT_XML)
    ls_api.add_local_storage(pid, clips)
    (tid,) = ls_api.import_tasks(pid, [{"data": {"video": "/data/local-files/?d=cancel/long.mp4",
                                                  "fps": 10, "prompt": "the red disc"}}])
    backend = make_backend(tiny_models, label_studio.doc_root, tmp_path / "data", sync_frame_budget=5,
                           label_studio_url=label_studio.url, api_key=label_studio.token)
    try:
        client = create_app(backend=backend).test_client()
        r = client.post("/predict", json={"tasks": [ls_api.get_task(tid)], "project": str(pid),
                                          "label_config": TEXT_XML})
        (job,) = r.json["jobs"]
        deadline = time.monotonic() + 300
        while True:
            status = client.get(f"/jobs/{job['id']}").json
            if status["stage"] == "propagate" and status["done"] >= 5:
                break
            assert status["state"] == "running" or status["state"] == "queued", status
            assert time.monotonic() < deadline, status
            time.sleep(0.05)
        r = client.post(f"/jobs/{job['id']}/cancel")
        assert r.status_code == 202 and r.json["cancel_requested"]
        ended = backend.jobs.wait(job["id"], 120)
        status = client.get(f"/jobs/{job['id']}").json
        assert status["state"] == "cancelled" and 5 <= status["done"] < spec.num_frames, status
        (pred,) = ls_api.list_predictions(tid)
        assert ended.result["prediction"] == pred["id"]
        state = backend.states.load(str(pid), tid)
        (obj,) = state.objects
        assert len(obj.track.frames()) == status["done"]  # the finished frames, all of them
        (track,) = [x for x in pred["result"] if x["type"] == "videorectangle"]
        assert track["value"]["framesCount"] == spec.num_frames
        assert client.post(f"/jobs/{job['id']}/cancel").status_code == 202  # asking again is harmless
    finally:
        backend.close()
