"""``vrshq serve`` for real: gunicorn worker processes, the model loaded once per process."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from bench.load_bench import stop_server
from tests.backend_fixtures import TEXT_XML, text_task
from vrshq.backend.labelstudio.predictions import page_frame, track_region_id

VRSHQ = str(Path(sys.executable).with_name("vrshq"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([VRSHQ, "serve", *args], stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)


def wait_up(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"vrshq serve exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url + "/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise AssertionError(f"vrshq serve not up after {timeout} s:\n{log.read_text()[-3000:]}")


stop = stop_server  # SIGTERM the server's process group, SIGKILL after 30 s


@pytest.fixture
def env(tiny_models, media_root, tmp_path) -> dict[str, str]:
    return {**os.environ, "VRSHQ_MODEL": str(tiny_models), "MODEL_DIR": str(tmp_path / "data"),
            "LOCAL_FILES_DOCUMENT_ROOT": str(media_root), "VRSHQ_DEVICE": "cpu",
            "OMP_NUM_THREADS": "1", "BASIC_AUTH_USER": "ls", "BASIC_AUTH_PASS": "s3cret"}


@pytest.mark.timeout(300)
def test_serve_answers_label_studio_requests_from_two_worker_processes(env, tmp_path):
    port = free_port()
    log = tmp_path / "serve.log"
    proc = start(["--port", str(port), "--workers", "2", "--threads", "2"], env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_up(url, proc, log)
        auth = ("ls", "s3cret")
        assert requests.post(url + "/predict", json={}, timeout=5).status_code == 401

        def send(tid: int) -> requests.Response:
            return requests.post(url + "/predict", auth=auth, timeout=120, json={
                "tasks": [text_task(tid)], "project": "5.1", "label_config": TEXT_XML})

        # Pairs of requests at once, until both worker processes have answered (at least 6
        # requests, at most 24: a process that never gets one fails the test).
        results, workers = [], []
        with ThreadPoolExecutor(max_workers=2) as pool:
            while len(results) < 6 or len(set(workers)) < 2:
                assert len(results) < 24, f"{len(results)} requests, all answered by pid {set(workers)}"
                tids = [9000 + len(results), 9001 + len(results)]
                for tid, r in zip(tids, pool.map(send, tids)):
                    assert r.status_code == 200, r.text
                    results.append((tid, r.json()["results"][0]))
                    workers.append(r.headers["X-Vrshq-Worker"])
        n = len(results)
        assert all(w.isdigit() for w in workers) and len(set(workers)) == 2, workers
        # Every task got its own region ids: no state leaks between requests.
        for tid, pred in results:
            ids = {f"vrshq-{tid}-{obj}" for obj in (1, 2)}
            got = {x["id"] for x in pred["result"]}
            pages = {i for i in got if page_frame(i) is not None}  # extra mask pages (VRSHQ_MASK_PAGES)
            assert got - pages == ids | {rid + "-mask" for rid in ids}
            assert pages and {track_region_id(i) for i in pages} <= ids, pages
        # Whichever worker answers /metrics, it counts the requests of both (multiprocess mode).
        for _ in range(4):
            metrics = requests.get(url + "/metrics", auth=auth, timeout=5).text
            assert f'vrshq_requests_total{{route="/predict",status="200"}} {n}.0' in metrics, metrics
            assert f'vrshq_request_seconds_count{{route="/predict"}} {n + 1}.0' in metrics, metrics
            assert f"vrshq_frames_total {n * 24}.0" in metrics  # n tasks x 12 frames x 2 objects
            assert "vrshq_queue_depth 0.0" in metrics
    finally:
        code = stop(proc)
    text = log.read_text()
    # The model loads once per worker process (two workers -> two loads), never per request, and
    # the two processes that loaded it are the two that answered.
    assert text.count("model loaded") == 2, text[-3000:]
    assert set(re.findall(r"model loaded: .*\(pid (\d+)\)", text)) == set(workers), text[-3000:]
    assert "--workers > 1 without REDIS_URL" in text
    assert code == 0, text[-3000:]


def test_serve_with_a_bad_model_folder_fails_with_one_line(env, tmp_path):
    bad = tmp_path / "empty-models"
    bad.mkdir()
    env = {**env, "VRSHQ_MODEL": str(bad)}
    done = subprocess.run([VRSHQ, "serve", "--port", str(free_port())], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("vrshq: error:")]
    assert errors and "vrshq" in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr


def test_serve_with_an_incomplete_model_folder_names_the_part_before_starting(env, tiny_models,
                                                                            tmp_path):
    import shutil
    partial = tmp_path / "models"
    shutil.copytree(tiny_models, partial, ignore=shutil.ignore_patterns("clip"))
    env = {**env, "VRSHQ_MODEL": str(partial)}
    done = subprocess.run([VRSHQ, "serve", "--port", str(free_port())], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    # checked in the parent before gunicorn starts: no banner, no worker boot lines
    assert len(lines) == 1 and lines[0].startswith("vrshq: error: "), done.stderr[-2000:]
    assert f"{partial / 'clip'}: no clip/ folder" in lines[0]


def test_serve_with_an_unknown_plugin_names_the_installed_ones(env):
    done = subprocess.run([VRSHQ, "serve", "--plugin", "nope"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vrshq: error: unknown model plugin 'nope' (available: ")
    assert "sam2" in lines[0] and "vrshq" in lines[0]
