"""Our backend (``vrshq serve``) with a real Label Studio 1.23.2 and a real browser, as a user drives it.

Through Label Studio's REST API: create a project with our config, import synthetic video tasks
served as local files, connect the backend, get predictions (one task within the frame budget,
one past it, which runs as a job and is written back through POST /api/predictions), check
what Label Studio stored; submit an annotation with a corrected keyframe mask and check that
the webhook reached the backend, the correction is in the log and a re-propagated prediction
appears; the same with a moved box; add an object interactively; and look at a predicted task
in headless Chromium.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from vrshq.backend.corrections import CorrectionsLog
from vrshq.backend.labelstudio.labelconfig import parse_label_config
from vrshq.backend.labelstudio.local import LabelStudioAPI, LabelStudioServer
from vrshq.backend.labelstudio.predictions import parse_annotation
from vrshq.backend.tasks.state import TaskStateStore
from tests.backend_fixtures import TEXT_XML
from tests.browser import show_task
from tests.served_backend import poll, served_backend
from vrshq.masks import encode_brush
from vrshq.synthetic import SyntheticSpec, write_video

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("VRSHQ_TEST_ARTIFACTS") or REPO / ".test-artifacts")
SHORT = SyntheticSpec(num_frames=16, width=320, height=240, fps=10.0, num_objects=2, seed=11)
LONG = SyntheticSpec(num_frames=40, width=320, height=240, fps=10.0, num_objects=2, seed=12)
BUDGET = 30  # frames per request: SHORT is predicted in the request, LONG as a job
INFO = parse_label_config(TEXT_XML)

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def backend_server(label_studio: LabelStudioServer, tiny_models, tmp_path_factory):
    """`vrshq serve` wired to the session's Label Studio (its URL and token, its local-files root)."""
    # The keyframe pages only, as these tests (and the browser checks) count them; the extra
    # mask pages are tests/test_mask_pages.py's, the on-demand page tests/test_demand_page.py's.
    with served_backend(label_studio, tiny_models, tmp_path_factory.mktemp("e2e_backend"),
                        VRSHQ_SYNC_FRAMES=str(BUDGET), VRSHQ_MASK_PAGES="0", VRSHQ_DEMAND_PAGE="0") as served:
        yield served


@pytest.fixture(scope="module")
def project(label_studio: LabelStudioServer, ls_api: LabelStudioAPI, backend_server) -> dict[str, Any]:
    clips = label_studio.doc_root / "e2e"
    clips.mkdir(parents=True, exist_ok=True)
    write_video(SHORT, clips / "short.mp4")
    write_video(LONG, clips / "long.mp4")
    pid = ls_api.create_project("vrshq e2e", TEXT_XML)
    ls_api.add_local_storage(pid, clips)
    short, long = ls_api.import_tasks(pid, [
        {"data": {"video": "/data/local-files/?d=e2e/short.mp4", "fps": SHORT.fps,
                  "prompt": "the red disc\nthe green car"}},
        {"data": {"video": "/data/local-files/?d=e2e/long.mp4", "fps": LONG.fps,
                  "prompt": "the red disc\nthe green car"}},
    ])
    ml = ls_api.connect_ml_backend(pid, backend_server["url"], is_interactive=True)
    return {"id": pid, "short": short, "long": long, "ml": ml}


@pytest.fixture(scope="module")
def predictions(ls_api: LabelStudioAPI, project, backend_server) -> dict[int, dict[str, Any]]:
    """Both tasks predicted through Label Studio's "Retrieve predictions" action."""
    ls_api.retrieve_predictions(project["id"], [project["short"], project["long"]])
    # SHORT came back in the request itself; LONG runs as a job that posts its prediction.
    assert ls_api.list_predictions(project["short"])
    jobs = requests.get(backend_server["url"] + "/jobs", timeout=10).json()["jobs"]
    assert [(j["kind"], j["task"]) for j in jobs] == [("predict", project["long"])]
    job = poll("the long-video job", lambda: (lambda j: j if j["state"] in ("done", "failed") else None)(
        requests.get(f"{backend_server['url']}/jobs/{jobs[0]['id']}", timeout=10).json()))
    assert job["state"] == "done", job
    assert job["stage"] and job["done"] == job["total"] > 0 and job["progress"] == 1.0
    out = {}
    for tid in (project["short"], project["long"]):
        preds = ls_api.list_predictions(tid)
        assert len(preds) == 1, preds
        out[tid] = preds[0]
    assert job["result"]["prediction"] == out[project["long"]]["id"]
    return out


def test_connecting_the_backend_runs_setup_and_creates_its_webhook(ls_api, project, backend_server):
    setup = backend_server["model_dir"] / "projects" / f"{project['id']}.json"
    assert setup.is_file(), "Label Studio did not call /setup"
    assert [w["url"] for w in ls_api.list_webhooks(project["id"])] == [backend_server["url"] + "/webhook"]
    (ml,) = ls_api.list_ml_backends(project["id"])
    assert ml["state"] in ("CO", "CONNECTED") or ml.get("readable_state") == "Connected", ml


@pytest.mark.parametrize("which", ["short", "long"])
def test_predictions_are_stored_with_frames_boxes_and_masks(ls_api, project, predictions, backend_server, which):
    tid, spec = project[which], (SHORT if which == "short" else LONG)
    pred = predictions[tid]
    assert "untrained" in pred["model_version"]
    state = TaskStateStore(backend_server["model_dir"]).load(project["id"], tid)
    tracks = [r for r in pred["result"] if r["type"] == "videorectangle"]
    masks = [r for r in pred["result"] if r["type"] == "brushlabels"]
    assert [t["id"] for t in tracks] == [f"vrshq-{tid}-1", f"vrshq-{tid}-2"]
    # "the red disc" names no label: the config's fallback, Object (issue 13 §4; Person before).
    assert [t["value"]["labels"] for t in tracks] == [["Object"], ["Car"]]
    assert [t["meta"] for t in tracks] == [{"label_rule": "fallback"}, {"label_rule": "predicted_values"}]
    for t in tracks:
        assert t["value"]["framesCount"] == spec.num_frames
        for k in t["value"]["sequence"]:
            assert k["frame"] in range(1, spec.num_frames + 1)
            assert k["time"] == pytest.approx(k["frame"] / spec.fps)
            assert 0 <= k["x"] <= 100 and 0 <= k["y"] <= 100
            assert k["x"] + k["width"] <= 100 + 1e-6 and k["y"] + k["height"] <= 100 + 1e-6
    parsed = parse_annotation(pred["result"], INFO)
    for index, (obj, mask) in enumerate(zip(state.objects, masks)):
        assert mask["item_index"] == index
        assert (mask["original_width"], mask["original_height"]) == (spec.width, spec.height)
        assert np.array_equal(parsed[f"vrshq-{tid}-{obj.obj_id}"].mask, obj.keyframe_mask)
    # The keyframe images went into the task's data, and Label Studio serves them.
    data = ls_api.get_task(tid)["data"]
    assert data["keyframe_frames"] == [o.keyframe + 1 for o in state.objects]
    assert len(data["keyframes"]) == 2
    for url in data["keyframes"]:
        body = ls_api.request("GET", url).content
        assert body[:3] == b"\xff\xd8\xff", url  # a JPEG


# Each keyframe mask on screen must match the backend's own mask: of the mask's pixels that the
# stage shows, at least this share painted, and of the pixels painted, at least this share on the
# mask (measured: 0.9999 and 1.0; the mask moved by one pixel scores about 0.92 on both).
MASK_DRAWN = 0.97
MASK_COLOUR_TOLERANCE = 25  # per RGB channel, from the label's background colour


def _brush_colours() -> dict[str, np.ndarray]:
    """The <BrushLabels> label -> its background colour as RGB."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(TEXT_XML)
    return {label.get("value"): np.array([int(label.get("background")[k:k + 2], 16) for k in (1, 3, 5)])
            for label in root.find("BrushLabels")}


def test_the_browser_shows_the_backends_tracks_and_masks(label_studio, project, predictions, backend_server):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "labelstudio-backend-task.png"
    tid = project["short"]
    seen = show_task(label_studio, project["id"], tid, shot)
    tracks = sorted(r["label"] for r in seen["regions"] if r["type"] == "videorectangleregion")
    masks = sorted(r["label"] for r in seen["regions"] if r["type"] == "brushregion")
    assert seen["videoCanvas"] and seen["videoTimeline"] and seen["timelineRows"] == 2, seen
    assert tracks == ["Car", "Object"] and masks == ["Car", "Object"], seen
    assert seen["keyframeImageSize"] == [SHORT.width, SHORT.height], seen
    assert shot.stat().st_size > 10_000

    # The masks drawn: page k of the keyframe image shows the brush region of item_index k - 1.
    # Compared with the backend's own keyframe masks (its task state), not with the RLE it sent.
    state = TaskStateStore(backend_server["model_dir"]).load(project["id"], tid)
    brushes = {r["item_index"]: r for r in predictions[tid]["result"] if r["type"] == "brushlabels"}
    colours = _brush_colours()
    pages = seen["maskPages"]
    assert [p["page"] for p in pages] == [1, 2] and len(state.objects) == 2, [p["page"] for p in pages]
    for page, obj in zip(pages, state.objects):
        where = f"page {page['page']} ({obj.label})"
        brush = brushes[page["page"] - 1]
        assert brush["id"] == f"vrshq-{tid}-{obj.obj_id}-mask" and brush["value"]["brushlabels"] == [obj.label]
        assert (page["width"], page["height"]) == (SHORT.width, SHORT.height), where
        chars = np.frombuffer(page["painted"].encode(), np.uint8).reshape(SHORT.height, SHORT.width)
        on_screen, painted = chars != ord("."), chars == ord("1")
        assert on_screen.mean() > 0.8, (where, on_screen.mean())  # the stage may crop the edges
        want = obj.keyframe_mask & on_screen
        assert want.sum() >= 100, (where, int(want.sum()))
        hit = int((painted & want).sum())
        assert hit / want.sum() >= MASK_DRAWN, (where, "mask pixels painted", hit / want.sum())
        assert hit / max(1, painted.sum()) >= MASK_DRAWN, (where, "painted pixels on the mask",
                                                            hit / max(1, painted.sum()))
        assert page["rgb"] is not None, where
        off = np.abs(np.array(page["rgb"]) - colours[obj.label]).max()
        assert off <= MASK_COLOUR_TOLERANCE, (where, page["rgb"], colours[obj.label])


def test_a_submitted_correction_is_logged_and_re_propagated(ls_api, project, predictions, backend_server):
    tid = project["short"]
    pred = predictions[tid]
    fixed = np.zeros((SHORT.height, SHORT.width), bool)
    fixed[60:140, 100:200] = True
    result = copy.deepcopy(pred["result"])
    brush = next(r for r in result if r["id"] == f"vrshq-{tid}-2-mask")
    brush["value"]["rle"] = encode_brush(fixed)
    before = len(ls_api.list_predictions(tid))
    annotation = ls_api.create_annotation(tid, result)

    db = backend_server["model_dir"]

    def logged():
        with CorrectionsLog.for_model_dir(db, create=False) as log:
            return [c for c in log.list(project=project["id"], task=tid) if c.annotation == annotation]

    (correction,) = poll("the webhook's correction in the log", logged, timeout=60)
    assert (correction.obj_id, correction.label, correction.event) == (2, "Car", "ANNOTATION_CREATED")
    new = poll("the re-propagated prediction", lambda: ls_api.list_predictions(tid)[before:], timeout=240)
    (repropagated,) = new
    assert {r["id"] for r in repropagated["result"]} == {r["id"] for r in pred["result"]}
    parsed = parse_annotation(repropagated["result"], INFO)
    assert np.array_equal(parsed[f"vrshq-{tid}-2"].mask, fixed)
    assert parsed[f"vrshq-{tid}-2"].label == "Car" and parsed[f"vrshq-{tid}-1"].label == "Object"
    # Object 1 was not corrected: its track is unchanged.
    old = parse_annotation(pred["result"], INFO)
    assert parsed[f"vrshq-{tid}-1"].boxes == old[f"vrshq-{tid}-1"].boxes
    state = TaskStateStore(db).load(project["id"], tid)
    obj = state.object(2)
    keyframe_mask = obj.track.mask(obj.keyframe)
    assert (keyframe_mask & fixed).sum() / (keyframe_mask | fixed).sum() > 0.9


def test_an_interactive_text_prompt_adds_an_object(ls_api, project, predictions):
    tid = project["short"]
    typed = {"from_name": "prompt", "to_name": "video", "type": "textarea",
             "value": {"text": ["the yellow animal"]}}
    answer = ls_api.interactive(project["ml"], tid, {"result": [typed]})
    assert "errors" not in answer, answer
    ids = {(r["type"], r["id"]) for r in answer["data"]["result"]}
    assert ids == {("videorectangle", f"vrshq-{tid}-3"), ("brushlabels", f"vrshq-{tid}-3-mask")}
    labels = {r["value"].get("labels", [None])[0] for r in answer["data"]["result"] if r["type"] == "videorectangle"}
    assert labels == {"Animal"}
    assert len(ls_api.get_task(tid)["data"]["keyframes"]) == 3


def test_a_moved_box_is_a_correction_re_propagated_through_label_studio(ls_api, project, predictions,
                                                                         backend_server):
    """Object 1's box moved on a frame that is no keyframe of its track (the editor adds one there),
    submitted in Label Studio: its webhook logs the box track and the job re-tracks the object
    from the box on that frame (a box correction, kept in the task's state)."""
    tid = project["long"]
    pred = predictions[tid]
    rid = f"vrshq-{tid}-1"
    result = copy.deepcopy(pred["result"])
    track = next(r for r in result if r["type"] == "videorectangle" and r["id"] == rid)
    sequence = track["value"]["sequence"]
    frame = next(f for f in range(5, LONG.num_frames) if f + 1 not in {k["frame"] for k in sequence})
    box = {"x": 30.0, "y": 25.0, "width": 30.0, "height": 40.0}
    sequence.append({"frame": frame + 1, "enabled": True, "rotation": 0, "time": (frame + 1) / LONG.fps, **box})
    sequence.sort(key=lambda k: k["frame"])
    before = len(ls_api.list_predictions(tid))
    annotation = ls_api.create_annotation(tid, result)
    db = backend_server["model_dir"]

    def logged():
        with CorrectionsLog.for_model_dir(db, create=False) as log:
            return [c for c in log.list(project=project["id"], task=tid) if c.annotation == annotation]

    (correction,) = poll("the webhook's box correction in the log", logged, timeout=60)
    assert (correction.obj_id, correction.event, correction.corrected_mask) == (1, "ANNOTATION_CREATED", None)
    assert frame + 1 in {k["frame"] for k in correction.corrected_boxes}
    (repropagated,) = poll("the re-propagated prediction", lambda: ls_api.list_predictions(tid)[before:],
                           timeout=240)
    state = TaskStateStore(db).load(project["id"], tid)
    obj = state.object(1)
    assert [(c.frame, c.kind) for c in obj.corrections] == [(frame, "box")]
    w, h = LONG.width, LONG.height
    assert obj.corrections[0].box == pytest.approx((0.30 * w, 0.25 * h, 0.60 * w, 0.65 * h))
    parsed, old = parse_annotation(repropagated["result"], INFO), parse_annotation(pred["result"], INFO)
    assert parsed[rid].boxes != old[rid].boxes  # object 1 re-tracked
    assert parsed[f"vrshq-{tid}-2"].boxes == old[f"vrshq-{tid}-2"].boxes  # object 2 as it was
