"""The ML backend's HTTP protocol on the tiny VRS-HQ: shapes, prediction, errors, auth, state.

Label Studio itself is exercised in test_labelstudio_e2e.py; here the Flask app is driven the
way Label Studio drives it, with its JSON shapes.
"""

from __future__ import annotations

import base64
import re
from urllib.parse import unquote

import numpy as np
import pytest

import vrshq.backend.config as backend_config
from vrshq.backend.http.app import create_app
from vrshq.backend.config import BackendConfig, ConfigError
from vrshq.backend.labelstudio.labelconfig import parse_label_config
from vrshq.backend.labelstudio.predictions import parse_annotation
from tests.backend_fixtures import (
    SPEC,
    TEXT_XML,
    make_backend,
    next_task_id,
    text_task,
)


def predict(client, tasks, xml=TEXT_XML, project="1.1700000000", **extra):
    return client.post("/predict", json={"tasks": tasks, "project": project, "label_config": xml,
                                         **extra})


# --- health, setup, versions, metrics ---------------------------------------------------------

def test_health_reports_plugin_and_untrained_model_version(client):
    r = client.get("/health")
    assert r.status_code == 200
    body = r.json
    assert body["status"] == "UP" and body["model_class"] == "VrshqPlugin"
    assert body["plugin"]["name"] == "vrshq" and body["plugin"]["capabilities"] == ["text"]
    assert "untrained" in body["model_version"]
    assert client.get("/").json == body


def test_setup_checks_the_label_config_and_answers_the_model_version(client, vrshq_backend):
    r = client.post("/setup", json={"project": "42.1700000000", "schema": TEXT_XML,
                                    "hostname": "http://127.0.0.1:8080", "access_token": "secret-token"})
    assert r.status_code == 200
    assert r.json["model_version"] == vrshq_backend.model_version
    saved = vrshq_backend.projects.get(42)
    assert saved.label_config == TEXT_XML and saved.hostname == "http://127.0.0.1:8080"
    assert "secret-token" not in repr(saved)
    bad = client.post("/setup", json={"project": "43", "schema": "<View><Video name='v' value='$v'/></View>"})
    assert bad.status_code == 400
    assert "VideoRectangle" in bad.json["error"]


def test_versions_and_metrics(client):
    assert client.get("/versions").json["versions"] == [client.get("/health").json["model_version"]]
    client.get("/health")
    text = client.get("/metrics").data.decode()
    assert 'vrshq_requests_total{route="/health",status="200"}' in text
    assert "vrshq_jobs{state=\"running\"}" in text
    assert "vrshq_frames_per_second " in text and "vrshq_frames_total " in text


# --- prediction -------------------------------------------------------------------------------

def test_predict_returns_a_track_and_a_keyframe_mask_per_object(client, vrshq_backend, media_root):
    tid = next_task_id()
    r = predict(client, [text_task(tid, "the red disc\nthe car")])
    assert r.status_code == 200, r.json
    (pred,) = r.json["results"]
    assert pred["model_version"] == vrshq_backend.model_version
    assert 0.0 <= pred["score"] <= 1.0
    tracks = [x for x in pred["result"] if x["type"] == "videorectangle"]
    masks = [x for x in pred["result"] if x["type"] == "brushlabels" and x["id"].endswith("-mask")]
    assert [t["id"] for t in tracks] == [f"vrshq-{tid}-1", f"vrshq-{tid}-2"]
    assert [m["id"] for m in masks] == [t["id"] + "-mask" for t in tracks]  # paired region ids
    assert [m["item_index"] for m in masks] == [0, 1]
    # The extra mask pages (VRSHQ_MASK_PAGES, default 2 per object) come after the keyframe pages.
    pages = [x for x in pred["result"] if x["type"] == "brushlabels" and "-mask-f" in x["id"]]
    assert [p["item_index"] for p in pages] == [2, 3, 4, 5]
    # "the car" names the Car label; "the red disc" names none -> the config's fallback label
    # (Object; the first label, Person, before issue 13 §4 called that a bug).
    assert [t["value"]["labels"] for t in tracks] == [["Object"], ["Car"]]
    assert [m["value"]["brushlabels"] for m in masks] == [["Object"], ["Car"]]
    assert [t["meta"] for t in tracks] == [{"label_rule": "fallback"}, {"label_rule": "predicted_values"}]
    for t in tracks:
        assert t["value"]["framesCount"] == SPEC.num_frames
        frames = [k["frame"] for k in t["value"]["sequence"]]
        assert all(1 <= f <= SPEC.num_frames for f in frames)
        for k in t["value"]["sequence"]:
            assert k["time"] == pytest.approx(k["frame"] / SPEC.fps)
    for m in masks:
        assert (m["original_width"], m["original_height"]) == (SPEC.width, SPEC.height)

    state = vrshq_backend.states.load("1", tid)
    assert [o.obj_id for o in state.objects] == [1, 2]
    # The masks in the prediction are the state's keyframe masks.
    info = parse_label_config(TEXT_XML)
    parsed = parse_annotation(pred["result"], info)
    for obj in state.objects:
        assert np.array_equal(parsed[f"vrshq-{tid}-{obj.obj_id}"].mask, obj.keyframe_mask)
    # Keyframe images were written next to the video, under the local-files root.
    for obj, url in zip(state.objects, state.keyframe_urls):
        assert url.startswith("/data/local-files/?d=clips/vrshq-keyframes/")
        path = media_root / unquote(url.split("?d=", 1)[1])
        assert path.is_file() and path.name == f"obj{obj.obj_id}-f{obj.keyframe + 1}.jpg"


def test_each_prompt_gets_the_label_it_names_and_says_which_rule_chose_it(client, vrshq_backend):
    """Issue 13 §4 through /predict: the README's promise, with the rule in each region's meta."""
    tid = next_task_id()
    prompts = ["the dog", "a red sedan", "the man in red", "Object: the lamp", "the red disc"]
    r = predict(client, [text_task(tid, "\n".join(prompts))])
    assert r.status_code == 200, r.json
    (pred,) = r.json["results"]
    tracks = [x for x in pred["result"] if x["type"] == "videorectangle"]
    masks = [x for x in pred["result"] if x["type"] == "brushlabels" and x["id"].endswith("-mask")]
    assert [t["value"]["labels"][0] for t in tracks] == ["Animal", "Car", "Person", "Object", "Object"]
    assert [m["value"]["brushlabels"][0] for m in masks] == ["Animal", "Car", "Person", "Object", "Object"]
    rules = ["predicted_values", "predicted_values", "predicted_values", "explicit", "fallback"]
    assert [t["meta"] for t in tracks] == [m["meta"] for m in masks] == [{"label_rule": x} for x in rules]
    # The model read the prompt without its "Object:" label.
    state = vrshq_backend.states.load("1", tid)
    assert [o.details["prompt"] for o in state.objects] == [*prompts[:3], "the lamp", prompts[4]]
    assert [o.details["label_rule"] for o in state.objects] == rules
    # Asked again: the saved prediction, the same labels and meta.
    assert predict(client, [text_task(tid, "\n".join(prompts))]).json["results"][0] == pred


def test_predicting_twice_gives_the_same_prediction(client):
    tid = next_task_id()
    first = predict(client, [text_task(tid)]).json["results"][0]
    second = predict(client, [text_task(tid)]).json["results"][0]
    assert first == second


def test_a_batch_keeps_good_tasks_when_one_is_bad(client):
    good, bad = next_task_id(), next_task_id()
    r = predict(client, [text_task(good), {"id": bad, "data": {"fps": 10, "prompt": "x"}}])
    assert r.status_code == 200
    results = r.json["results"]
    assert len(results) == 2 and results[0]["result"] and results[1] == []
    assert [e["index"] for e in r.json["errors"]] == [1] and "video" in r.json["errors"][0]["error"]


def test_label_config_comes_from_setup_when_the_request_has_none(client):
    client.post("/setup", json={"project": "77.1", "schema": TEXT_XML})
    tid = next_task_id()
    r = client.post("/predict", json={"tasks": [text_task(tid)], "project": "77.1"})
    assert r.status_code == 200 and r.json["results"][0]["result"]


# --- refusals (the malformed requests and media of tests/test_bad_input.py aside) --------

def test_long_video_without_label_studio_access_is_refused_clearly(tiny_models, media_root, tmp_path):
    backend = make_backend(tiny_models, media_root, tmp_path, sync_frame_budget=5)
    try:
        r = predict(create_app(backend=backend).test_client(), [text_task(next_task_id())])
        assert r.status_code == 400
        assert "LABEL_STUDIO_URL" in r.json["error"] and "5-frame budget" in r.json["error"]
    finally:
        backend.close()


def test_unknown_routes_and_methods_are_json(client):
    assert client.get("/nope").status_code == 404 and client.get("/nope").json["status"] == 404
    r = client.get("/predict")
    assert r.status_code == 405 and r.is_json
    assert client.get("/jobs/doesnotexist").status_code == 404


# --- basic auth -------------------------------------------------------------------------------

def test_basic_auth_guards_every_route_but_health(vrshq_backend):
    config = BackendConfig(**{**vrshq_backend.config.__dict__, "basic_auth_user": "ls",
                              "basic_auth_pass": "pa:ss"})
    app = create_app(config=config, backend=vrshq_backend).test_client()
    good = {"Authorization": "Basic " + base64.b64encode(b"ls:pa:ss").decode()}
    wrong = {"Authorization": "Basic " + base64.b64encode(b"ls:nope").decode()}
    assert app.get("/health").status_code == 200
    for route in ("/metrics", "/versions", "/jobs"):
        r = app.get(route)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
        assert app.get(route, headers=wrong).status_code == 401
        assert app.get(route, headers={"Authorization": "Basic !!!"}).status_code == 401
        assert app.get(route, headers=good).status_code == 200
    assert app.post("/predict", json={}).status_code == 401


def test_auth_needs_both_user_and_password():
    with pytest.raises(ConfigError, match="BASIC_AUTH_USER and BASIC_AUTH_PASS"):
        BackendConfig(basic_auth_user="only-user")


# Variables the config's docstring may document, each set to a value unlike its default, and where
# it lands. A variable with an alias is listed under each name. Only the documented ones are
# tested, and every documented one must be here (see test_the_env_cases_are_the_documented_variables).
ALL_ENV_CASES = {
    "VRSHQ_PLUGIN": ("sam2", "plugin", "sam2"),
    "VRSHQ_MODEL": ("/m", "model_dir", "/m"),
    "VRSHQ_DEVICE": ("cuda:1", "device", "cuda:1"),
    "MODEL_DIR": ("/d", "data_dir", "/d"),
    "LABEL_STUDIO_URL": ("http://127.0.0.1:8080/", "label_studio_url", "http://127.0.0.1:8080"),
    "LABEL_STUDIO_HOST": ("https://ls.example", "label_studio_url", "https://ls.example"),
    "LABEL_STUDIO_API_KEY": ("api-key-3f9a", "api_key", "api-key-3f9a"),
    "LABEL_STUDIO_ACCESS_TOKEN": ("token-8c1d", "api_key", "token-8c1d"),
    "LOCAL_FILES_DOCUMENT_ROOT": ("/data", "local_roots", ("/data",)),
    "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": ("/ls-data", "local_roots", ("/ls-data",)),
    "VRSHQ_MEDIA_ROOTS": ("/a:/b", "local_roots", ("/a", "/b")),
    "VRSHQ_SYNC_FRAMES": ("50", "sync_frame_budget", 50),
    "VRSHQ_JOB_WORKERS": ("2", "job_workers", 2),
    "VRSHQ_MAX_OBJECTS": ("3", "max_objects", 3),
    "VRSHQ_MAX_PIXELS": ("921600", "max_pixels", 921600),
    "VRSHQ_MAX_FRAMES": ("9000", "max_frames", 9000),
    "VRSHQ_KEYFRAME_QUALITY": ("80", "keyframe_quality", 80),
    "VRSHQ_STRIP_FRAMES": ("4", "strip_frames", 4),
    "VRSHQ_MASK_PAGES": ("3", "mask_pages", 3),
    "VRSHQ_DEMAND_PAGE": ("0", "demand_page", False),
    "VRSHQ_FEATURE_CACHE_MB": ("64", "feature_cache_mb", 64),
    "VRSHQ_MEDIA_URL": ("http://backend.example:9090/", "media_url", "http://backend.example:9090"),
    "VRSHQ_FPS_MISMATCH": ("use-file", "fps_mismatch", "use-file"),
    "REDIS_URL": ("redis://:redis-pass-6e2f@127.0.0.1:6379/0", "redis_url",
                  "redis://:redis-pass-6e2f@127.0.0.1:6379/0"),
    "VRSHQ_QUEUE": ("q2", "queue", "q2"),
    "VRSHQ_MAX_QUEUED": ("7", "max_queued", 7),
    "VRSHQ_TRAIN_STEPS": ("40", "train_steps", 40),
    "VRSHQ_TRAIN_LR": ("0.001", "train_lr", 0.001),
    "VRSHQ_TRAIN_HOLDOUT": ("0.5", "train_holdout", 0.5),
    "VRSHQ_PRECISION": ("fp32", "precision", "fp32"),
    "VRSHQ_REQUEST_TIMEOUT": ("12.5", "request_timeout", 12.5),
    "VRSHQ_LABEL_CLIP": ("on", "label_clip", "on"),
    "VRSHQ_LABEL_CLIP_THRESHOLD": ("0.5", "label_clip_threshold", 0.5),
    # The per-request bounds, where the config has them: each read as an integer.
    **{var: ("7", name, 7) for name, var in getattr(backend_config, "BOUNDS", {}).items()},
}
SECRETS = ("api-key-3f9a", "token-8c1d", "pass-4b7e", "redis-pass-6e2f")


def _documented_variables() -> set[str]:
    """The variable names in backend/config.py's docstring (upper-case words with an underscore)."""
    return set(re.findall(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b", backend_config.__doc__))


ENV_CASES = {name: case for name, case in ALL_ENV_CASES.items() if name in _documented_variables()}


def test_the_env_cases_are_the_documented_variables():
    # BASIC_AUTH_USER and BASIC_AUTH_PASS are set together (one alone is an error): see below.
    assert set(ENV_CASES) | {"BASIC_AUTH_USER", "BASIC_AUTH_PASS"} == _documented_variables()
    assert len(ENV_CASES) >= 23


@pytest.mark.parametrize("name", list(ENV_CASES))
def test_config_from_env_reads_each_documented_variable(name):
    raw, attr, want = ENV_CASES[name]
    default = getattr(BackendConfig.from_env({}), attr)
    assert default != want, (name, default)  # the case can see the variable being ignored
    c = BackendConfig.from_env({name: raw})
    assert getattr(c, attr) == want, (name, getattr(c, attr))


def test_config_from_env_reads_all_of_them_at_once_and_keeps_the_secrets_out_of_repr():
    env = {name: raw for name, (raw, _, _) in ENV_CASES.items()
           if name not in ("LABEL_STUDIO_HOST", "LABEL_STUDIO_ACCESS_TOKEN",
                           "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT")}
    env |= {"BASIC_AUTH_USER": "ls-user", "BASIC_AUTH_PASS": "pass-4b7e"}
    c = BackendConfig.from_env(env)
    assert (c.plugin, c.model_dir, c.device, c.data_dir) == ("sam2", "/m", "cuda:1", "/d")
    assert (c.label_studio_url, c.api_key) == ("http://127.0.0.1:8080", "api-key-3f9a")
    assert c.local_roots == ("/data", "/a", "/b")
    assert (c.basic_auth_user, c.basic_auth_pass, c.auth_enabled) == ("ls-user", "pass-4b7e", True)
    assert (c.sync_frame_budget, c.job_workers, c.max_objects, c.keyframe_quality) == (50, 2, 3, 80)
    assert (c.max_pixels, c.max_frames, c.queue, c.max_queued) == (921600, 9000, "q2", 7)
    assert c.redis_url == "redis://:redis-pass-6e2f@127.0.0.1:6379/0"
    assert (c.train_steps, c.train_lr, c.train_holdout) == (40, 0.001, 0.5)
    # The first name of an aliased pair wins over the second.
    both = BackendConfig.from_env({"LABEL_STUDIO_URL": "http://a:1", "LABEL_STUDIO_HOST": "http://b:2",
                                   "LABEL_STUDIO_API_KEY": "k1", "LABEL_STUDIO_ACCESS_TOKEN": "k2"})
    assert (both.label_studio_url, both.api_key) == ("http://a:1", "k1")
    for text in (repr(c), str(c)):
        assert "ls-user" in text  # the repr is there to be read; only the secrets are left out
        for secret in SECRETS:
            assert secret not in text, (secret, text)


@pytest.mark.parametrize(("env", "words"), [
    ({"BASIC_AUTH_USER": "u"}, "BASIC_AUTH_USER and BASIC_AUTH_PASS"),
    ({"BASIC_AUTH_PASS": "p"}, "BASIC_AUTH_USER and BASIC_AUTH_PASS"),
    ({"VRSHQ_SYNC_FRAMES": "many"}, "VRSHQ_SYNC_FRAMES"),
    ({"VRSHQ_TRAIN_LR": "fast"}, "VRSHQ_TRAIN_LR"),
    ({"VRSHQ_DEMAND_PAGE": "maybe"}, "VRSHQ_DEMAND_PAGE must be 1 or 0"),
    ({"LABEL_STUDIO_URL": "127.0.0.1:8080"}, "LABEL_STUDIO_URL"),
])
def test_config_from_env_names_a_bad_variable(env, words):
    with pytest.raises(ConfigError, match=words):
        BackendConfig.from_env(env)
