"""Jobs on a real Redis with RQ: enqueue, deduplicate, bound the queue, and real `vrshq worker`s.

A real `redis-server` (Debian's package, installed by .ci/run) is started on a free port; the
worker is the real `vrshq worker` process, writing its prediction back to the session's real
Label Studio.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vrshq.backend.http.app import create_app
from vrshq.backend.jobs.redis_queue import BusyError, RQJobRunner
from tests.backend_fixtures import TEXT_XML, make_backend
from tests.test_serve import free_port
from vrshq.synthetic import SyntheticSpec, write_video

VRSHQ = str(Path(sys.executable).with_name("vrshq"))
REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    """A throw-away redis-server on 127.0.0.1 (no persistence)."""
    if not Path(REDIS).exists():
        pytest.fail("redis-server is not installed (apt-get install redis-server; .ci/run does it)")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(folder)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    from redis import Redis

    client = Redis.from_url(url)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except Exception:  # noqa: BLE001 - not up yet
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_the_queue_deduplicates_reports_and_is_bounded(redis_url):
    runner = RQJobRunner(redis_url, queue="unit", max_queued=2)
    runner.redis.flushdb()
    job, created = runner.submit("predict", "k1", {"project": "1", "task": 5}, task=5)
    assert created and job.state == "queued" and job.kind == "predict" and job.info == {"task": 5}
    again, created = runner.submit("predict", "k1", {"project": "1", "task": 5})
    assert not created and again.id == job.id
    runner.submit("predict", "k2", {"project": "1", "task": 6})
    with pytest.raises(BusyError, match="retry later"):
        runner.submit("predict", "k3", {"project": "1", "task": 7})
    assert runner.counts()["queued"] == 2
    assert [j.id for j in runner.list()][0] == job.id
    with pytest.raises(TypeError):
        runner.submit("predict", "k4", lambda report: None)


def test_a_full_queue_makes_predict_answer_busy(tiny_models, media_root, tmp_path, redis_url):
    from redis import Redis

    Redis.from_url(redis_url).flushdb()
    backend = make_backend(tiny_models, media_root, tmp_path, sync_frame_budget=5, redis_url=redis_url,
                           queue="busy", max_queued=1, label_studio_url="http://127.0.0.1:9",
                           api_key="unused-token")
    try:
        client = create_app(backend=backend).test_client()

        def predict(tid):
            return client.post("/predict", json={"tasks": [{"id": tid, "data": {
                "video": "/data/local-files/?d=clips/a.mp4", "fps": 10, "prompt": "the red disc"}}],
                "project": "1", "label_config": TEXT_XML})

        first = predict(1)
        assert first.status_code == 200 and first.json["results"] == [[]]
        (job,) = first.json["jobs"]
        assert client.get(f"/jobs/{job['id']}").json["state"] == "queued"
        busy = predict(2)
        assert busy.status_code == 503 and "retry later" in busy.json["error"]
        assert busy.headers["Retry-After"] == "30"
        assert predict(1).json["jobs"][0]["id"] == job["id"]  # asking again: the same job
    finally:
        backend.close()


def rq_task(label_studio, ls_api, tiny_models, data, redis_url, queue: str, num_frames: int, seed: int,
            label_config: str = TEXT_XML, **task_data: object):
    """A Label Studio project + task on a synthetic video, a backend on the queue, a worker env
    (``label_config`` and more ``task_data`` for another config)."""
    from redis import Redis

    Redis.from_url(redis_url).flushdb()
    clips = label_studio.doc_root / queue
    clips.mkdir(parents=True, exist_ok=True)
    spec = SyntheticSpec(num_frames=num_frames, width=160, height=120, fps=10.0, num_objects=2, seed=seed)
    write_video(spec, clips / "long.mp4")
    pid = ls_api.create_project(f"vrshq rq {queue}", label_config)
    ls_api.add_local_storage(pid, clips)
    (tid,) = ls_api.import_tasks(pid, [{"data": {"video": f"/data/local-files/?d={queue}/long.mp4",
                                                  "fps": 10, "prompt": "the red disc", **task_data}}])
    # MODEL_DIR is shared by the backend and its workers (task states).
    backend = make_backend(tiny_models, label_studio.doc_root, data, sync_frame_budget=5,
                           redis_url=redis_url, queue=queue, label_studio_url=label_studio.url,
                           api_key=label_studio.token)
    env = {**os.environ, "REDIS_URL": redis_url, "VRSHQ_QUEUE": queue, "VRSHQ_MODEL": str(tiny_models),
           "MODEL_DIR": str(data), "VRSHQ_DEVICE": "cpu", "LABEL_STUDIO_URL": label_studio.url,
           "LABEL_STUDIO_API_KEY": label_studio.token, "OMP_NUM_THREADS": "1",
           "LOCAL_FILES_DOCUMENT_ROOT": str(label_studio.doc_root)}
    client = create_app(backend=backend).test_client()
    r = client.post("/predict", json={"tasks": [ls_api.get_task(tid)], "project": str(pid),
                                      "label_config": label_config})
    assert r.status_code == 200 and r.json["results"] == [[]], r.json
    (job,) = r.json["jobs"]
    return spec, pid, tid, backend, client, env, job


@pytest.mark.timeout(600)
def test_a_real_worker_runs_the_job_and_writes_the_prediction_back(
        tiny_models, tmp_path, redis_url, label_studio, ls_api):
    spec, pid, tid, backend, client, env, job = rq_task(
        label_studio, ls_api, tiny_models, tmp_path / "backend-data", redis_url, "e2e", 20, 21)
    try:
        assert ls_api.list_predictions(tid) == []  # nothing yet: no worker runs
        # An object typed in the editor on this long video is a queued job too (JSON payload).
        typed = {"from_name": "prompt", "to_name": "video", "type": "textarea",
                 "value": {"text": ["the car"]}}
        r = client.post("/predict", json={"tasks": [ls_api.get_task(tid)], "project": str(pid),
                                          "label_config": TEXT_XML, "params": {"context": {"result": [typed]}}})
        assert r.status_code == 200 and r.json["results"] == [[]], r.json
        add = next(j for j in client.get("/jobs").json["jobs"] if j["kind"] == "add")
        assert add["state"] == "queued" and backend.jobs.queue.count == 2
        done = subprocess.run([VRSHQ, "worker", "--burst"], env=env, capture_output=True, text=True,
                              timeout=400)
        assert done.returncode == 0, done.stderr[-3000:]
        status = client.get(f"/jobs/{job['id']}").json
        assert status["state"] == "done", status
        assert status["stage"] == "propagate" and status["done"] == status["total"] > 0
        first, second = sorted(ls_api.list_predictions(tid), key=lambda p: p["id"])
        assert status["result"]["prediction"] == first["id"]
        assert client.get(f"/jobs/{add['id']}").json["result"]["prediction"] == second["id"]
        tracks = [x for x in first["result"] if x["type"] == "videorectangle"]
        assert [t["id"] for t in tracks] == [f"vrshq-{tid}-1"]
        assert tracks[0]["value"]["framesCount"] == spec.num_frames
        both = [x for x in second["result"] if x["type"] == "videorectangle"]
        assert [t["id"] for t in both] == [f"vrshq-{tid}-1", f"vrshq-{tid}-2"]
        assert both[1]["value"]["labels"] == ["Car"]
        state = backend.states.load(str(pid), tid)  # the worker saved the task state
        assert [o.details["prompt"] for o in state.objects] == ["the red disc", "the car"]
    finally:
        backend.close()


@pytest.mark.timeout(600)
def test_a_job_whose_worker_is_killed_is_run_by_another_and_written_once(
        tiny_models, tmp_path, redis_url, label_studio, ls_api):
    import signal

    spec, pid, tid, backend, client, env, job = rq_task(
        label_studio, ls_api, tiny_models, tmp_path / "backend-data", redis_url, "kill", 160, 22)
    args = [VRSHQ, "worker", "--lease", "4", "--maintenance-interval", "1"]
    workers = []
    try:
        first = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        workers.append(first)

        def status():
            return client.get(f"/jobs/{job['id']}").json

        deadline = time.monotonic() + 240
        while not (status()["stage"] == "propagate" and status()["done"] > 0):
            assert time.monotonic() < deadline, status()
            assert first.poll() is None
            time.sleep(0.2)
        first.send_signal(signal.SIGKILL)  # mid-propagation: nothing was written yet
        first.wait()
        assert ls_api.list_predictions(tid) == []
        second = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        workers.append(second)
        deadline = time.monotonic() + 300
        while status()["state"] != "done":
            assert time.monotonic() < deadline, status()
            assert status()["state"] != "failed", status()
            time.sleep(0.5)
        preds = ls_api.list_predictions(tid)
        assert len(preds) == 1 and status()["result"]["prediction"] == preds[0]["id"]
        # Writing the same job's prediction again (a re-run after a late death) adds nothing.
        pred = preds[0]
        again = backend.writer(str(pid)).create_prediction(tid, pred["result"], pred["score"],
                                                           pred["model_version"])
        assert again == pred["id"] and len(ls_api.list_predictions(tid)) == 1
    finally:
        for w in workers:
            if w.poll() is None:
                w.terminate()  # RQ's warm shutdown; on a loaded machine it may outlast the wait
                try:
                    w.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    w.kill()
                    w.wait(timeout=30)
        backend.close()


def test_a_queued_job_cancelled_on_the_queue_never_runs(redis_url):
    runner = RQJobRunner(redis_url, queue="cancel-queued", max_queued=5)
    runner.redis.flushdb()
    job, _ = runner.submit("predict", "c1", {"project": "1", "task": 5}, task=5)
    cancelled = runner.cancel(job.id)
    assert cancelled.state == "cancelled" and cancelled.cancel_requested
    assert runner.queue.count == 0 and runner.counts()["cancelled"] == 1
    assert [j.state for j in runner.list() if j.id == job.id] == ["cancelled"]
    again, created = runner.submit("predict", "c1", {"project": "1", "task": 5})
    assert created and again.id != job.id  # the key is free once the job is cancelled
    assert runner.cancel("no-such-job") is None


@pytest.mark.timeout(600)
def test_a_worker_stops_a_cancelled_job_and_writes_back_the_frames_it_finished(
        tiny_models, tmp_path, redis_url, label_studio, ls_api):
    spec, pid, tid, backend, client, env, job = rq_task(
        label_studio, ls_api, tiny_models, tmp_path / "backend-data", redis_url, "cancel", 120, 23)
    worker = subprocess.Popen([VRSHQ, "worker"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        def status():
            return client.get(f"/jobs/{job['id']}").json

        deadline = time.monotonic() + 240
        while not (status()["stage"] == "propagate" and status()["done"] >= 5):
            assert time.monotonic() < deadline and worker.poll() is None, status()
            time.sleep(0.1)
        r = client.post(f"/jobs/{job['id']}/cancel")
        assert r.status_code == 202 and r.json["cancel_requested"]
        ended = backend.jobs.wait(job["id"], 120)
        assert ended.state == "cancelled" and 5 <= ended.done < spec.num_frames, ended
        (pred,) = ls_api.list_predictions(tid)
        assert ended.result == {"prediction": pred["id"], "task": tid, "cancelled": True}
        (obj,) = backend.states.load(str(pid), tid).objects
        assert len(obj.track.frames()) == ended.done
        assert 'vrshq_jobs{state="cancelled"}' in client.get("/metrics").get_data(as_text=True)
    finally:
        worker.terminate()
        # a worker blocked in its 30 s dequeue (BLMOVE) can take that long to see the signal
        worker.wait(timeout=90)
        backend.close()
