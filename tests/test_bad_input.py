"""Bad input to the backend: every refusal is a 4xx JSON ``{"status", "error"}`` naming the problem.

Malformed JSON, missing or wrong-typed fields, label configs without the tags the backend needs,
tasks without a video or a prompt, files that are not videos (truncated, corrupt, zero frames),
videos over the configured size limits, local paths that leave the allowed roots, too many
objects, and one task predicted by two requests at once.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from pathlib import Path

import pytest

from vrshq.backend.http.app import create_app
from vrshq.backend.config import BackendConfig, ConfigError
from tests.backend_fixtures import SPEC, TEXT_XML, next_task_id, text_task

ROUTES = ("/predict", "/webhook", "/setup")


def predict(client, tasks, xml=TEXT_XML, project="1", **extra):
    return client.post("/predict", json={"tasks": tasks, "project": project, "label_config": xml,
                                         **extra})


def assert_json_error(r, status: int | tuple[int, ...], *words: str) -> None:
    """A JSON error of the given status whose message holds every word."""
    statuses = status if isinstance(status, tuple) else (status,)
    assert r.status_code in statuses, (r.status_code, r.get_data(as_text=True)[:500])
    assert r.is_json, r.get_data(as_text=True)[:500]
    body = r.json
    assert set(body) == {"status", "error"} and body["status"] == r.status_code
    assert isinstance(body["error"], str) and body["error"]
    assert "Traceback" not in body["error"]
    for word in words:
        assert word in body["error"], (word, body["error"])


# --- malformed JSON, on every route -------------------------------------------------------------

@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(("body", "words"), [
    (b"{not json", "not valid JSON"),
    (b'{"tasks": [1, 2', "not valid JSON"),
    (b"\xff\xfe\x00garbage", "not valid JSON"),
    (b"", "no JSON body"),
    (b"[1, 2]", "must be an object, got list"),
    (b'"text"', "must be an object, got str"),
    (b"3.5", "must be an object, got float"),
    (b"null", "must be an object"),
    (b"[" * 100_000 + b"]" * 100_000, "JSON"),  # nesting deeper than the parser's recursion limit
    # Python's json reads NaN and Infinity; the fields are checked after it
    (b'{"action": "ANNOTATION_CREATED", "project": NaN, "tasks": Infinity, "annotation": NaN}', ""),
])
def test_malformed_json_is_a_400_on_every_route(client, route, body, words):
    r = client.post(route, data=body, content_type="application/json")
    assert_json_error(r, 400, words)


def test_a_body_without_a_json_content_type_is_still_read(client):
    # Label Studio sends application/json; curl users often forget it. Same answer either way.
    r = client.post("/setup", data=b"{not json", content_type="text/plain")
    assert_json_error(r, 400, "not valid JSON")


# --- missing or wrong-typed fields -----------------------------------------------------------

TASK = {"id": 1, "data": {"video": "/data/local-files/?d=clips/a.mp4", "fps": 10, "prompt": "a"}}


@pytest.mark.parametrize(("payload", "words"), [
    ({}, "'tasks'"),
    ({"tasks": []}, "'tasks' must be a non-empty list"),
    ({"tasks": "x"}, "'tasks' must be a non-empty list"),
    ({"tasks": None}, "'tasks'"),
    ({"tasks": {"id": 1}}, "'tasks'"),
    ({"tasks": [1, 2]}, "'tasks'"),
    ({"tasks": [TASK]}, "project id"),  # no project anywhere
    ({"tasks": [TASK], "project": "9191"}, "label_config"),  # a project never set up, no config
    ({"tasks": [TASK], "project": ["1"], "label_config": TEXT_XML}, "project id"),
    ({"tasks": [TASK], "project": "../1", "label_config": TEXT_XML}, "not a plain id"),
    ({"tasks": [TASK], "project": True, "label_config": TEXT_XML}, "project id"),
    ({"tasks": [TASK], "project": "1", "label_config": 5}, "label_config"),
    ({"tasks": [{"data": TASK["data"]}], "project": "1", "label_config": TEXT_XML}, "integer 'id'"),
    ({"tasks": [{**TASK, "id": "x"}], "project": "1", "label_config": TEXT_XML}, "integer 'id'"),
    ({"tasks": [{**TASK, "id": -3}], "project": "1", "label_config": TEXT_XML}, "integer 'id'"),
    ({"tasks": [{**TASK, "id": 1.5}], "project": "1", "label_config": TEXT_XML}, "integer 'id'"),
    ({"tasks": [{**TASK, "id": True}], "project": "1", "label_config": TEXT_XML}, "integer 'id'"),
    ({"tasks": [{**TASK, "id": 10**30}], "project": "1", "label_config": TEXT_XML}, "integer 'id'"),
    ({"tasks": [{"id": 1, "data": "x"}], "project": "1", "label_config": TEXT_XML}, "'data'"),
    ({"tasks": [{"id": 1}], "project": "1", "label_config": TEXT_XML}, "'data'"),
    ({"tasks": [{"id": 1, "data": {**TASK["data"], "fps": -2}}], "project": "1",
      "label_config": TEXT_XML}, "'fps'"),
    ({"tasks": [{"id": 1, "data": {**TASK["data"], "fps": [10]}}], "project": "1",
      "label_config": TEXT_XML}, "'fps'"),
    ({"tasks": [{"id": 1, "data": {**TASK["data"], "fps": "fast"}}], "project": "1",
      "label_config": TEXT_XML}, "'fps'"),
    ({"tasks": [{"id": 1, "data": {**TASK["data"], "fps": 1e-320}}], "project": "1",
      "label_config": TEXT_XML}, "fps"),
    ({"tasks": [{"id": 1, "data": {**TASK["data"], "prompt": 7}}], "project": "1",
      "label_config": TEXT_XML}, "prompt"),
    ({"tasks": [{"id": 1, "data": {**TASK["data"], "prompt": ["a", {"b": 1}]}}], "project": "1",
      "label_config": TEXT_XML}, "prompt"),
    ({"tasks": [{"id": 1, "data": {**TASK["data"], "video": 12}}], "project": "1",
      "label_config": TEXT_XML}, "'video'"),
    ({"tasks": [TASK], "project": "1", "label_config": TEXT_XML, "params": {"context": "x"}},
     "'context'"),
    ({"tasks": [TASK], "project": "1", "label_config": TEXT_XML,
      "params": {"context": {"result": "x"}}}, "context 'result'"),
    ({"tasks": [TASK, TASK], "project": "1", "label_config": TEXT_XML,
      "params": {"context": {"result": [{"type": "textarea"}]}}}, "exactly one task"),
])
def test_predict_names_the_missing_or_wrong_field(client, payload, words):
    assert_json_error(client.post("/predict", json=payload), 400, words)


@pytest.mark.parametrize(("payload", "words"), [
    ({"project": "1", "schema": 12}, "'schema'"),
    ({"project": "1", "extra_params": [1]}, "'extra_params'"),
    ({"project": None}, "project id"),
    ({"schema": TEXT_XML}, "project id"),
    ({"project": {"id": "a/b"}, "schema": TEXT_XML}, "not a plain id"),
    ({"project": "1", "schema": "<View"}, "does not parse"),
])
def test_setup_names_the_missing_or_wrong_field(client, payload, words):
    assert_json_error(client.post("/setup", json=payload), 400, words)


@pytest.mark.parametrize(("payload", "words"), [
    ({"action": "ANNOTATION_CREATED", "project": 1, "annotation": None}, "'annotation'"),
    ({"action": "ANNOTATION_CREATED", "project": 1, "annotation": {"result": {}}}, "list"),
    ({"action": "ANNOTATION_UPDATED", "project": 1, "task": {"id": "7"},
      "annotation": {"result": []}}, "task id"),
    ({"action": "ANNOTATION_UPDATED", "project": 1, "task": True, "annotation": {"result": []}},
     "task id"),
    ({"action": "ANNOTATION_UPDATED", "project": 1, "task": -4, "annotation": {"result": []}},
     "task id"),
    ({"action": "ANNOTATION_UPDATED", "project": 1, "task": 10**30, "annotation": {"result": []}},
     "task id"),
    ({"action": "ANNOTATION_CREATED", "project": [1], "task": 3, "annotation": {"result": []}},
     "project id"),
    ({"action": "ANNOTATION_CREATED", "project": {"id": 991, "label_config": 3}, "task": 3,
      "annotation": {"result": []}}, "label_config"),
])
def test_webhook_names_the_missing_or_wrong_field(client, payload, words):
    assert_json_error(client.post("/webhook", json=payload), 400, words)


# --- label configs without the tags the backend needs ----------------------------------------

LABELS = "<Labels name='l' toName='v'><Label value='A'/></Labels>"
VIDEO = "<Video name='v' value='$video' frameRate='$fps'/>"
BOX = "<VideoRectangle name='b' toName='v'/>"
BRUSH_A = "<BrushLabels name='m' toName='k'><Label value='A'/></BrushLabels>"
BRUSH_B = "<BrushLabels name='m' toName='k'><Label value='B'/></BrushLabels>"


@pytest.mark.parametrize(("xml", "words"), [
    ("not xml at all", "does not parse"),
    ("<View><Text name='t' value='$t'/></View>", "<Video>"),
    (f"<View>{VIDEO}{LABELS}</View>", "<VideoRectangle>"),
    (f"<View>{VIDEO}{BOX}</View>", "<Labels>"),
    (f"<View>{VIDEO}{BOX}<Labels name='l' toName='v'></Labels></View>", "<Labels>"),
    (f"<View><Video name='v' value='video.mp4'/>{BOX}{LABELS}</View>", "value=\"$video\""),
    (f"<View><Video name='v' value='$video' frameRate='fast'/>{BOX}{LABELS}</View>", "frameRate"),
    (f"<View>{VIDEO}{BOX}{LABELS}<BrushLabels name='m' toName='v'><Label value='A'/></BrushLabels></View>",
     "<Image>"),
    (f"<View>{VIDEO}{BOX}{LABELS}<Image name='k' value='$k'/>{BRUSH_A}</View>", "valueList"),
    (f"<View>{VIDEO}{BOX}{LABELS}<Image name='k' valueList='$k'/>{BRUSH_B}</View>", "lacks"),
])
@pytest.mark.parametrize("route", ("/predict", "/setup", "/webhook"))
def test_a_label_config_without_the_needed_tags_is_a_400(client, route, xml, words):
    if route == "/predict":
        r = predict(client, [TASK], xml=xml)
    elif route == "/setup":
        r = client.post("/setup", json={"project": "5", "schema": xml})
    else:
        r = client.post("/webhook", json={"action": "ANNOTATION_CREATED", "task": 3,
                                          "project": {"id": 5, "label_config": xml},
                                          "annotation": {"result": []}})
    assert_json_error(r, 400, words)


# --- tasks without a video or a prompt -------------------------------------------------------

@pytest.mark.parametrize(("data", "words"), [
    ({"fps": 10, "prompt": "a"}, "no 'video'"),
    ({"video": "  ", "fps": 10, "prompt": "a"}, "no 'video'"),
    ({"video": "/data/local-files/?d=clips/a.mp4", "prompt": "a"}, "no 'fps'"),
    ({"video": "/data/local-files/?d=clips/a.mp4", "fps": 10}, "no prompt"),
    ({"video": "/data/local-files/?d=clips/a.mp4", "fps": 10, "prompt": ""}, "no prompt"),
    ({"video": "/data/local-files/?d=clips/a.mp4", "fps": 10, "prompt": " \n \n"}, "no prompt"),
    ({"video": "/data/local-files/?d=clips/a.mp4", "fps": 10, "prompt": []}, "no prompt"),
])
def test_a_task_without_a_video_or_a_prompt_is_a_400_naming_the_task(client, data, words):
    tid = next_task_id()
    assert_json_error(predict(client, [{"id": tid, "data": data}]), 400, f"task {tid}", words)


def test_a_config_without_a_prompt_text_tells_where_the_prompt_goes(client):
    xml = f"<View>{VIDEO}{BOX}{LABELS}</View>"
    tid = next_task_id()
    assert_json_error(predict(client, [text_task(tid)], xml=xml), 400, f"task {tid}",
                      "<Text value=\"$prompt\">")


# --- media that is not a usable video --------------------------------------------------------

@pytest.fixture(scope="module")
def bad_videos(media_root) -> dict[str, str]:
    """Broken files in the media root, named by what is wrong with them: kind -> relative path."""
    good = (media_root / "clips" / "a.mp4").read_bytes()
    folder = media_root / "broken"
    folder.mkdir(exist_ok=True)
    files = {
        "empty": b"",
        "text": b"this is not a video\n" * 50,
        "truncated-header": good[:200],
        "truncated-half": good[: len(good) // 2],
        "garbage": bytes((i * 131 + 7) % 256 for i in range(len(good))),
        "png": bytes.fromhex("89504e470d0a1a0a") + b"\x00" * 64,
    }
    out = {}
    for kind, data in files.items():
        (folder / f"{kind}.mp4").write_bytes(data)
        out[kind] = f"broken/{kind}.mp4"
    zero = folder / "zero-frames.mp4"
    _write_zero_frame_mp4(zero)
    out["zero-frames"] = "broken/zero-frames.mp4"
    return out


def _write_zero_frame_mp4(path: Path) -> None:
    """An mp4 with an H.264 stream and no frames in it."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = SPEC.width, SPEC.height, "yuv420p"
        container.start_encoding()  # the header, with no frame after it
        for packet in stream.encode(None):
            container.mux(packet)
    assert path.stat().st_size > 0


@pytest.mark.parametrize("kind", ["empty", "text", "truncated-header", "truncated-half", "garbage",
                                  "png", "zero-frames"])
def test_a_file_that_is_not_a_usable_video_is_a_422_naming_it(client, bad_videos, kind):
    r = predict(client, [text_task(next_task_id(), video=bad_videos[kind])])
    assert_json_error(r, 422, f"{kind}.mp4")


def test_a_video_corrupted_in_the_middle_is_a_422_or_a_prediction_never_a_5xx(client, media_root):
    data = bytearray((media_root / "clips" / "a.mp4").read_bytes())
    mid = len(data) // 2
    data[mid:mid + 400] = bytes((i * 37) % 256 for i in range(400))
    (media_root / "broken").mkdir(exist_ok=True)
    (media_root / "broken" / "middle.mp4").write_bytes(bytes(data))
    r = predict(client, [text_task(next_task_id(), video="broken/middle.mp4")])
    if r.status_code != 200:  # H.264 may conceal the damage; if it does not, the file is named
        assert_json_error(r, 422, "middle.mp4")
    else:
        assert r.json["results"][0]["result"]


def test_a_directory_or_a_missing_file_is_a_422(client, media_root):
    assert_json_error(predict(client, [text_task(next_task_id(), video="clips")]), 422, "clips")
    assert_json_error(predict(client, [text_task(next_task_id(), video="clips/none.mp4")]), 422,
                      "none.mp4", "not found")


def test_a_url_of_an_unsupported_scheme_is_a_422(client):
    for url in ("ftp://host/a.mp4", "javascript:alert(1)", "data:video/mp4;base64,AAAA"):
        task = {"id": next_task_id(), "data": {"video": url, "fps": 10, "prompt": "a"}}
        assert_json_error(predict(client, [task]), 422, url)


# --- videos over the configured limits -------------------------------------------------------

@pytest.mark.parametrize(("limits", "words"), [
    ({"max_pixels": SPEC.width * SPEC.height - 1}, ["VRSHQ_MAX_PIXELS", f"{SPEC.width}x{SPEC.height}"]),
    ({"max_frames": SPEC.num_frames - 1}, ["VRSHQ_MAX_FRAMES", f"{SPEC.num_frames} frames"]),
])
def test_a_video_over_the_configured_limits_is_a_422(client, vrshq_backend, monkeypatch, limits, words):
    monkeypatch.setattr(vrshq_backend, "config", dataclasses.replace(vrshq_backend.config, **limits))
    tid = next_task_id()
    r = predict(client, [text_task(tid)])
    assert_json_error(r, 422, "clips/a.mp4", *words)
    assert vrshq_backend.states.load("1", tid) is None
    # The same limits hold for a typed (interactive) prompt.
    typed = {"from_name": "prompt", "to_name": "video", "type": "textarea", "value": {"text": ["a"]}}
    r = predict(client, [text_task(tid)], params={"context": {"result": [typed]}})
    assert_json_error(r, 422, *words)


def test_a_video_at_the_limits_is_predicted(client, vrshq_backend, monkeypatch):
    monkeypatch.setattr(vrshq_backend, "config", dataclasses.replace(
        vrshq_backend.config, max_pixels=SPEC.width * SPEC.height, max_frames=SPEC.num_frames))
    r = predict(client, [text_task(next_task_id())])
    assert r.status_code == 200 and r.json["results"][0]["result"]


def test_the_limits_come_from_the_environment_and_are_checked():
    c = BackendConfig.from_env({"VRSHQ_MAX_PIXELS": "921600", "VRSHQ_MAX_FRAMES": "9000"})
    assert (c.max_pixels, c.max_frames) == (921600, 9000)
    d = BackendConfig()
    assert d.max_pixels >= 3840 * 2160 and d.max_frames >= 30 * 60 * 30  # 4K, half an hour at 30 fps
    with pytest.raises(ConfigError, match="VRSHQ_MAX_FRAMES"):
        BackendConfig.from_env({"VRSHQ_MAX_FRAMES": "lots"})
    with pytest.raises(ConfigError, match="max_pixels"):
        BackendConfig(max_pixels=0)


# --- local paths that leave the allowed roots ------------------------------------------------

@pytest.fixture(scope="module")
def outside(media_root, tmp_path_factory) -> Path:
    """A real video outside the media root, and symlinks to it (and to its folder) inside the root."""
    folder = tmp_path_factory.mktemp("outside")
    video = folder / "secret.mp4"
    video.write_bytes((media_root / "clips" / "a.mp4").read_bytes())
    links = media_root / "links"
    links.mkdir(exist_ok=True)
    if not (links / "secret.mp4").exists():
        os.symlink(video, links / "secret.mp4")
        os.symlink(folder, links / "outdir")
    return video


@pytest.mark.parametrize("ref", [
    "/data/local-files/?d=../outside/secret.mp4",
    "/data/local-files/?d=clips/../../outside/secret.mp4",
    "/data/local-files/?d=%2e%2e/%2e%2e/etc/passwd",
    "/data/local-files/?d=..%2F..%2Fetc%2Fpasswd",
    "/data/local-files/?d=/etc/passwd",
    "/data/local-files/?d=//etc/passwd",
    "/data/local-files/?d=clips\\..\\..\\etc\\passwd",
    "/data/local-files/?d=links/secret.mp4",
    "/data/local-files/?d=links/outdir/secret.mp4",
    "links/secret.mp4",
    "links/outdir/secret.mp4",
    "../secret.mp4",
    "/etc/passwd",
    "file:///etc/passwd",
    "file://localhost/etc/passwd",
])
def test_a_local_path_that_escapes_the_allowed_roots_is_a_422(client, vrshq_backend, outside, ref):
    if "secret.mp4" in ref and not ref.startswith(("/data", "links")):
        ref = ref.replace("secret.mp4", str(outside))  # an absolute path to the real video
    tid = next_task_id()
    task = {"id": tid, "data": {"video": ref, "fps": 10, "prompt": "a"}}
    r = predict(client, [task])
    assert_json_error(r, 422, ref)
    assert vrshq_backend.states.load("1", tid) is None


def test_the_absolute_path_of_a_file_inside_a_root_is_allowed(client, media_root):
    task = {"id": next_task_id(), "data": {"video": str(media_root / "clips" / "a.mp4"), "fps": 10,
                                           "prompt": "a"}}
    r = predict(client, [task])
    assert r.status_code == 200, r.json


# --- too many objects ------------------------------------------------------------------------

def test_too_many_objects_in_a_task_or_typed_interactively_is_a_400(client, vrshq_backend, monkeypatch):
    monkeypatch.setattr(vrshq_backend, "config", dataclasses.replace(vrshq_backend.config, max_objects=2))
    tid = next_task_id()
    assert_json_error(predict(client, [text_task(tid, "a\nb\nc")]), 400, "3 prompts",
                      "VRSHQ_MAX_OBJECTS")
    assert_json_error(predict(client, [text_task(tid, ["a", "b", "c"])]), 400, "VRSHQ_MAX_OBJECTS")
    assert predict(client, [text_task(tid, "a\nb")]).status_code == 200
    typed = {"from_name": "prompt", "to_name": "video", "type": "textarea", "value": {"text": ["c"]}}
    r = predict(client, [text_task(tid, "a\nb")], params={"context": {"result": [typed]}})
    assert_json_error(r, 400, f"task {tid}", "VRSHQ_MAX_OBJECTS")
    assert [o.obj_id for o in vrshq_backend.states.load("1", tid).objects] == [1, 2]


def test_a_huge_batch_of_tasks_gets_an_answer_per_task(client):
    ids = [next_task_id() for _ in range(50)]
    tasks = [{"id": i, "data": {"fps": 10, "prompt": "a"}} for i in ids]  # no video: rejected fast
    r = predict(client, tasks)
    assert_json_error(r, 400, f"task {ids[0]}", f"task {ids[-1]}")


# --- the same task predicted concurrently ----------------------------------------------------

def test_the_same_task_predicted_concurrently_is_serialised(vrshq_backend):
    app = create_app(backend=vrshq_backend)
    tid = next_task_id()
    events: list[tuple[str, int]] = []
    original = vrshq_backend.write_keyframes

    def slow_write_keyframes(state, *args, **kwargs):
        me = threading.get_ident()
        events.append(("enter", me))
        time.sleep(0.2)  # a window for the other request to interleave, were it not locked out
        try:
            return original(state, *args, **kwargs)
        finally:
            events.append(("exit", me))

    results: dict[int, object] = {}
    barrier = threading.Barrier(2)

    def run(k: int) -> None:
        c = app.test_client()
        barrier.wait()
        results[k] = c.post("/predict", json={"tasks": [text_task(tid)], "project": "1",
                                              "label_config": TEXT_XML})

    vrshq_backend.write_keyframes = slow_write_keyframes
    try:
        threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        del vrshq_backend.write_keyframes
    a, b = results[0], results[1]
    assert a.status_code == b.status_code == 200, (a.json, b.json)
    assert a.json == b.json
    # One request's keyframes+save finished before the other's began.
    assert [e for e, _ in events] == ["enter", "exit", "enter", "exit"]
    assert events[0][1] == events[1][1] and events[2][1] == events[3][1]
    state = vrshq_backend.states.load("1", tid)
    assert [o.obj_id for o in state.objects] == [1, 2]
    assert len(state.keyframe_urls) == 2 and state.frames_count == SPEC.num_frames
    assert json.loads(json.dumps(a.json["results"][0]))["model_version"] == state.model_version
