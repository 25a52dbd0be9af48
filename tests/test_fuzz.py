"""Property-based fuzzing of ``/predict``, ``/webhook`` and ``/setup`` (hypothesis).

Whatever arrives, the answer is never a 5xx or a traceback: a success, or a 4xx JSON error
``{"status", "error"}`` naming the problem; a rejected webhook leaves the corrections log as it was.
Derandomized (a fixed seed per test), so CI sees the same examples every run.
"""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.backend_fixtures import BOX_XML, SPEC, TEXT_XML, next_task_id, text_task

FUZZ = settings(derandomize=True, deadline=None, database=None, max_examples=60,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30))
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)

VIDEOS = ["/data/local-files/?d=clips/a.mp4", "/data/local-files/?d=clips/missing.mp4",
          "/data/local-files/?d=../../etc/passwd", "/data/local-files/?d=", "clips", "/etc/passwd",
          "file:///etc/passwd", "http://evil.example/a.mp4", "/data/upload/1/a.mp4", "s3://b/a.mp4",
          "http://evil.example\\@127.0.0.1/a.mp4", "\x00", "", "%00", "/data/local-files/?d=clips%2Fa.mp4"]
CONFIGS = [TEXT_XML, BOX_XML, "", "<View/>", "<View", "not xml", "<View><Video name='v' value='$v'/></View>",
           TEXT_XML.replace("$fps", "0"), TEXT_XML.replace("$fps", "-3"), TEXT_XML.replace("$video", "video"),
           TEXT_XML.replace("valueList", "value"), "<!DOCTYPE x [<!ENTITY a 'b'>]><View>&a;</View>"]


def check_answer(r) -> None:
    """Never a 5xx or a traceback; an error is 4xx JSON that names the problem."""
    text = r.get_data(as_text=True)
    assert r.status_code < 500, (r.status_code, text[:500])
    assert "Traceback" not in text
    assert r.is_json, text[:300]
    if r.status_code >= 400:
        body = r.json
        assert set(body) == {"status", "error"} and body["status"] == r.status_code, body
        assert isinstance(body["error"], str) and len(body["error"].strip()) > 5, body


def maybe(strategy):
    """A field that is sometimes left out (None here means: not in the payload)."""
    return st.one_of(st.just(Ellipsis), strategy)


def payload_of(**fields) -> dict:
    return {k: v for k, v in fields.items() if v is not Ellipsis}


# --- /predict ---------------------------------------------------------------------------------

task_data = st.builds(
    payload_of,
    video=maybe(st.sampled_from(VIDEOS) | json_values),
    fps=maybe(st.sampled_from([SPEC.fps, 0, -1, 1e-300, 1e300, "10", "fast"]) | json_values),
    prompt=maybe(st.sampled_from(["the car", "a\nb", "", "\n\n", ["x", "y"]]) | json_values),
    keyframes=maybe(json_values))
tasks = st.builds(payload_of, id=maybe(st.integers(-5, 2**64) | json_values),
                  data=maybe(task_data | json_values), project=maybe(json_values))
contexts = st.builds(payload_of, result=maybe(st.lists(
    st.builds(payload_of, type=maybe(st.sampled_from(["textarea", "brushlabels", "videorectangle"]) | scalars),
              from_name=maybe(st.sampled_from(["prompt", "mask", "box"]) | scalars),
              value=maybe(json_values), id=maybe(scalars), item_index=maybe(json_values)),
    max_size=2) | json_values))
predict_payloads = st.builds(
    payload_of,
    tasks=maybe(st.lists(tasks, min_size=0, max_size=3) | json_values),
    project=maybe(st.sampled_from([1, "1", "1.17", {"id": 1}, "../x", 10**80, float("nan")]) | json_values),
    label_config=maybe(st.sampled_from(CONFIGS) | json_values),
    params=maybe(st.builds(payload_of, context=maybe(contexts | json_values)) | json_values))


@FUZZ
@given(payload=predict_payloads)
def test_fuzz_predict(client, payload):
    check_answer(client.post("/predict", data=json.dumps(payload), content_type="application/json"))


# --- /setup -------------------------------------------------------------------------------------

setup_payloads = st.builds(
    payload_of,
    project=maybe(st.sampled_from([7, "7.1", {"id": 7}, "a/b", ""]) | json_values),
    schema=maybe(st.sampled_from(CONFIGS) | json_values),
    hostname=maybe(st.sampled_from(["http://127.0.0.1:9", "ftp://x", ""]) | json_values),
    access_token=maybe(json_values), extra_params=maybe(json_values),
    model_version=maybe(json_values))


@FUZZ
@given(payload=setup_payloads)
def test_fuzz_setup(client, payload):
    check_answer(client.post("/setup", data=json.dumps(payload), content_type="application/json"))


# --- /webhook -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def predicted_task(client):
    """A task the backend predicted: (task id, its prediction's result)."""
    tid = next_task_id()
    r = client.post("/predict", json={"tasks": [text_task(tid)], "project": "1", "label_config": TEXT_XML})
    assert r.status_code == 200, r.json
    return tid, r.json["results"][0]["result"]


REGION_KEYS = ["id", "type", "from_name", "to_name", "item_index", "original_width", "original_height",
               "value"]
VALUE_KEYS = ["rle", "format", "brushlabels", "labels", "sequence", "framesCount", "duration"]


@st.composite
def annotation_results(draw, result):
    """The prediction's result with a few fields of its regions replaced, or anything at all."""
    if draw(st.integers(0, 4)) == 0:
        return draw(json_values)
    out = copy.deepcopy(result)
    for _ in range(draw(st.integers(1, 3))):
        if not out:
            break
        i = draw(st.integers(0, len(out) - 1))
        how = draw(st.sampled_from(["region", "value", "keyframe", "drop", "duplicate", "replace"]))
        if not isinstance(out[i], dict):
            continue
        if how == "region":
            out[i][draw(st.sampled_from(REGION_KEYS))] = draw(json_values)
        elif how == "value" and isinstance(out[i].get("value"), dict):
            out[i]["value"][draw(st.sampled_from(VALUE_KEYS))] = draw(json_values)
        elif how == "keyframe" and isinstance(out[i].get("value"), dict) \
                and isinstance(out[i]["value"].get("sequence"), list) and out[i]["value"]["sequence"]:
            out[i]["value"]["sequence"][0][draw(st.sampled_from(["frame", "x", "y", "width", "height",
                                                                  "enabled", "time"]))] = draw(json_values)
        elif how == "drop":
            out.pop(i)
        elif how == "duplicate":
            out.append(copy.deepcopy(out[i]))
        else:
            out[i] = draw(json_values)
    return out


@st.composite
def webhook_payloads(draw, tid, result):
    annotation = payload_of(
        id=draw(maybe(st.integers(0, 10) | json_values)), task=draw(maybe(st.just(tid) | json_values)),
        result=draw(maybe(annotation_results(result))), completed_by=draw(maybe(json_values)),
        was_cancelled=draw(maybe(st.booleans() | json_values)), updated_at=draw(maybe(json_values)))
    return payload_of(
        action=draw(maybe(st.sampled_from(["ANNOTATION_CREATED", "ANNOTATION_UPDATED", "PROJECT_UPDATED"])
                          | scalars)),
        project=draw(maybe(st.sampled_from([1, {"id": 1, "label_config": TEXT_XML}, {"id": 1}])
                           | json_values)),
        task=draw(maybe(st.sampled_from([tid, {"id": tid}]) | json_values)),
        annotation=draw(maybe(st.just(annotation) | json_values)))


@FUZZ
@given(data=st.data())
def test_fuzz_webhook_and_the_corrections_log(client, vrshq_backend, predicted_task, data):
    tid, result = predicted_task
    payload = data.draw(webhook_payloads(tid, result))
    if payload.get("action") == "START_TRAINING":  # a real training job: not for a fuzz loop
        payload["action"] = "ANNOTATION_CREATED"
    before = (vrshq_backend.corrections.count(), vrshq_backend.corrections.list())
    r = client.post("/webhook", data=json.dumps(payload), content_type="application/json")
    check_answer(r)
    if r.status_code >= 400:
        assert (vrshq_backend.corrections.count(), vrshq_backend.corrections.list()) == before


# --- any bytes at all ----------------------------------------------------------------------------

@FUZZ
@given(route=st.sampled_from(["/predict", "/webhook", "/setup"]),
       body=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()),
       content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded",
                                     "multipart/form-data"]))
def test_fuzz_raw_bodies(client, route, body, content_type):
    r = client.post(route, data=body, content_type=content_type)
    check_answer(r)
    assert r.status_code in (200, 201, 400), (r.status_code, r.json)


@settings(FUZZ, max_examples=80)
@given(data=st.data())
def test_fuzz_webhook_annotation_results(client, vrshq_backend, predicted_task, data):
    """A well-formed webhook whose annotation result is the prediction, damaged in a few places."""
    tid, result = predicted_task
    payload = {"action": data.draw(st.sampled_from(["ANNOTATION_CREATED", "ANNOTATION_UPDATED"])),
               "project": {"id": 1, "label_config": TEXT_XML}, "task": {"id": tid},
               "annotation": {"id": 1, "task": tid, "completed_by": 2, "was_cancelled": False,
                              "result": data.draw(annotation_results(result))}}
    before = (vrshq_backend.corrections.count(), vrshq_backend.corrections.list())
    r = client.post("/webhook", data=json.dumps(payload), content_type="application/json")
    check_answer(r)
    if r.status_code >= 400:
        assert (vrshq_backend.corrections.count(), vrshq_backend.corrections.list()) == before

