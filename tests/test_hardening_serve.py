"""Issue 15, section 1 ("The server"), served: `vrshq serve` under slow clients and a busy model.

Each test starts the real server (gunicorn, basic auth on, a local-files media root) on
127.0.0.1 and failed before backend.server's worker: slow clients took every gthread thread,
/health waited behind the model, and a body over its route's limit was read before its 413.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import requests

from bench.load_bench import stop_server
from tests.backend_fixtures import TEXT_XML, next_task_id, text_task

VRSHQ = str(Path(sys.executable).with_name("vrshq"))
AUTH = ("ls", "s3cret-hard")
READ_TIMEOUT_S = 3  # VRSHQ_REQUEST_TIMEOUT of the served backend


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(env: dict[str, str], log: Path, threads: int = 2) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([VRSHQ, "serve", "--port", str(port), "--threads", str(threads)],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"vrshq serve exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except requests.RequestException:
            pass
        time.sleep(0.3)
    stop_server(proc)
    raise AssertionError(f"vrshq serve not up:\n{log.read_text()[-3000:]}")


def base_env(media_root: Path, data: Path) -> dict[str, str]:
    return {**os.environ, "MODEL_DIR": str(data), "LOCAL_FILES_DOCUMENT_ROOT": str(media_root),
            "VRSHQ_DEVICE": "cpu", "OMP_NUM_THREADS": "1", "BASIC_AUTH_USER": AUTH[0],
            "BASIC_AUTH_PASS": AUTH[1], "VRSHQ_REQUEST_TIMEOUT": str(READ_TIMEOUT_S)}


@pytest.fixture(scope="module")
def served(tiny_models, media_root, tmp_path_factory):
    """`vrshq serve` on the tiny models with two request threads."""
    tmp = tmp_path_factory.mktemp("served")
    env = {**base_env(media_root, tmp / "data"), "VRSHQ_MODEL": str(tiny_models)}
    proc, url = serve(env, tmp / "serve.log")
    yield url
    stop_server(proc)


def slow_client(url: str, head: bytes = b"GET /health HTTP/1.1\r\nHost: x\r\n") -> socket.socket:
    """A connection that sends part of a request header and then nothing."""
    port = int(url.rsplit(":", 1)[1])
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(head)
    return s


def read_answer(s: socket.socket, timeout: float) -> bytes:
    """What the server sends until it closes the connection (or ``timeout`` passes)."""
    s.settimeout(timeout)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = s.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not data:
            break
        out += data
    return out


# --- 1. slow clients do not take the request threads ---------------------------------------

@pytest.mark.timeout(300)
def test_slow_clients_do_not_freeze_the_server(served):
    url = served
    slow = [slow_client(url) for _ in range(40)]  # 20x the threads, each half a header
    try:
        assert requests.get(url + "/health", timeout=10).status_code == 200
        r = requests.post(url + "/predict", auth=AUTH, timeout=120, json={
            "tasks": [text_task(next_task_id())], "project": "1", "label_config": TEXT_XML})
        assert r.status_code == 200, r.text[:300]
        # A client that never finishes its request is answered 408 and dropped after the read timeout.
        answer = read_answer(slow[0], READ_TIMEOUT_S + 15)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"VRSHQ_REQUEST_TIMEOUT" in answer
    finally:
        for s in slow:
            s.close()
    # Also a slow body: the header complete, the body never.
    s = slow_client(url, b"POST /setup HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\nAuthorization: Basic " +
                    base64.b64encode(":".join(AUTH).encode()) + b"\r\n\r\n{")
    try:
        assert requests.get(url + "/health", timeout=10).status_code == 200
        assert read_answer(s, READ_TIMEOUT_S + 15).startswith(b"HTTP/1.1 408")
    finally:
        s.close()


# --- 5. a body over its route's limit is refused on its header, before it is read -------------

@pytest.mark.timeout(120)
@pytest.mark.parametrize(("head", "status"), [
    (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
     b"Content-Length: 100000000\r\nAUTH\r\n\r\n{", b"413"),  # 100 MB announced, 1 byte sent
    (b"POST /setup HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\nAUTH\r\n\r\n{", b"413"),
    (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{", b"401"),  # no credentials
    (b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nAUTH\r\n\r\n1\r\n{", b"411"),
])
def test_a_body_is_refused_on_its_header_before_it_is_read(served, head, status):
    auth = b"Authorization: Basic " + base64.b64encode(":".join(AUTH).encode())
    s = slow_client(served, head.replace(b"AUTH", auth))
    try:
        answer = read_answer(s, 10)
    finally:
        s.close()
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:300]
    assert len(answer) < 1000 and b'"error"' in answer


# --- 2. /health and /metrics answer while every model slot is busy ---------------------------

HELD_PLUGIN = '''
"""A test plugin whose predict() holds the model until the test releases it (a file appears)."""
import os
import time

import numpy as np

from vrshq.plugins.base import ModelPlugin, ObjectTrack
from vrshq.masks.track import Track

HOLD = os.environ["VRSHQ_TEST_HOLD"]


class HeldPlugin(ModelPlugin):
    name = "held"
    capabilities = frozenset({"text"})

    @property
    def version(self):
        return "held-1"

    def load(self, config):
        pass

    def predict(self, video, prompts, progress=None):
        open(os.path.join(HOLD, "started-%d" % time.monotonic_ns()), "w").close()
        deadline = time.monotonic() + 120
        while not os.path.exists(os.path.join(HOLD, "release")) and time.monotonic() < deadline:
            time.sleep(0.02)
        out = []
        for p in prompts:
            mask = np.zeros((video.height, video.width), bool)
            mask[10:30, 10:30] = True
            track = Track(p.obj_id, video.height, video.width)
            for f in range(len(video)):
                track.set(f, mask, score=1.0)
            out.append(ObjectTrack(p.obj_id, p.label, track, 0, mask, 1.0, {"prompt": p.text}))
        return out

    def correct(self, video, previous, corrections, progress=None):
        return previous
'''


@pytest.fixture()
def held_plugin(tmp_path) -> tuple[Path, Path]:
    """A folder to put on PYTHONPATH that installs the ``held`` plugin, and its hold folder."""
    site = tmp_path / "site"
    (site / "vrshq_held_plugin-0.dist-info").mkdir(parents=True)
    (site / "vrshq_held_plugin.py").write_text(textwrap.dedent(HELD_PLUGIN))
    info = site / "vrshq_held_plugin-0.dist-info"
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vrshq-held-plugin\nVersion: 0\n")
    (info / "entry_points.txt").write_text("[vrshq.plugins]\nheld = vrshq_held_plugin:HeldPlugin\n")
    hold = tmp_path / "hold"
    hold.mkdir()
    return site, hold


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.mark.timeout(300)
def test_health_and_metrics_answer_while_every_model_slot_is_busy(media_root, tmp_path, held_plugin):
    site, hold = held_plugin
    env = {**base_env(media_root, tmp_path / "data"), "VRSHQ_PLUGIN": "held",
           "VRSHQ_TEST_HOLD": str(hold),
           "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    env.pop("VRSHQ_MODEL", None)
    proc, url = serve(env, tmp_path / "serve.log", threads=2)
    answers: list[int] = []
    busy = []
    try:
        def post():
            r = requests.post(url + "/predict", auth=AUTH, timeout=200, json={
                "tasks": [text_task(next_task_id())], "project": "1", "label_config": TEXT_XML})
            answers.append(r.status_code)

        busy = [threading.Thread(target=post) for _ in range(4)]  # 2 threads: all of them busy
        for t in busy:
            t.start()
        wait_for(lambda: any(hold.glob("started-*")), 60, "the model to be held")
        for _ in range(3):
            assert requests.get(url + "/health", timeout=10).status_code == 200
            metrics = requests.get(url + "/metrics", auth=AUTH, timeout=10)
            assert metrics.status_code == 200 and "vrshq_requests_total" in metrics.text
        assert answers == []  # answered while the model was still held
        assert len(list(hold.glob("started-*"))) == 1  # one predict at a time: the rest wait
    finally:
        (hold / "release").touch()
        for t in busy:
            t.join(timeout=200)
        code = stop_server(proc)
    assert answers == [200] * 4, (answers, (tmp_path / "serve.log").read_text()[-3000:])
    assert code == 0
