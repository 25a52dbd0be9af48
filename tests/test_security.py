"""Security of the backend: auth, secrets, body size, where media comes from, checkpoint loading."""

from __future__ import annotations

import ast
import base64
import dataclasses
import hmac
import inspect
import logging
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import vrshq.backend.http.auth as auth_module
import vrshq.backend.labelstudio.task_video as task_video_module
from vrshq.backend.http.app import create_app
from vrshq.backend.config import BackendConfig
from tests.backend_fixtures import TEXT_XML, make_backend, next_task_id, text_task

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "ls-api-key-7f3a9c1e"
AUTH_PASS = "basic-pass-5d2b8e4f"
SETUP_TOKEN = "setup-token-9e1c7a3b"
LS_URL = "http://ls.test:8080"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


# --- basic auth in constant time -------------------------------------------------------------

def test_authorized_compares_user_and_password_with_compare_digest():
    tree = ast.parse(inspect.getsource(auth_module.authorized))
    compared = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "hmac.compare_digest":
            compared.append(ast.unparse(node))
    assert any("basic_auth_user" in c for c in compared), compared
    assert any("basic_auth_pass" in c for c in compared), compared
    # No plain == on the secrets anywhere in the function.
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            assert "basic_auth" not in ast.unparse(node), ast.unparse(node)


@pytest.fixture()
def auth_client(vrshq_backend):
    config = dataclasses.replace(vrshq_backend.config, basic_auth_user="ls", basic_auth_pass=AUTH_PASS)
    return create_app(config=config, backend=vrshq_backend).test_client()


@pytest.mark.parametrize(("user", "password", "status"), [
    ("ls", AUTH_PASS, 200),
    ("nope", AUTH_PASS, 401),  # wrong user, right password
    ("ls", "nope", 401),  # right user, wrong password
    ("nope", "nope", 401),
    ("", "", 401),
    ("ls", AUTH_PASS + "x", 401),
    ("ls", AUTH_PASS[:-1], 401),
    ("lsx", AUTH_PASS, 401),
])
def test_both_user_and_password_are_compared_every_time(auth_client, monkeypatch, user, password, status):
    calls = []
    compare = hmac.compare_digest

    def counting(a, b):
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(auth_module.hmac, "compare_digest", counting)
    r = auth_client.get("/versions", headers=basic(user, password))
    monkeypatch.undo()
    assert r.status_code == status
    # Both compared, whichever is wrong: no early exit that tells which one failed.
    assert len(calls) == 2
    if status == 401:
        assert r.is_json and r.json["status"] == 401 and AUTH_PASS not in r.get_data(as_text=True)
        assert r.headers["WWW-Authenticate"].startswith("Basic")


def test_malformed_authorization_headers_are_401_json(auth_client):
    for header in ("Basic", "Basic !!!", "Bearer " + AUTH_PASS, "Basic " + base64.b64encode(b"\xff\xfe").decode(),
                   "Basic " + base64.b64encode(b"no-colon").decode(), "basic"):
        r = auth_client.post("/predict", json={}, headers={"Authorization": header})
        assert r.status_code == 401 and r.is_json, header
    assert auth_client.get("/health").status_code == 200  # open for Label Studio's health check


# --- secrets are never logged or answered ----------------------------------------------------

def no_waits(monkeypatch) -> None:
    """No sleeping between the retries of Label Studio writes (ours and the SDK's)."""
    import label_studio_sdk.core.http_client as sdk_http

    from vrshq.backend.labelstudio import writer as lsclient

    for module in (lsclient, sdk_http):
        monkeypatch.setattr(module, "time", SimpleNamespace(sleep=lambda s: None))


def test_secrets_are_not_in_the_config_repr():
    c = BackendConfig(api_key=API_KEY, basic_auth_user="ls", basic_auth_pass=AUTH_PASS,
                      label_studio_url=LS_URL)
    assert API_KEY not in repr(c) and AUTH_PASS not in repr(c) and API_KEY not in str(c)
    env = BackendConfig.from_env({"LABEL_STUDIO_API_KEY": API_KEY, "BASIC_AUTH_USER": "u",
                                  "BASIC_AUTH_PASS": AUTH_PASS})
    assert API_KEY not in repr(env) and AUTH_PASS not in repr(env)


def test_the_api_key_passwords_and_tokens_are_never_logged_or_answered(
        tiny_models, media_root, tmp_path, caplog, monkeypatch):
    no_waits(monkeypatch)
    caplog.set_level(logging.DEBUG)
    backend = make_backend(tiny_models, media_root, tmp_path, api_key=API_KEY,
                           label_studio_url="http://127.0.0.1:9",  # nothing listens: writes fail
                           basic_auth_user="ls", basic_auth_pass=AUTH_PASS, sync_frame_budget=5)
    secrets = (API_KEY, AUTH_PASS, SETUP_TOKEN)
    bodies = []
    try:
        client = create_app(backend=backend).test_client()
        auth = basic("ls", AUTH_PASS)
        wrong = basic("ls", AUTH_PASS + "!")
        bodies.append(client.post("/setup", headers=wrong, json={}))
        bodies.append(client.post("/setup", headers=auth, json={
            "project": "3", "schema": TEXT_XML, "hostname": "http://127.0.0.1:9",
            "access_token": SETUP_TOKEN}))
        bodies.append(client.post("/setup", headers=auth, json={
            "project": "4", "schema": "<View>", "access_token": SETUP_TOKEN}))
        tid = next_task_id()
        # Longer than the frame budget: a job that predicts, then fails to write back.
        r = client.post("/predict", headers=auth, json={"tasks": [text_task(tid)], "project": "3",
                                                        "label_config": TEXT_XML})
        bodies.append(r)
        assert r.status_code == 200 and r.json["jobs"], r.json
        job_id = r.json["jobs"][0]["id"]
        backend.jobs.wait(job_id, timeout=120)  # raises TimeoutError past it
        bodies.append(client.get(f"/jobs/{job_id}", headers=auth))
        job = bodies[-1].json
        assert job["error"], job  # the write-back to the closed port failed, and said why
        # Media through Label Studio (download refused: nothing listens) and from elsewhere.
        for url in ("/data/upload/3/a.mp4", "http://127.0.0.1:9/data/upload/3/a.mp4",
                    "http://evil.example/a.mp4"):
            task = {"id": next_task_id(), "data": {"video": url, "fps": 10, "prompt": "a"}}
            bodies.append(client.post("/predict", headers=auth, json={
                "tasks": [task], "project": "3", "label_config": TEXT_XML}))
            assert bodies[-1].status_code == 422, bodies[-1].json
        bodies.append(client.post("/webhook", headers=auth, json={
            "action": "ANNOTATION_CREATED", "project": {"id": 3}, "task": tid,
            "annotation": {"id": 1, "result": "x"}}))
        bodies.append(client.get("/metrics", headers=auth))
        bodies.append(client.get("/health"))
    finally:
        backend.close()
    assert caplog.records  # the flow did log (a check that can see a leak)
    logged = "\n".join(f"{rec.getMessage()} {rec.exc_text or ''} {rec.args!r}" for rec in caplog.records)
    for secret in secrets:
        assert secret not in logged, secret
        for r in bodies:
            assert secret not in r.get_data(as_text=True), (secret, r.get_data(as_text=True)[:300])
    assert SETUP_TOKEN not in repr(backend.projects.get(3))


# --- request body size --------------------------------------------------------------------------

def test_a_body_over_the_size_limit_is_a_413_json_naming_the_limit(vrshq_backend):
    app = create_app(backend=vrshq_backend)
    app.config["MAX_CONTENT_LENGTH"] = 1000
    client = app.test_client()
    for route in ("/predict", "/webhook", "/setup"):
        r = client.post(route, data=b'{"x": "' + b"a" * 2000 + b'"}', content_type="application/json")
        assert r.status_code == 413 and r.is_json, route
        assert r.json["status"] == 413 and "1000 bytes" in r.json["error"], r.json
    small = client.post("/setup", data=b'{"project": "9"}', content_type="application/json")
    assert small.status_code == 200


def test_the_default_size_limit_is_set():
    app = create_app(backend=SimpleNamespace(config=BackendConfig(), refresh_model=lambda: None))
    limit = app.config["MAX_CONTENT_LENGTH"]
    assert limit is not None and 2**20 <= limit <= 2**30


# --- media only from Label Studio or the allowed local roots ---------------------------------

@pytest.fixture()
def ls_backend(tiny_models, media_root, tmp_path, monkeypatch):
    """A backend with a Label Studio URL and an API key; any network use fails the test."""
    connects = []

    def no_network(*args, **kwargs):
        connects.append(args)
        raise ConnectionRefusedError(f"no network in this test: {args}")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    backend = make_backend(tiny_models, media_root, tmp_path, api_key=API_KEY, label_studio_url=LS_URL)
    backend.connects = connects
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def escape_link(media_root, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside_sec") / "x.mp4"
    outside.write_bytes((media_root / "clips" / "a.mp4").read_bytes())
    (media_root / "sec").mkdir(exist_ok=True)
    link = media_root / "sec" / "link.mp4"
    if not link.is_symlink():
        link.symlink_to(outside)
    return "sec/link.mp4"


@pytest.mark.parametrize("url", [
    "http://evil.example/x.mp4",
    "HTTPS://EVIL.EXAMPLE/x.mp4",
    "http://ls.test:8081/data/upload/1/x.mp4",  # the LS host, another port
    "https://ls.test:8080/data/upload/1/x.mp4",  # another scheme
    "http://ls.test.evil.example:8080/data/upload/1/x.mp4",
    "http://ls.test:8080@evil.example/data/upload/1/x.mp4",  # userinfo that looks like the LS host
    "http://evil.example\\@ls.test:8080/data/upload/1/x.mp4",  # urlsplit and requests disagree
    "http://evil.example/data/local-files/?d=clips/a.mp4",
    "//evil.example/x.mp4",
    "file:///etc/passwd",
    "file://evil.example/share/x.mp4",
    "/data/local-files/?d=../../etc/passwd",
    "/data/local-files/?d=/etc/passwd",
    "/etc/passwd",
    "gopher://evil.example/x",
    "LINK",  # a symlink in the media root that points outside it
])
def test_media_comes_only_from_label_studio_or_the_roots(ls_backend, escape_link, url, monkeypatch):
    if url == "LINK":
        url = f"/data/local-files/?d={escape_link}"
    client = create_app(backend=ls_backend).test_client()
    task = {"id": next_task_id(), "data": {"video": url, "fps": 10, "prompt": "a"}}
    # Refused up front: no connection (ls_backend), no waiting or retrying, no video opened.
    here = threading.get_ident()
    sleeps, opened = [], []
    real_sleep = time.sleep
    monkeypatch.setattr(time, "sleep", lambda s: (sleeps.append(s) if threading.get_ident() == here
                                                  else None, real_sleep(s))[1])

    def open_video(*args, **kwargs):
        opened.append(args)
        raise AssertionError(f"the video was opened: {args}")

    monkeypatch.setattr(task_video_module, "open_video", open_video)
    r = client.post("/predict", json={"tasks": [task], "project": "1", "label_config": TEXT_XML})
    assert r.status_code == 422 and r.is_json, (r.status_code, r.get_data(as_text=True)[:300])
    assert url in r.json["error"] and API_KEY not in r.json["error"]
    assert ls_backend.connects == []
    assert sleeps == [] and opened == []


def test_a_file_in_the_roots_is_read_without_the_network(ls_backend, monkeypatch):
    no_waits(monkeypatch)
    client = create_app(backend=ls_backend).test_client()
    r = client.post("/predict", json={"tasks": [text_task(next_task_id())], "project": "1",
                                      "label_config": TEXT_XML})
    assert r.status_code == 200, r.json
    # Only Label Studio is contacted (to put the keyframe images into the task), never for the video.
    assert ls_backend.connects and all("ls.test" in repr(c) for c in ls_backend.connects)


# --- checkpoints: weights_only=True only -------------------------------------------------------

def _python_files() -> list[Path]:
    files = []
    for package in ("vrshq", "backend", "plugins"):
        files += sorted((ROOT / package).rglob("*.py"))
    assert len(files) > 20
    return files


def test_every_torch_load_passes_weights_only_true():
    found = []
    for path in _python_files():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        aliases = {"torch.load"}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "torch":
                aliases |= {a.asname or a.name for a in node.names if a.name == "load"}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or ast.unparse(node.func) not in aliases:
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            found.append(where)
            kw = {k.arg: k.value for k in node.keywords}
            assert None not in kw, f"{where}: torch.load(**kwargs) hides weights_only"
            value = kw.get("weights_only")
            assert isinstance(value, ast.Constant) and value.value is True, \
                f"{where}: torch.load without weights_only=True"
    assert found, "no torch.load call found: the scan is broken"


def test_no_pickle_loads_in_the_package():
    for path in _python_files():
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = ast.unparse(node.func)
                assert name not in ("pickle.load", "pickle.loads", "torch.jit.load", "dill.load"), \
                    f"{path.relative_to(ROOT)}:{node.lineno}: {name}"
