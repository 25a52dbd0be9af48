"""The Label Studio harness against a real Label Studio 1.23.2 and a real headless Chromium.

No backend of ours is involved: a prediction built by ``vrshq.backend.labelstudio.predictions`` from the synthetic
video's ground truth is embedded in an imported task, then read back through the API and looked
at in the editor. A stub ML backend (a few lines of ``http.server``) checks the ML API calls.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from PIL import Image

from vrshq.backend.labelstudio.labelconfig import parse_label_config
from vrshq.backend.labelstudio.predictions import mask_region_id, object_results, prediction, region_id
from tests.browser import show_task
from vrshq.backend.labelstudio.local import LabelStudioAPI, LabelStudioServer
from vrshq.masks import Track
from vrshq.synthetic import SyntheticSpec, ground_truth, render_scene, write_video

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "backend" / "configs" / "video_text_prompt.xml"
ARTIFACTS = Path(os.environ.get("VRSHQ_TEST_ARTIFACTS") or REPO / ".test-artifacts")

SPEC = SyntheticSpec(num_frames=30, width=160, height=120, fps=10.0, num_objects=2)
LABELS = {1: "Animal", 2: "Car"}  # object id -> config label
KEYFRAMES = {1: 5, 2: 12}  # object id -> 0-based decoded frame of its keyframe mask

pytestmark = pytest.mark.timeout(600)


def build_predicted_task(api: LabelStudioAPI, doc_root: Path, title: str = "harness proof") -> dict[str, Any]:
    """Write the clip and keyframes under ``doc_root/clips``, make a project and import one predicted task."""
    clips = doc_root / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    write_video(SPEC, clips / "synthetic.mp4")
    gt = ground_truth(SPEC)
    frames = [frame for frame, _ in render_scene(SPEC)]
    keyframe_urls, keyframe_frames = [], []
    for index, obj in enumerate(sorted(LABELS)):
        name = f"synthetic_kf{obj}.jpg"
        Image.fromarray(frames[KEYFRAMES[obj]]).save(clips / name, quality=95)
        keyframe_urls.append(f"/data/local-files/?d=clips/{name}")
        keyframe_frames.append(KEYFRAMES[obj] + 1)

    xml = CONFIG.read_text()
    info = parse_label_config(xml)
    project = api.create_project(title, xml)
    api.add_local_storage(project, clips)
    data = {
        "video": "/data/local-files/?d=clips/synthetic.mp4",
        "fps": SPEC.fps,
        "prompt": "the animal\nthe car",
        "keyframes": keyframe_urls,
        "keyframe_frames": keyframe_frames,
    }
    # the task id is only known after the import: import, then add the prediction with region ids
    # made from it (POST /api/predictions/ is what an async backend does too)
    [task] = api.import_tasks(project, [{"data": data}])
    results = []
    for index, obj in enumerate(sorted(LABELS)):
        track = Track(obj_id=obj, height=SPEC.height, width=SPEC.width)
        for f in range(SPEC.num_frames):
            track.set(f, gt[f] == obj)
        results += object_results(
            track,
            keyframe=KEYFRAMES[obj],
            keyframe_mask=gt[KEYFRAMES[obj]] == obj,
            label=LABELS[obj],
            region_id=region_id(task, obj),
            info=info,
            fps=SPEC.fps,
            frames_count=SPEC.num_frames,
            item_index=index,
            score=0.9,
        )
    pred = prediction(results, model_version="ground-truth", score=0.9)
    api.post("/api/predictions/", {"task": task, **pred})
    return {"project": project, "task": task, "results": results, "data": data}


def build_embedded_task(api: LabelStudioAPI, project: int, data: dict[str, Any], results: list[dict[str, Any]]) -> int:
    """Import a task that embeds its prediction (``"predictions": [...]``) in the import itself."""
    [task] = api.import_tasks(project, [{"data": data, "predictions": [prediction(results, "embedded", 0.8)]}])
    return task


@pytest.fixture(scope="module")
def predicted(label_studio: LabelStudioServer, ls_api: LabelStudioAPI) -> dict[str, Any]:
    return build_predicted_task(ls_api, label_studio.doc_root)


def test_server_is_local_and_token_works(label_studio: LabelStudioServer, ls_api: LabelStudioAPI) -> None:
    assert label_studio.url.startswith("http://127.0.0.1:")
    assert "@" in label_studio.username
    assert isinstance(ls_api.get("/api/projects/"), dict | list)


def test_stored_prediction_has_tracks_and_masks(ls_api: LabelStudioAPI, predicted: dict[str, Any]) -> None:
    task = predicted["task"]
    stored = ls_api.get_task(task)
    assert stored["data"]["keyframes"] == predicted["data"]["keyframes"]
    # the clip and the keyframe images are served through the local-files storage
    for url in [predicted["data"]["video"], *predicted["data"]["keyframes"]]:
        assert ls_api.request("GET", url).content[:4] != b"", url

    [pred] = ls_api.list_predictions(task)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for r in pred["result"]:
        by_type.setdefault(r["type"], []).append(r)
    tracks, masks = by_type["videorectangle"], by_type["brushlabels"]
    assert len(tracks) == 2 and len(masks) == 2
    for index, obj in enumerate(sorted(LABELS)):
        rid = region_id(task, obj)
        [track] = [t for t in tracks if t["id"] == rid]
        value = track["value"]
        assert value["labels"] == [LABELS[obj]]
        assert value["framesCount"] == SPEC.num_frames
        frames = [k["frame"] for k in value["sequence"]]
        assert frames == sorted(frames) and 1 <= min(frames) and max(frames) <= SPEC.num_frames
        assert frames[0] == 1  # both objects are visible in decoded frame 0
        [mask] = [m for m in masks if m["id"] == mask_region_id(rid)]
        assert mask["item_index"] == index
        assert mask["value"]["brushlabels"] == [LABELS[obj]]
        assert (mask["original_width"], mask["original_height"]) == (SPEC.width, SPEC.height)
        assert mask["value"]["rle"]


def test_embedded_prediction_import(ls_api: LabelStudioAPI, predicted: dict[str, Any]) -> None:
    task = build_embedded_task(ls_api, predicted["project"], predicted["data"], predicted["results"])
    [pred] = ls_api.list_predictions(task)
    assert pred["model_version"] == "embedded"
    assert sorted(r["type"] for r in pred["result"]) == ["brushlabels"] * 2 + ["videorectangle"] * 2


def _check_editor(seen: dict[str, Any]) -> None:
    assert seen["editor"] and seen["video"] and seen["videoCanvas"], seen
    assert seen["videoTimeline"] and seen["timelineRows"] == 2, seen
    tracks = sorted(r["label"] for r in seen["regions"] if r["type"] == "videorectangleregion")
    masks = sorted(r["label"] for r in seen["regions"] if r["type"] == "brushregion")
    # two tracks, each with its own label, and two keyframe masks with the same labels
    assert tracks == ["Animal", "Car"], seen
    assert all(r["labels"] == [r["label"]] for r in seen["regions"]), seen
    assert seen["keyframeImage"] and seen["keyframeImageSize"] == [SPEC.width, SPEC.height], seen
    assert masks == ["Animal", "Car"], seen
    assert seen["maskDrawn"], seen


def test_browser_shows_tracks_and_keyframe_masks(label_studio: LabelStudioServer, predicted: dict[str, Any]) -> None:
    """The editor shows both tracks on the video and both keyframe masks (paired region ids).

    With one id shared by a track and its mask, LS 1.23.2 merged them into one region and drew
    no mask; backend.predictions gives the mask the track's id + "-mask".
    """
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "labelstudio-predicted-task.png"
    seen = show_task(label_studio, predicted["project"], predicted["task"], shot)
    _check_editor(seen)
    assert shot.exists() and shot.stat().st_size > 10_000


# --- the ML-backend calls, against a stub backend -------------------------------------------


class _StubBackend(BaseHTTPRequestHandler):
    calls: ClassVar[list[tuple[str, str, Any]]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, obj: Any) -> None:
        body = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.calls.append(("GET", self.path, None))
        self._send({"status": "UP", "model_class": "Stub"})

    def do_POST(self) -> None:
        size = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(size) or b"null")
        self.calls.append(("POST", self.path, body))
        if self.path.startswith("/setup"):
            return self._send({"model_version": "stub-1"})
        if self.path.startswith("/predict"):
            text = {"text": ["from stub"]}
            result = [{"from_name": "prompt", "to_name": "video", "type": "textarea", "value": text}]
            return self._send({"results": [{"result": result, "score": 0.5, "model_version": "stub-1"} for _ in body["tasks"]]})
        return self._send({"status": "ok"})


@pytest.fixture()
def stub_backend() -> Iterator[tuple[str, list[tuple[str, str, Any]]]]:
    calls: ClassVar[list[tuple[str, str, Any]]] = []
    handler = type("Stub", (_StubBackend,), {"calls": calls})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", calls
    finally:
        server.shutdown()
        server.server_close()


def test_ml_backend_calls(ls_api: LabelStudioAPI, stub_backend: tuple[str, list[tuple[str, str, Any]]]) -> None:
    url, calls = stub_backend
    project = ls_api.create_project("stub backend", CONFIG.read_text())
    [task] = ls_api.import_tasks(project, [{"data": {"video": "x.mp4", "fps": 10, "prompt": "a car"}}])
    ml = ls_api.connect_ml_backend(project, url)
    assert any(c[:2] == ("POST", "/setup") for c in calls)
    # the SSRF guard is off, so the backend's webhook was created
    assert [w["url"] for w in ls_api.list_webhooks(project)] == [url + "/webhook"]

    answer = ls_api.interactive(ml, task, {"result": []})
    assert answer["data"]["result"][0]["value"]["text"] == ["from stub"]

    ls_api.retrieve_predictions(project, [task])
    [pred] = ls_api.list_predictions(task)
    assert pred["model_version"] == "stub-1"

    ls_api.train(ml)
    annotation = ls_api.create_annotation(task, [{"from_name": "prompt", "to_name": "video", "type": "textarea", "value": {"text": ["the dog"]}}])
    ls_api.update_annotation(annotation, [{"from_name": "prompt", "to_name": "video", "type": "textarea", "value": {"text": ["the cat"]}}])
    assert ls_api.get_annotation(annotation)["result"][0]["value"]["text"] == ["the cat"]
    updated = ls_api.update_task_data(task, {"video": "y.mp4", "fps": 10, "prompt": "a car"})
    assert updated["data"]["video"] == "y.mp4"
    assert [t["id"] for t in ls_api.list_tasks(project)] == [task]
    actions = [c[2].get("action") for c in calls if c[:2] == ("POST", "/webhook")]
    assert "START_TRAINING" in actions
    assert "ANNOTATION_CREATED" in actions
