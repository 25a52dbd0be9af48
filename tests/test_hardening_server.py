"""Issue 15, section 1 ("The server"), in process: each defect the hostile probe found, reproduced.

The served half (slow clients, /health under load, a Content-Length refused before its body)
is in test_hardening_serve.py. Every test here failed on the code before the fix.
"""

from __future__ import annotations

import copy
import dataclasses
import http.server
import io
import json
import logging
import os
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import vrshq.backend.http.app as app_module
import vrshq.backend.labelstudio.predictions as predictions_module
from vrshq.backend.http.app import create_app
from vrshq.backend.labelstudio.labelconfig import parse_label_config
from tests.backend_fixtures import SPEC, TEXT_XML, next_task_id, text_task
from vrshq.masks import encode_brush

INFO = parse_label_config(TEXT_XML)


def predict(client, tasks, **extra):
    return client.post("/predict", json={"tasks": tasks, "project": "1", "label_config": TEXT_XML, **extra})


def predicted(client, tid):
    r = predict(client, [text_task(tid)])
    assert r.status_code == 200, r.json
    return r.json["results"][0]


def webhook(client, tid, result, action="ANNOTATION_UPDATED", annotation_id=1):
    return client.post("/webhook", json={
        "action": action, "project": {"id": 1, "label_config": TEXT_XML},
        "task": {"id": tid, "data": text_task(tid)["data"]},
        "annotation": {"id": annotation_id, "task": tid, "completed_by": 9, "result": result,
                       "was_cancelled": False, "updated_at": "2026-11-25T10:00:00.000000+00:00"}})


def with_mask(result, region, mask):
    out = copy.deepcopy(result)
    for r in out:
        if r["type"] == "brushlabels" and r["id"] == region + "-mask":
            r["value"]["rle"] = encode_brush(mask)
    return out


def square(y0, x0, size=30):
    m = np.zeros((SPEC.height, SPEC.width), bool)
    m[y0:y0 + size, x0:x0 + size] = True
    return m


@pytest.fixture()
def no_model(vrshq_backend, monkeypatch):
    """Fails the test if the model runs or a video is opened; the calls it saw."""
    calls = []

    def refuse(what):
        def call(*args, **kwargs):
            calls.append(what)
            raise AssertionError(f"{what} ran before the request was refused")
        return call

    monkeypatch.setattr(vrshq_backend.plugin, "predict", refuse("plugin.predict"))
    monkeypatch.setattr(vrshq_backend, "open_video", refuse("open_video"))
    return calls


# --- 2. /health and /metrics never wait for the model (the served half: test_hardening_serve) --

def test_health_and_metrics_do_not_take_the_model_lock(vrshq_backend, monkeypatch):
    app = create_app(backend=vrshq_backend)
    monkeypatch.setattr(vrshq_backend.serving, "checked_at", 0.0)  # a model-version check is due
    answers = {}

    def ask():
        c = app.test_client()
        answers["/health"] = c.get("/health").status_code
        answers["/metrics"] = c.get("/metrics").status_code

    with vrshq_backend.model_lock:  # every model slot busy
        t = threading.Thread(target=ask)
        t.start()
        t.join(timeout=30)
        assert answers == {"/health": 200, "/metrics": 200}


# --- 3. a long prompt is bounded (characters and tokens) before any model work ---------------

@pytest.mark.parametrize(("prompt", "words"), [
    ("x" * 1_000_000, "VRSHQ_MAX_TASK_PROMPT_CHARS"),  # the 1 MB prompt that was a 500
    ("x" * 1001, "VRSHQ_MAX_PROMPT_CHARS"),
    ("x " * 300, "VRSHQ_MAX_PROMPT_TOKENS"),  # 600 characters, 300 tokens
    ("\n".join("y" * 199 for _ in range(20)), "VRSHQ_MAX_TASK_PROMPT_TOKENS"),  # 20 x 200 tokens
])
def test_a_long_prompt_is_a_400_before_the_model_runs(client, no_model, prompt, words):
    r = predict(client, [text_task(next_task_id(), prompt=prompt)])
    assert r.status_code == 400, (r.status_code, r.get_data(as_text=True)[:300])
    assert words in r.json["error"] and len(r.get_data()) < 2000
    assert no_model == []


def test_a_long_typed_prompt_is_a_400_before_the_model_runs(client, no_model):
    typed = {"from_name": "prompt", "to_name": "video", "type": "textarea",
             "value": {"text": ["z" * 5000]}}
    r = predict(client, [text_task(next_task_id())], params={"context": {"result": [typed]}})
    assert r.status_code == 400 and "VRSHQ_MAX_PROMPT_CHARS" in r.json["error"], r.json
    assert no_model == []


def test_an_accepted_prompt_is_tokenised_once_in_time_linear_in_its_length(vrshq_backend, monkeypatch):
    from vrshq.backend.tasks.inputs import check_prompt_tokens

    tokenizer = vrshq_backend.plugin.model.tokenizer
    seen = []
    encode = tokenizer.encode

    def counting(text, *args, **kwargs):
        seen.append(len(text))
        return encode(text, *args, **kwargs)

    monkeypatch.setattr(tokenizer, "encode", counting)
    config = vrshq_backend.config
    work = []
    for n in (20, 40, 80):
        seen.clear()
        check_prompt_tokens(vrshq_backend.plugin, ["ab " * n], config, "task 1")
        assert len(seen) == 1  # one tokenizer pass per prompt, never one per character or token
        work.append(seen[0])
    # The work is the prompt's characters: doubling the prompt doubles it, nothing quadratic.
    assert work == [59, 119, 239]  # "ab ab ... ab": 3n - 1 characters, each seen once
    # Over the bound in characters, no tokenizer runs at all (a 1 MB prompt costs a len()).
    seen.clear()
    from vrshq.backend.tasks.inputs import RequestError, check_prompt_chars

    with pytest.raises(RequestError):
        check_prompt_chars(["x" * 1_000_000], config, "task 1")
    assert seen == []


# --- 4. a /setup that re-points a project to another host does not take the token along -----

class _Recorder(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        self.server.seen.append(self.headers.get("Authorization"))
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture()
def two_hosts():
    servers = []
    for _ in range(2):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
        server.seen = []
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield servers
    for server in servers:
        server.shutdown()
        server.server_close()


def _fetch_upload(client, project):
    task = {"id": next_task_id(), "data": {"video": f"/data/upload/{project}/a.mp4", "fps": 10,
                                           "prompt": "a"}}
    r = client.post("/predict", json={"tasks": [task], "project": project, "label_config": TEXT_XML})
    assert r.status_code == 422, r.json  # both hosts answer 404


def test_setup_to_another_host_without_a_token_drops_the_token(client, two_hosts, caplog):
    caplog.set_level(logging.DEBUG)
    a, b = two_hosts
    url_a, url_b = (f"http://127.0.0.1:{s.server_address[1]}" for s in (a, b))
    token = "setup-token-41d7c"
    project = str(900 + next_task_id())
    assert client.post("/setup", json={"project": project, "schema": TEXT_XML, "hostname": url_a,
                                       "access_token": token}).status_code == 200
    _fetch_upload(client, project)
    assert a.seen == [f"Token {token}"]  # the token goes to the host it came with
    # Re-pointed to host B without a token: B never sees A's token.
    assert client.post("/setup", json={"project": project, "hostname": url_b}).status_code == 200
    _fetch_upload(client, project)
    assert b.seen == [None], b.seen
    assert len(a.seen) == 1
    # The same host again without a token keeps the token (Label Studio's periodic /setup).
    other = str(950 + next_task_id())
    client.post("/setup", json={"project": other, "hostname": url_a, "access_token": token})
    client.post("/setup", json={"project": other, "hostname": url_a + "/"})
    _fetch_upload(client, other)
    assert a.seen[-1] == f"Token {token}"
    # Hostnames are logged without credentials.
    client.post("/setup", json={"project": other, "hostname": "http://user:pw-93ab@127.0.0.1:9/",
                                "access_token": "t2"})
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "pw-93ab" not in logged and token not in logged and "127.0.0.1:9" in logged


# --- 5. bodies and task counts bounded per route, refused early, answers capped -------------

class _Unreadable(io.BytesIO):
    def read(self, *args):
        raise AssertionError("the body was read")

    readinto = readline = read


@pytest.mark.parametrize(("route", "size", "limit"), [
    ("/predict", 16 * 2**20 + 1, "16 MiB"),
    ("/webhook", 32 * 2**20 + 1, "32 MiB"),
    ("/setup", 2**20 + 1, "1 MiB"),
    ("/jobs/x/cancel", 64 * 2**10 + 1, "65536 bytes"),
])
def test_each_route_refuses_a_body_over_its_limit_before_reading_it(client, route, size, limit):
    r = client.post(route, input_stream=_Unreadable(), content_type="application/json",
                    environ_overrides={"CONTENT_LENGTH": str(size)})
    assert r.status_code == 413 and limit in r.json["error"], (r.status_code, r.get_data()[:300])


def test_a_body_of_many_empty_tasks_is_refused_before_it_is_parsed(client, monkeypatch):
    parsed = []
    loads = json.loads

    def spy(raw, *args, **kwargs):
        if len(raw) > 100_000:  # the request body (not the test client reading the answer)
            parsed.append(len(raw))
        return loads(raw, *args, **kwargs)

    monkeypatch.setattr(app_module.json, "loads", spy)
    body = b'{"tasks": [' + b",".join([b"{}"] * 300_000) + b"]}"  # 900 KB, 300000 objects
    r = client.post("/predict", data=body, content_type="application/json")
    assert r.status_code == 413 and "VRSHQ_MAX_JSON_CONTAINERS" in r.json["error"], r.get_data()[:300]
    assert parsed == [] and len(r.get_data()) < 1000


def test_tasks_per_request_are_bounded(client, no_model):
    r = predict(client, [{}] * 1001)
    assert r.status_code == 400 and "VRSHQ_MAX_TASKS" in r.json["error"] and len(r.get_data()) < 1000


def test_an_error_answer_is_capped(client):
    long_url = "/data/local-files/?d=" + "u" * 20_000
    tasks = [{"id": next_task_id(), "data": {"video": long_url, "fps": 10, "prompt": "a"}}
             for _ in range(200)]
    r = predict(client, tasks)
    assert r.status_code in (400, 422) and len(r.get_data()) < 2000, len(r.get_data())


# --- 6. brush RLE sizes are checked against the task's video before decoding ------------------

def _huge_brush(rid, width=16000, height=16000):
    rle = encode_brush(square(0, 0))
    rle[:4] = list((width * height * 4).to_bytes(4, "big"))  # declares width x height RGBA values
    return {"id": rid, "from_name": "mask", "to_name": "keyframes", "type": "brushlabels",
            "original_width": width, "original_height": height, "item_index": 0,
            "value": {"format": "rle", "rle": rle, "brushlabels": ["Car"]}}


@pytest.fixture()
def no_decode(monkeypatch):
    """Fails a decode of an RLE bigger than the task's video (others decode as before)."""
    decoded = []
    decode = predictions_module.decode_brush

    def spy(rle, height, width):
        if height * width > SPEC.height * SPEC.width:
            decoded.append((height, width))
            raise AssertionError("an oversized RLE was decoded")
        return decode(rle, height, width)

    monkeypatch.setattr(predictions_module, "decode_brush", spy)
    return decoded


def test_a_webhook_brush_of_another_size_is_a_400_before_decoding(client, vrshq_backend, no_decode):
    tid = next_task_id()
    pred = predicted(client, tid)
    result = [r for r in pred["result"] if r["type"] != "brushlabels"] + [_huge_brush(f"vrshq-{tid}-1-mask")]
    before = vrshq_backend.corrections.count()
    r = webhook(client, tid, result)
    assert r.status_code == 400 and "16000x16000" in r.json["error"], r.json
    assert f"{SPEC.width}x{SPEC.height}" in r.json["error"]
    assert no_decode == [] and vrshq_backend.corrections.count() == before


def test_an_interactive_brush_of_another_size_is_a_400_before_decoding(client, no_decode):
    tid = next_task_id()
    predicted(client, tid)
    no_decode.clear()
    r = predict(client, [text_task(tid)], params={"context": {"result": [_huge_brush(f"vrshq-{tid}-1-mask")]}})
    assert r.status_code == 400 and "16000x16000" in r.json["error"], r.json
    assert no_decode == []


# --- 7. a video's declared size is checked before a frame is decoded --------------------------

def test_a_video_over_the_pixel_limit_is_refused_before_decoding(client, vrshq_backend, monkeypatch):
    import vrshq.video.reader as reader_module

    opened = []

    class NoDecode:
        def __init__(self, *args, **kwargs):
            opened.append(args)
            raise AssertionError("the video was decoded")

    monkeypatch.setattr(reader_module, "DecordVideoReader", NoDecode)
    # The stream declares 160x120 = 19200 pixels; the limit is 100x100.
    monkeypatch.setattr(vrshq_backend, "config", dataclasses.replace(vrshq_backend.config, max_pixels=10_000))
    r = predict(client, [text_task(next_task_id())])
    assert r.status_code == 422 and "VRSHQ_MAX_PIXELS" in r.json["error"], r.json
    assert "160x120" in r.json["error"] and opened == []


def _mjpeg_declaring(path: Path, width: int, height: int) -> None:
    """A 2-frame MJPEG AVI of a few KB whose JPEG frames and headers declare width x height
    (the probe's 4.5 MB 12000x12000 file, without encoding 144 million pixels here)."""
    import struct

    import av

    small = path.with_suffix(".small.avi")
    with av.open(str(small), "w") as out:
        stream = out.add_stream("mjpeg", rate=2)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuvj420p"
        for _ in range(2):
            frame = av.VideoFrame.from_ndarray(np.zeros((120, 160, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    data = bytearray(small.read_bytes())
    at = data.find(b"\xff\xc0")
    while at >= 0:  # each JPEG's SOF0: height, width
        data[at + 5:at + 9] = struct.pack(">HH", height, width)
        at = data.find(b"\xff\xc0", at + 2)
    strf = data.find(b"strf")  # BITMAPINFOHEADER: width, height
    data[strf + 12:strf + 20] = struct.pack("<ii", width, height)
    avih = data.find(b"avih")  # main header: dwWidth, dwHeight
    data[avih + 40:avih + 48] = struct.pack("<II", width, height)
    path.write_bytes(bytes(data))


def test_a_12000x12000_mjpeg_is_refused_before_decoding(client, media_root, monkeypatch):
    import vrshq.video.reader as reader_module
    from vrshq.video.container import declared_size

    name = f"big{next_task_id()}.avi"
    _mjpeg_declaring(media_root / "clips" / name, 12000, 12000)
    assert declared_size(str(media_root / "clips" / name)) == (12000, 12000)
    opened = []

    class NoDecode:
        def __init__(self, *args, **kwargs):
            opened.append(args)
            raise AssertionError("the video was decoded")

    monkeypatch.setattr(reader_module, "DecordVideoReader", NoDecode)
    r = predict(client, [text_task(next_task_id(), video=f"clips/{name}")])
    assert r.status_code == 422 and "12000x12000" in r.json["error"], r.json
    assert "VRSHQ_MAX_PIXELS" in r.json["error"] and opened == []


# --- 8. the interactive object limit is checked before the model runs -------------------------

def test_an_interactive_context_with_too_many_prompts_is_refused_before_the_model(client, no_model):
    tid = next_task_id()
    typed = {"from_name": "prompt", "to_name": "video", "type": "textarea",
             "value": {"text": [f"object {i}" for i in range(100)]}}
    r = predict(client, [text_task(tid)], params={"context": {"result": [typed]}})
    assert r.status_code == 400 and "VRSHQ_MAX_OBJECTS" in r.json["error"], r.json
    assert no_model == []


# --- 9. a re-delivered webhook queues no second job --------------------------------------------

def corrections_of(payload):
    """A re-propagation job's corrections, decoded from its JSON payload."""
    from vrshq.masks import decode_rle
    from vrshq.plugins.base import Correction

    return [Correction(int(c["obj_id"]), int(c["frame"]), decode_rle(c["mask"])) for c in payload["corrections"]]


class KeyedQueue:
    """A stand-in for the job queue's submit that keeps its promise: one active job per key.

    Its jobs never run (they stay queued), so what a delivery queues can be counted."""

    def __init__(self):
        self.lock = threading.Lock()
        self.jobs: dict[str, SimpleNamespace] = {}
        self.calls: list[tuple[str, str, dict]] = []

    def submit(self, kind, key, payload, **info):
        with self.lock:
            self.calls.append((kind, key, payload))
            if key in self.jobs:
                return self.jobs[key], False
            self.jobs[key] = SimpleNamespace(id=f"job-{len(self.jobs) + 1}", state="queued")
            return self.jobs[key], True


def test_redelivered_webhooks_queue_one_job(client, vrshq_backend, monkeypatch):
    tid = next_task_id()
    pred = predicted(client, tid)
    queue = KeyedQueue()
    writer = vrshq_backend.writer
    monkeypatch.setattr(vrshq_backend, "submit", queue.submit)
    monkeypatch.setattr(vrshq_backend, "writer", lambda project: SimpleNamespace(configured=True))
    result = with_mask(pred["result"], f"vrshq-{tid}-1", square(30, 30))
    app = create_app(backend=vrshq_backend)
    answers = []
    barrier = threading.Barrier(6)

    def deliver():
        c = app.test_client()
        barrier.wait(timeout=30)
        answers.append(webhook(c, tid, result, annotation_id=77))

    threads = [threading.Thread(target=deliver) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert [a.status_code for a in answers] == [201] * 6
    assert sorted(a.json["result"]["corrections"] for a in answers) == [0, 0, 0, 0, 0, 1]
    # One new correction, one job: the deliveries that came while it waits join it.
    assert len(queue.jobs) == 1 and {a.json["result"]["job"] for a in answers} == {"job-1"}
    # Sequential re-deliveries log nothing and join the same job while it has not run.
    for _ in range(3):
        again = webhook(client, tid, result, annotation_id=77)
        assert again.json["result"]["corrections"] == 0 and again.json["result"]["job"] == "job-1"
    assert len(queue.jobs) == 1
    # Once the job has run (the state carries the correction), a re-delivery queues nothing.
    kind, key, payload = queue.calls[0]
    monkeypatch.setattr(vrshq_backend, "writer", writer)  # the job's own (no Label Studio: no writes)
    vrshq_backend.correct_task("1", tid, corrections_of(payload), info=parse_label_config(TEXT_XML))
    calls = len(queue.calls)
    done = webhook(client, tid, result, annotation_id=77)
    assert done.json["result"] == {"corrections": 0, "job": None, "objects": []}, done.json
    assert len(queue.calls) == calls


def test_a_correction_logged_before_a_crash_is_queued_by_the_redelivery(client, vrshq_backend, monkeypatch):
    """The gap between the log's commit and the queueing: a backend killed there has logged the
    correction but queued nothing; Label Studio's re-delivery must queue it (not read it as a
    repeat and drop it, which left the task without the correction for good)."""
    tid = next_task_id()
    pred = predicted(client, tid)
    monkeypatch.setattr(vrshq_backend, "writer", lambda project: SimpleNamespace(configured=True))

    def crash(kind, key, payload, **info):
        raise SystemExit("killed between the log's commit and the queueing")

    monkeypatch.setattr(vrshq_backend, "submit", crash)
    result = with_mask(pred["result"], f"vrshq-{tid}-1", square(20, 40))
    with pytest.raises(SystemExit):
        webhook(client, tid, result, annotation_id=78)
    rows = [c for c in vrshq_backend.corrections.list(task=tid)]
    assert len(rows) == 1  # committed before the crash
    queue = KeyedQueue()
    monkeypatch.setattr(vrshq_backend, "submit", queue.submit)
    again = webhook(client, tid, result, annotation_id=78)
    assert again.status_code == 201, again.json
    assert again.json["result"]["corrections"] == 0  # nothing new to log
    assert again.json["result"]["job"] == "job-1" and again.json["result"]["objects"] == [1]
    (kind, key, payload), = queue.calls
    c, = corrections_of(payload)
    assert (kind, c.obj_id) == ("correct", 1) and np.array_equal(c.mask, square(20, 40))
    assert len(vrshq_backend.corrections.list(task=tid)) == 1


# --- 10. huge integers in numeric inputs are 4xx ----------------------------------------------

HUGE = "1" + "0" * 400


@pytest.mark.parametrize("where", ["fps", "project", "task id"])
def test_a_huge_integer_in_a_predict_is_a_4xx(client, where):
    task = {"id": next_task_id(), "data": {"video": "/data/local-files/?d=clips/a.mp4", "fps": 10, "prompt": "a"}}
    body = json.dumps({"tasks": [task], "project": "1", "label_config": TEXT_XML})
    old = {"fps": '"fps": 10', "project": '"project": "1"', "task id": f'"id": {task["id"]}'}[where]
    new = old.split(":")[0] + ": " + HUGE
    r = client.post("/predict", data=body.replace(old, new), content_type="application/json")
    assert 400 <= r.status_code < 500, (r.status_code, r.get_data()[:300])
    assert len(r.get_data()) < 1000


@pytest.mark.parametrize(("field", "refused"), [
    ("x", True), ("width", True), ("frame", True), ("original_width", True),
    ("item_index", False), ("rotation", False),  # not compared: the annotation changed nothing
])
def test_a_huge_integer_in_a_webhook_is_a_4xx(client, vrshq_backend, field, refused):
    tid = next_task_id()
    pred = predicted(client, tid)
    result = copy.deepcopy(pred["result"])
    track = next(r for r in result if r["type"] == "videorectangle")
    brush = next(r for r in result if r["type"] == "brushlabels")
    marker = 123456789.5
    if field in ("item_index", "original_width"):
        brush[field] = marker
    else:
        track["value"]["sequence"][0][field] = marker
    body = json.dumps({"action": "ANNOTATION_UPDATED", "project": {"id": 1, "label_config": TEXT_XML},
                       "task": {"id": tid}, "annotation": {"id": 1, "result": result}})
    before = vrshq_backend.corrections.count()
    r = client.post("/webhook", data=body.replace(str(marker), HUGE), content_type="application/json")
    assert (400 <= r.status_code < 500) if refused else r.status_code == 201, (r.status_code, r.get_data()[:300])
    assert vrshq_backend.corrections.count() == before


# --- 11. keyframe images are not written through a symlink out of the media root ---------------

def test_keyframes_are_not_written_through_a_symlink_out_of_the_root(client, vrshq_backend, media_root,
                                                                      tmp_path):
    folder = media_root / f"kf{next_task_id()}"
    folder.mkdir()
    (folder / "a.mp4").write_bytes((media_root / "clips" / "a.mp4").read_bytes())
    outside = tmp_path / "outside"
    outside.mkdir()
    (folder / "vrshq-keyframes").symlink_to(outside)  # planted in the root, points out of it
    tid = next_task_id()
    r = predict(client, [text_task(tid, video=f"{folder.name}/a.mp4")])
    assert r.status_code == 200, r.json
    assert list(outside.rglob("*")) == []  # nothing written outside the root
    urls = vrshq_backend.states.load(1, tid).keyframe_urls
    assert urls and all(u.startswith("data:image/jpeg;base64,") for u in urls)


def test_keyframes_are_still_written_beside_a_video_in_the_root(client, vrshq_backend, media_root):
    tid = next_task_id()
    r = predict(client, [text_task(tid)])
    assert r.status_code == 200
    urls = vrshq_backend.states.load(1, tid).keyframe_urls
    assert urls and all(u.startswith("/data/local-files/?d=clips/vrshq-keyframes/") for u in urls)
    rel = urls[0].split("?d=", 1)[1]
    assert (media_root / rel).is_file() and not (media_root / rel).is_symlink()


# --- 12. box geometry is checked against the video before it is logged; rows are bounded ------

def _track_result(client, tid):
    pred = predicted(client, tid)
    result = copy.deepcopy(pred["result"])
    return result, next(r for r in result if r["type"] == "videorectangle")


@pytest.mark.parametrize(("change", "words"), [
    ({"height": 1e308}, "height"),
    ({"x": -500.0}, "x is -500"),
    ({"width": 5000.0}, "width is 5000"),
    ({"x": 150.0, "width": 10.0}, "outside the frame"),
    ({"frame": SPEC.num_frames + 1}, "frame must be a frame of the video"),
])
def test_absurd_geometry_is_refused_before_it_is_logged(client, vrshq_backend, change, words):
    tid = next_task_id()
    result, track = _track_result(client, tid)
    track["value"]["sequence"][0].update(change)
    before = vrshq_backend.corrections.count()
    r = webhook(client, tid, result)
    assert r.status_code == 400 and words in r.json["error"], r.json
    assert vrshq_backend.corrections.count() == before


def test_a_box_overlapping_the_frame_edge_is_clipped_to_it(client, vrshq_backend):
    tid = next_task_id()
    result, track = _track_result(client, tid)
    track["value"]["sequence"][0].update(x=-5.0, width=20.0)
    r = webhook(client, tid, result)
    assert r.status_code == 201 and r.json["result"]["corrections"] == 1, r.json
    (logged,) = vrshq_backend.corrections.list(project=1, task=tid)
    first = logged.corrected_boxes[0]
    assert (first["x"], first["width"]) == (0.0, 15.0)


def test_a_sequence_longer_than_the_video_is_refused_before_it_is_logged(client, vrshq_backend):
    tid = next_task_id()
    result, track = _track_result(client, tid)
    key = dict(track["value"]["sequence"][0], x=track["value"]["sequence"][0]["x"] + 1.0)
    track["value"]["sequence"] = [dict(key, frame=1 + i % SPEC.num_frames) for i in range(50_000)]
    before = vrshq_backend.corrections.count()
    r = webhook(client, tid, result)
    assert r.status_code == 400 and "50000 keyframes" in r.json["error"], r.json
    assert vrshq_backend.corrections.count() == before


def test_a_log_row_is_bounded(client, vrshq_backend, monkeypatch):
    tid = next_task_id()
    result, track = _track_result(client, tid)
    track["value"]["sequence"][0]["x"] += 1.0
    monkeypatch.setattr(vrshq_backend, "config", dataclasses.replace(vrshq_backend.config, max_row_bytes=300))
    before = vrshq_backend.corrections.count()
    r = webhook(client, tid, result)
    assert r.status_code == 400 and "VRSHQ_MAX_ROW_BYTES" in r.json["error"], r.json
    assert vrshq_backend.corrections.count() == before


# --- 13. errors per position, no unbounded echo, no absolute server paths ----------------------

def test_errors_are_reported_per_position(client):
    good = next_task_id()
    no_video = {"data": {"fps": 10, "prompt": "a"}}
    r = predict(client, [text_task(good), no_video, dict(no_video, data={"fps": 10}),
                         {"id": 5, "data": {}}, {"id": 5, "data": {"prompt": "b"}}])
    assert r.status_code == 200, r.json
    errors = r.json["errors"]
    assert [e["index"] for e in errors] == [1, 2, 3, 4]
    assert [e["task"] for e in errors] == [None, None, 5, 5]
    assert all(e["error"] for e in errors) and r.json["results"][1:] == [[], [], [], []]


def test_a_long_url_is_not_echoed_whole(client):
    url = "/data/local-files/?d=" + "v" * 1_000_000
    r = predict(client, [{"id": next_task_id(), "data": {"video": url, "fps": 10, "prompt": "a"}}])
    assert 400 <= r.status_code < 500 and len(r.get_data()) < 2000, len(r.get_data())
    assert "v" * 100 in r.json["error"]  # still says which URL


def test_answers_do_not_show_absolute_server_paths(client, media_root, vrshq_backend):
    name = f"broken{next_task_id()}.mp4"
    (media_root / "clips" / name).write_bytes(b"\x00" * 4096)
    r = predict(client, [text_task(next_task_id(), video=f"clips/{name}")])
    assert r.status_code == 422, r.json
    text = r.get_data(as_text=True)
    assert name in text
    for root in (str(media_root), os.path.realpath(media_root), str(Path(vrshq_backend.config.data_dir).resolve())):
        assert root not in text, text


# --- every bound: a typed config field with its variable, and a README row with its default ---

def test_every_bound_is_configured_from_its_variable_and_listed_in_the_readme():
    from vrshq.backend.config import BOUNDS, BackendConfig, ConfigError

    env = {var: str(7 + i) for i, var in enumerate(BOUNDS.values())}
    env["VRSHQ_REQUEST_TIMEOUT"] = "2.5"
    config = BackendConfig.from_env(env)
    assert [getattr(config, name) for name in BOUNDS] == [7 + i for i in range(len(BOUNDS))]
    assert config.request_timeout == 2.5
    for var in [*BOUNDS.values(), "VRSHQ_REQUEST_TIMEOUT"]:
        with pytest.raises(ConfigError):
            BackendConfig.from_env({var: "0"})
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| `")]
    defaults = BackendConfig()
    for name, var in [*BOUNDS.items(), ("request_timeout", "VRSHQ_REQUEST_TIMEOUT")]:
        row = next((r for r in rows if f"`{var}`" in r), None)
        assert row is not None, f"{var} has no row in the README's table"
        default = getattr(defaults, name)
        assert f"({default:g}" in row or f"({default}" in row or f", {default}" in row \
            or f"({int(default)}" in row, (var, default, row)
