"""Durability: kill -9 the backend and the workers repeatedly during a stream of webhook corrections;
afterwards every acknowledged correction is in the log exactly once.

Everything is real: a `redis-server`, `vrshq serve` (gunicorn, two worker processes with several
threads each), two `vrshq worker` processes and the session's Label Studio, all sharing one
MODEL_DIR. A client posts webhook corrections the way Label Studio does (each one also delivered
twice at once, as a duplicate event would be) and re-sends every delivery that got no 2xx until
it does; a killer SIGKILLs the whole gunicorn process group and the workers at random moments and
restarts them.

Each kill waits (bounded) until work is in flight: a webhook request unanswered for a backend kill,
a job started by a worker for a worker kill; the test then asserts that the kills did cut requests
(the client saw a dropped connection, not just a refused one) and jobs (a job running at a worker
kill started again after it and finished).

Once every job has finished, each object shows its last correction, and the newest prediction in
Label Studio is the task's state: jobs of one task hold a lock across processes (two workers
never re-track one task at once), and a job re-run after a killed worker skips a correction
that a newer one has replaced.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from vrshq.backend.corrections import Correction, CorrectionsLog
from vrshq.backend.jobs.runner import DONE, FAILED
from vrshq.backend.labelstudio.labelconfig import parse_label_config
from vrshq.backend.jobs.redis_queue import RQJobRunner
from vrshq.backend.labelstudio.results import shown_mask, state_prediction
from vrshq.backend.tasks.state import TaskStateStore
from tests.backend_fixtures import TEXT_XML
from tests.test_backend_corrections import with_mask
from tests.test_queue_rq import redis_url  # noqa: F401 - the module-scoped redis-server fixture
from tests.test_serve import VRSHQ, free_port, start, wait_up
from vrshq.masks import encode_rle
from vrshq.synthetic import SyntheticSpec, write_video

INFO = parse_label_config(TEXT_XML)
VIDEO = SyntheticSpec(num_frames=16, width=64, height=64, fps=10.0, num_objects=2, seed=31)
QUEUE = "durability"
KILL_ROUNDS = 4  # the killer's plan below has this many rounds
MIN_CORRECTIONS = 8  # per task; the stream goes on while the killer still has rounds to play
MAX_CORRECTIONS = 60
OBJECTS = (1, 2)  # "the red disc", "the car": corrections alternate between them


def square(k: int, size: int = 12) -> np.ndarray:
    """The k-th distinct square mask on the 64x64 keyframe (k < 100)."""
    m = np.zeros((VIDEO.height, VIDEO.width), bool)
    y0, x0 = 2 + (k // 10) * 4, 2 + (k % 10) * 4
    m[y0:y0 + size, x0:x0 + size] = True
    return m


def rle_key(mask: np.ndarray | dict | None) -> str | None:
    """A comparable text form of a mask (as the log stores it: COCO RLE)."""
    if mask is None:
        return None
    rle = encode_rle(mask) if isinstance(mask, np.ndarray) else mask
    return json.dumps(rle, sort_keys=True)


def logged(mask: np.ndarray, annotation: int = 7) -> Correction:
    """A webhook correction of object 1 on frame 3 of task 5 with ``mask`` as the corrected mask."""
    return Correction(project=1, task=5, annotation=annotation, annotator=9, video_path="/v.mp4",
                      video_sha256=None, fps=10.0, prompt="the red disc", obj_id=1, label="Car", frame=3,
                      predicted_mask=encode_rle(np.zeros_like(mask)), corrected_mask=encode_rle(mask),
                      predicted_boxes=None, corrected_boxes=None, model_version="tiny", plugin="vrshq",
                      event="ANNOTATION_UPDATED")


def test_the_same_correction_appended_at_once_by_many_writers_is_logged_once(tmp_path):
    # Each writer has its own log (engine, connections), as threads and processes of the backend
    # have: the repeat check and the insert must be one transaction for exactly one to win.
    writers = 8
    logs = [CorrectionsLog.for_model_dir(tmp_path) for _ in range(writers)]
    try:
        for k in range(5):
            barrier = threading.Barrier(writers)
            got: list[list[int]] = []

            def append(log: CorrectionsLog, mask: np.ndarray, barrier: threading.Barrier,
                       got: list[list[int]]) -> None:
                barrier.wait()
                got.append(log.append_new([logged(mask)]))

            threads = [threading.Thread(target=append, args=(log, square(k), barrier, got)) for log in logs]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(len(ids) for ids in got) == [0] * (writers - 1) + [1], got
        assert logs[0].count() == 5
        # Only a repeat of the newest correction is skipped: going back to an earlier mask is logged.
        assert logs[0].append_new([logged(square(0))]) != []
        assert logs[0].append_new([logged(square(0))]) == []
        assert logs[0].count() == 6
    finally:
        for log in logs:
            log.close()


@dataclass
class Delivery:
    """One webhook delivery: a corrected annotation of one task; acknowledged when it got a 2xx."""

    task: int
    annotation: int
    obj_id: int
    mask: np.ndarray
    payload: dict[str, Any]
    acked: bool = False
    answers: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0


class Cluster:
    """The backend and the workers as processes in their own sessions, restartable."""

    def __init__(self, env: dict[str, str], logs: Path, workers: int = 2) -> None:
        self.env, self.logs = env, logs
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.backend: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen | None] = [None] * workers
        self.starts = 0
        self.signalled = 0.0

    def start_backend(self) -> None:
        """Start `vrshq serve` (two gunicorn processes) and wait for /health."""
        self.starts += 1
        log = self.logs / f"serve-{self.starts}.log"
        self.backend = start(["--port", str(self.port), "--workers", "2", "--threads", "4"], self.env, log)
        wait_up(self.url, self.backend, log, timeout=120)

    def start_worker(self, i: int) -> None:
        """Start `vrshq worker` number i (short lease: a killed worker's job is re-queued soon)."""
        self.starts += 1
        log = (self.logs / f"worker{i}-{self.starts}.log").open("w")
        self.workers[i] = subprocess.Popen(
            [VRSHQ, "worker", "--lease", "3", "--maintenance-interval", "1"], env=self.env,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    @staticmethod
    def kill(proc: subprocess.Popen | None) -> None:
        """SIGKILL the process group (gunicorn's arbiter and its workers die together)."""
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def kill_all(self, procs: list[subprocess.Popen | None]) -> None:
        """SIGKILL the process groups of ``procs`` one right after the other, then reap them;
        ``self.signalled``: the time the last signal was sent."""
        alive = [p for p in procs if p is not None and p.poll() is None]
        for proc in alive:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.signalled = time.time()
        for proc in alive:
            proc.wait(timeout=30)

    def stop_all(self) -> None:
        """Kill everything this cluster started."""
        self.kill(self.backend)
        for w in self.workers:
            self.kill(w)


class InFlight:
    """Webhook requests sent and not yet answered, and those a kill cut off."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.cut: list[str] = []  # requests that got a dropped connection (not a refused one)

    def post(self, url: str, payload: dict[str, Any]) -> requests.Response:
        with self.lock:
            self.count += 1
        try:
            return requests.post(url, json=payload, timeout=20)
        except requests.RequestException as exc:
            if "refused" not in str(exc).lower():
                with self.lock:
                    self.cut.append(f"{type(exc).__name__}: {str(exc)[:200]}")
            raise
        finally:
            with self.lock:
                self.count -= 1


def post_until_acked(url: str, delivery: Delivery, deadline: float, errors: list[str],
                     in_flight: InFlight) -> None:
    """POST the delivery until it gets a 2xx, re-sending after connection errors and 5xx."""
    while time.monotonic() < deadline:
        delivery.attempts += 1
        try:
            r = in_flight.post(url + "/webhook", delivery.payload)
        except requests.RequestException:
            time.sleep(0.2)  # the backend is down (killed): Label Studio would send it again
            continue
        if r.status_code >= 500:
            time.sleep(0.2)
            continue
        if r.status_code >= 300:
            errors.append(f"annotation {delivery.annotation}: {r.status_code} {r.text[:300]}")
            return
        delivery.answers.append(r.json()["result"])
        delivery.acked = True
        return


def next_delivery(pid: int, tid: int, result: list[dict], first_id: int, k: int) -> Delivery:
    """The k-th correction of a task: one more object's keyframe mask changed in ``result``."""
    obj = OBJECTS[k % len(OBJECTS)]
    mask = square(k + (tid % 2) * 50)
    # The annotator keeps editing: every delivery carries all of the task's corrections so far.
    result = with_mask(result, f"vrshq-{tid}-{obj}", mask)
    annotation_id = first_id + k
    payload = {
        "action": ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")[k % 2],
        "project": {"id": pid, "label_config": TEXT_XML}, "task": {"id": tid},
        "annotation": {"id": annotation_id, "task": tid, "completed_by": 9, "result": result,
                       "was_cancelled": False, "updated_at": f"2026-11-25T10:{k // 60:02d}:{k % 60:02d}+00:00"}}
    return Delivery(tid, annotation_id, obj, mask, payload)


def _utc_seconds(when: datetime) -> float:
    """Seconds since the epoch of an RQ time (UTC, with or without its tzinfo)."""
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()


def wait_for_jobs(runner: RQJobRunner, job_ids: set[str], timeout: float) -> None:
    """Wait until every job is done and the queue is empty; none may fail or vanish."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = {j: runner.get(j) for j in job_ids}
        assert all(job is not None for job in jobs.values()), "a queued job vanished"
        failed = {j: job.error for j, job in jobs.items() if job.state == FAILED}
        assert not failed, failed
        counts = runner.counts()
        if all(job.state == DONE for job in jobs.values()) and counts["queued"] == 0 \
                and counts["running"] == 0 and not runner.queue.scheduled_job_registry.count:
            return
        assert time.monotonic() < deadline, (
            counts, runner.queue.scheduled_job_registry.count,
            {j: (job.state, job.error) for j, job in jobs.items() if job.state != DONE})
        time.sleep(0.5)


def stream(url: str, pid: int, tid: int, base: list[dict], first_id: int, keep_going: Callable[[int], bool],
           deadline: float, errors: list[str], out: list[Delivery], in_flight: InFlight) -> None:
    """One annotator's stream on one task: each correction is sent (twice at once) until acknowledged."""
    k = len(out)
    while keep_going(k) and time.monotonic() < deadline:
        delivery = next_delivery(pid, tid, out[-1].payload["annotation"]["result"] if out else base,
                                 first_id, k)
        out.append(delivery)
        # A duplicate delivery arriving at the same time (two backend threads or processes).
        twin = replace(delivery, answers=[])
        sender = threading.Thread(target=post_until_acked, args=(url, twin, deadline, errors, in_flight))
        sender.start()
        post_until_acked(url, delivery, deadline, errors, in_flight)
        sender.join()
        delivery.answers += twin.answers
        delivery.acked = delivery.acked and twin.acked
        k += 1
        time.sleep(random.uniform(0.05, 0.4))


@pytest.mark.timeout(420)
def test_acknowledged_corrections_survive_kill_9_exactly_once(
        tiny_models, tmp_path, redis_url, label_studio, ls_api):  # noqa: F811 - redis_url is the fixture
    from redis import Redis

    Redis.from_url(redis_url).flushdb()
    rng = random.Random(20261125)
    clips = label_studio.doc_root / QUEUE
    clips.mkdir(parents=True, exist_ok=True)
    write_video(VIDEO, clips / "v.mp4")
    pid = ls_api.create_project("vrshq durability", TEXT_XML)
    ls_api.add_local_storage(pid, clips)
    data = {"video": f"/data/local-files/?d={QUEUE}/v.mp4", "fps": VIDEO.fps,
            "prompt": "the red disc\nthe car"}
    tids = ls_api.import_tasks(pid, [{"data": dict(data)} for _ in range(2)])
    model_dir = tmp_path / "backend-data"
    env = {**os.environ, "REDIS_URL": redis_url, "VRSHQ_QUEUE": QUEUE, "VRSHQ_MODEL": str(tiny_models),
           "MODEL_DIR": str(model_dir), "VRSHQ_DEVICE": "cpu", "LABEL_STUDIO_URL": label_studio.url,
           "LABEL_STUDIO_API_KEY": label_studio.token, "OMP_NUM_THREADS": "1",
           "LOCAL_FILES_DOCUMENT_ROOT": str(label_studio.doc_root)}
    logs = tmp_path / "logs"
    logs.mkdir()
    cluster = Cluster(env, logs)
    deliveries: dict[int, list[Delivery]] = {tid: [] for tid in tids}
    errors: list[str] = []
    started = time.monotonic()
    try:
        cluster.start_backend()
        for i in range(len(cluster.workers)):
            cluster.start_worker(i)
        # The backend's own prediction of each task: the state annotations are compared with.
        base = {}
        for tid in tids:
            r = requests.post(cluster.url + "/predict", timeout=120, json={
                "tasks": [ls_api.get_task(tid)], "project": str(pid), "label_config": TEXT_XML})
            assert r.status_code == 200, r.text
            base[tid] = r.json()["results"][0]["result"]

        killer_done = threading.Event()
        rounds: list[str] = []
        in_flight = InFlight()
        at_kill: list[dict[str, Any]] = []  # per round: the work in flight when the kill came
        probe = RQJobRunner(redis_url, QUEUE)

        def running_jobs() -> list[str]:
            return probe.queue.started_job_registry.get_job_ids(cleanup=False)

        def killer() -> None:
            """Kill -9 the backend and/or the workers at random moments while work is in flight,
            restarting them each time."""
            try:
                plan = ["backend", "workers", "all", "all"]  # each kind at least once
                rng.shuffle(plan)
                for victims in plan:
                    time.sleep(rng.uniform(0.5, 3.0))
                    # Then wait (bounded) until what this round kills is busy: a webhook request
                    # unanswered (backend) and a job started by a worker (workers).
                    want_posts, want_jobs = victims in ("backend", "all"), victims in ("workers", "all")
                    give_up = time.monotonic() + 90  # a loaded machine starts its workers slowly
                    while True:
                        posts, jobs = in_flight.count, running_jobs() if want_jobs else []
                        if ((posts or not want_posts) and (jobs or not want_jobs)) or time.monotonic() > give_up:
                            break
                        time.sleep(0.005)
                    procs = [cluster.backend] if want_posts else []
                    procs += cluster.workers if want_jobs else []
                    # All of the round's processes at once, right after the look at what they do.
                    at = time.time()
                    cluster.kill_all(procs)
                    at_kill.append({"victims": victims, "posts": posts, "jobs": jobs, "at": at,
                                    "signalled": cluster.signalled})
                    rounds.append(victims)
                    for i, w in enumerate(cluster.workers):
                        if w is None or w.poll() is not None:
                            cluster.start_worker(i)
                    if cluster.backend is None or cluster.backend.poll() is not None:
                        cluster.start_backend()
            finally:
                killer_done.set()

        deadline = time.monotonic() + 240
        kill_thread = threading.Thread(target=killer, name="killer")
        streams = [threading.Thread(target=stream, name=f"stream-{tid}", args=(
            cluster.url, pid, tid, base[tid], 1000 * (n + 1),
            lambda k: k < MAX_CORRECTIONS and (k < MIN_CORRECTIONS or not killer_done.is_set()),
            deadline, errors, deliveries[tid], in_flight)) for n, tid in enumerate(tids)]
        kill_thread.start()
        for t in streams:
            t.start()
        kill_thread.join()
        for t in streams:
            t.join()
        stream_s = time.monotonic() - started
        assert not errors, errors
        assert len(rounds) == KILL_ROUNDS, rounds
        # Every kill hit work in flight, and the backend kills did cut requests off.
        for snap in at_kill:
            if snap["victims"] in ("backend", "all"):
                assert snap["posts"] > 0, at_kill
            if snap["victims"] in ("workers", "all"):
                assert snap["jobs"], at_kill
        assert in_flight.cut, f"no webhook request was cut by a kill ({at_kill})"
        sent = [d for ds in deliveries.values() for d in ds]
        assert sent and all(d.acked for d in sent), [d.annotation for d in sent if not d.acked]

        # --- the log: every acknowledged correction exactly once, nothing else twice ------------
        db = model_dir / "corrections.sqlite3"
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        with CorrectionsLog.for_model_dir(model_dir, create=False) as log:
            rows = log.list(project=pid)
        keyframe = {}
        states = TaskStateStore(model_dir)
        for tid in tids:
            for obj in states.load(str(pid), tid).objects:
                keyframe[(tid, obj.obj_id)] = obj.keyframe
        for d in sent:
            found = [c for c in rows if (c.task, c.annotation, c.obj_id, c.frame, rle_key(c.corrected_mask))
                     == (d.task, d.annotation, d.obj_id, keyframe[(d.task, d.obj_id)], rle_key(d.mask))]
            assert len(found) == 1, (d.task, d.annotation, d.obj_id, [c.id for c in found])
        seen: dict[tuple, int] = {}
        for c in rows:
            key = (c.task, c.annotation, c.obj_id, c.frame, rle_key(c.corrected_mask),
                   json.dumps(c.corrected_boxes, sort_keys=True))
            assert key not in seen, f"rows {seen[key]} and {c.id} are the same correction"
            seen[key] = c.id
        sent_ids = {(d.task, d.annotation) for d in sent}
        assert {(c.task, c.annotation) for c in rows} <= sent_ids

        # --- the jobs: none lost; all finish once the processes stay up ------------------------
        job_ids = {a["job"] for d in sent for a in d.answers if a.get("job")}
        assert job_ids  # the corrections were queued for re-propagation
        runner = RQJobRunner(redis_url, QUEUE)
        try:
            # The jobs running at a worker kill are waited for too. Each one either had just
            # finished when the kill came (a race of a few ms), or was cut off and run again: it
            # (re)started after the kill and finished. At least one was cut off.
            from rq.job import Job as RQJob

            running = {(j, snap["at"], snap["signalled"]) for snap in at_kill
                       if snap["victims"] in ("workers", "all") for j in snap["jobs"]}
            wait_for_jobs(runner, job_ids | {j for j, _, _ in running}, timeout=150)
            interrupted = set()
            for job_id, at, signalled in running:
                rq_job = RQJob.fetch(job_id, connection=runner.redis)
                began, ended = (_utc_seconds(t) for t in (rq_job.started_at, rq_job.ended_at))
                assert runner.get(job_id).state == DONE, job_id
                assert ended <= signalled or began > at, (job_id, began, ended, at, signalled)
                if began > signalled:
                    interrupted.add(job_id)
            assert interrupted, (f"no job was running at a worker kill: {at_kill}",
                                 [(j, RQJob.fetch(j, connection=runner.redis).ended_at) for j, _, _ in running])
        finally:
            runner.shutdown()
            probe.shutdown()

        # --- the final state and Label Studio show each object's last correction --------------
        for tid in tids:
            state = states.load(str(pid), tid)
            for obj in OBJECTS:
                last = [d for d in deliveries[tid] if d.obj_id == obj][-1]
                assert np.array_equal(shown_mask(state.object(obj)), last.mask), (tid, obj, last.annotation)
            # The newest prediction in Label Studio is that state: jobs write back under the task lock.
            newest = max(ls_api.list_predictions(tid), key=lambda p: p["id"])
            assert newest["result"] == state_prediction(state, INFO)["result"], tid
        print(f"\nkills hit {[(k['victims'], k['posts'], len(k['jobs'])) for k in at_kill]}, "
              f"{len(in_flight.cut)} requests cut, {len(interrupted)} jobs re-run")
        print(f"{len(sent)} corrections, {sum(d.attempts for d in sent)} attempts, kills {rounds}, "
              f"{len(rows)} rows, {len(job_ids)} jobs; stream {stream_s:.0f} s, "
              f"total {time.monotonic() - started:.0f} s")
    finally:
        cluster.stop_all()
