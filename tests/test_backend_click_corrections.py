"""Clicks on a mask page are a correction, through the backend on the tiny models (vrshq plugin).

The annotator puts an Include click inside object 1 and an Exclude click away from it on one of
object 1's extra mask pages (a frame that is not its keyframe), as Label Studio's KeyPointLabels
sends them (percent of the page image). By webhook the backend logs the clicks and queues the
re-propagation (the queue stand-in of test_hardening_server.py; the job's own work,
``Backend.correct_task``, runs for real); interactively it re-propagates at once. The masks are
compared with the plugin's own ``correct`` given the clicks in pixels, chosen here in pixels
first and written as percent for the annotation.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest

from tests.backend_fixtures import SPEC, TEXT_XML, next_task_id, text_task
from tests import sam3_fixtures
from tests.test_backend_box_corrections import predicted, webhook
from tests.test_hardening_server import KeyedQueue
from vrshq.backend.labelstudio.labelconfig import parse_label_config
from vrshq.backend.tasks.state import correction_from_json
from vrshq.masks import encode_brush
from vrshq.plugins.base import Correction
from vrshq.video.reader import open_video

INFO = parse_label_config(TEXT_XML)
tiny_sam3_dir = sam3_fixtures.tiny_sam3_dir  # the fixture, for the sam3 test


def extra_page(result: list[dict], tid: int) -> tuple[int, int]:
    """(page index, 0-based frame) of object 1's first extra mask page (``-mask-f<N>``)."""
    pages = sorted((int(r["id"].rsplit("-f", 1)[1]) - 1, r["item_index"]) for r in result
                   if r["type"] == "brushlabels" and r["id"].startswith(f"vrshq-{tid}-1-mask-f"))
    assert pages, "object 1 has no extra mask page"
    frame, page = pages[0]
    return page, frame


def clicks_in_pixels(truth: np.ndarray, frame: int) -> tuple[list[tuple[float, float]], list[int]]:
    """An Include click at object 1's centre on ``frame`` and an Exclude click in a far corner.
    x and y differ a lot, so swapping them moves the click."""
    ys, xs = np.nonzero(truth[frame] == 1)
    inside = (float(round(xs.mean())) + 0.5, float(round(ys.mean())) + 0.5)
    away = (SPEC.width - 12.5, 8.5) if inside[0] < SPEC.width / 2 else (12.5, SPEC.height - 8.5)
    return [inside, away], [1, 0]


def keypoints(page: int, points, labels, ids: str = "kp") -> list[dict]:
    """Label Studio's keypointlabels results for the pixel clicks on ``page`` (percent of the image)."""
    return [{"id": f"{ids}{k}", "from_name": "clicks", "to_name": "keyframes", "type": "keypointlabels",
             "item_index": page, "original_width": SPEC.width, "original_height": SPEC.height,
             "image_rotation": 0,
             "value": {"x": 100 * x / SPEC.width, "y": 100 * y / SPEC.height, "width": 0.6,
                       "keypointlabels": ["Include" if lb else "Exclude"]}}
            for k, ((x, y), lb) in enumerate(zip(points, labels))]


def reference(backend, media_root, before, frame, points, labels):
    """The plugin's own re-propagation of object 1 from the clicks (the independent reference),
    and from the same clicks with the labels flipped (to show that the labels decide the masks)."""
    video = open_video(media_root / "clips" / "a.mp4")
    try:
        return tuple(backend.plugin.correct(video, before.objects, [Correction(1, frame, points=points,
                                                                               point_labels=lb)])[0].track
                     for lb in (labels, [1 - v for v in labels]))
    finally:
        video.close()


def assert_re_propagated(after, before, refs, frame, points, labels):
    ref, flipped = refs
    obj = after.object(1)
    assert [(c.frame, c.kind) for c in obj.corrections] == [(frame, "points")]
    assert np.allclose(obj.corrections[0].points, points, atol=1e-6)
    assert list(obj.corrections[0].point_labels) == labels
    assert obj.track.frames() == ref.frames()
    for f in ref.frames():
        assert np.array_equal(obj.track.mask(f), ref.mask(f)), f"frame {f}"
    assert not all(np.array_equal(ref.mask(f), flipped.mask(f)) for f in ref.frames()), \
        "the labels do not change the masks: the test could not see them flipped"
    assert after.object(2).track == before.object(2).track


class Queued(KeyedQueue):
    """The backend's jobs go to a keyed queue stand-in while on (the writer counts as configured)."""

    def __init__(self, backend, monkeypatch):
        super().__init__()
        self.backend, self.monkeypatch, self.writer = backend, monkeypatch, backend.writer
        monkeypatch.setattr(backend, "submit", self.submit)

    def on(self):
        self.monkeypatch.setattr(self.backend, "writer", lambda project: SimpleNamespace(configured=True))
        return self

    def off(self):
        self.monkeypatch.setattr(self.backend, "writer", self.writer)


@pytest.fixture
def queued(vrshq_backend, monkeypatch):
    return Queued(vrshq_backend, monkeypatch)


def test_clicks_on_an_extra_page_by_webhook_are_queued_run_echoed_and_not_queued_again(
        client, vrshq_backend, media_root, truth, queued, monkeypatch):
    tid = next_task_id()
    result = predicted(client, tid)
    before = vrshq_backend.states.load(1, tid)
    page, frame = extra_page(result, tid)
    assert frame != before.object(1).keyframe
    points, labels = clicks_in_pixels(truth, frame)
    annotation = copy.deepcopy(result) + keypoints(page, points, labels)
    queued.on()
    r = webhook(client, tid, annotation, annotation_id=81)
    assert r.status_code == 201, r.json
    assert r.json["result"]["corrections"] == 1 and r.json["result"]["objects"] == [1]
    (kind, _, payload), = queued.calls
    corrections = [correction_from_json(c) for c in payload["corrections"]]
    assert kind == "correct" and [(c.obj_id, c.frame, c.kind) for c in corrections] == [(1, frame, "points")]
    assert np.allclose(corrections[0].points, points, atol=1e-6) and corrections[0].point_labels == labels
    (row,) = vrshq_backend.corrections.list(project=1, task=tid)
    assert row.frame == frame and row.corrected_mask is None and row.corrected_boxes is None
    assert np.allclose([(c["x"], c["y"], c["label"]) for c in row.corrected_clicks],
                       [(x, y, lb) for (x, y), lb in zip(points, labels)], rtol=0, atol=1e-6)
    # the clicked page's predicted mask was not approved: no review of it (the export's
    # "reviewed" frames are ground truth); the other pages shown unchanged were reviewed
    reviews = {(r.obj_id, r.frame): r.status for r in vrshq_backend.states.load(1, tid).reviews}
    assert (1, frame) not in reviews and reviews[(1, before.object(1).keyframe)] == "reviewed"
    # a re-delivery while the job waits joins it
    again = webhook(client, tid, annotation, annotation_id=81)
    assert again.json["result"]["job"] == r.json["result"]["job"] and len(queued.jobs) == 1
    # the job's work
    queued.off()
    state = vrshq_backend.correct_task("1", tid, corrections, latest_only=True, info=INFO)
    assert state is not None
    after = vrshq_backend.states.load(1, tid)
    assert_re_propagated(after, before, reference(vrshq_backend, media_root, before, frame, points, labels),
                         frame, points, labels)
    # the new prediction echoes the clicks on the page of their frame; submitting it queues nothing
    shown = predicted(client, tid)
    echoed = [r for r in shown if r["type"] == "keypointlabels"]
    assert [(r["item_index"], r["value"]["keypointlabels"]) for r in echoed] == \
        [(page, ["Include"]), (page, ["Exclude"])]
    assert np.allclose([(r["value"]["x"], r["value"]["y"]) for r in echoed],
                       [(100 * x / SPEC.width, 100 * y / SPEC.height) for x, y in points], rtol=0, atol=1e-9)
    calls = len(queued.calls)
    queued.on()
    for body in (annotation, shown):
        done = webhook(client, tid, body, annotation_id=81)
        assert done.json["result"] == {"corrections": 0, "job": None, "objects": []}, done.json
    assert len(queued.calls) == calls and len(vrshq_backend.corrections.list(project=1, task=tid)) == 1
    # other clicks on the same page are a new correction there (logged and queued)
    fewer = copy.deepcopy(result) + keypoints(page, points[:1], labels[:1])
    r = webhook(client, tid, fewer, annotation_id=81)
    assert r.json["result"]["corrections"] == 1 and r.json["result"]["objects"] == [1], r.json
    (_, _, payload) = queued.calls[-1]
    (c,) = [correction_from_json(c) for c in payload["corrections"]]
    assert (c.frame, c.point_labels) == (frame, [1]) and np.allclose(c.points, points[:1], atol=1e-6)


def test_clicks_given_interactively_re_propagate_at_once(client, vrshq_backend, media_root, truth,
                                                          monkeypatch):
    tid = next_task_id()
    result = predicted(client, tid)
    before = vrshq_backend.states.load(1, tid)
    page, frame = extra_page(result, tid)
    points, labels = clicks_in_pixels(truth, frame)
    r = client.post("/predict", json={"tasks": [text_task(tid)], "project": "1", "label_config": TEXT_XML,
                                      "params": {"context": {"result": keypoints(page, points, labels)}}})
    assert r.status_code == 200, r.json
    after = vrshq_backend.states.load(1, tid)
    assert_re_propagated(after, before, reference(vrshq_backend, media_root, before, frame, points, labels),
                         frame, points, labels)
    (row,) = vrshq_backend.corrections.list(project=1, task=tid)
    assert row.event == "interactive" and row.frame == frame and len(row.corrected_clicks) == 2
    answer = r.json["results"][0]["result"]
    echoed = [x for x in answer if x["type"] == "keypointlabels"]
    assert [x["item_index"] for x in echoed] == [page, page]
    # the editor sends the echoed clicks back (their ids are the backend's): nothing new to run
    runs = []
    correct_task = vrshq_backend.correct_task
    monkeypatch.setattr(vrshq_backend, "correct_task", lambda *a, **k: runs.append(a) or correct_task(*a, **k))
    r = client.post("/predict", json={"tasks": [text_task(tid)], "project": "1", "label_config": TEXT_XML,
                                      "params": {"context": {"result": echoed}}})
    assert r.status_code == 200 and runs == [], r.json
    assert len(vrshq_backend.corrections.list(project=1, task=tid)) == 1


def smart(click: dict, positive: bool = True) -> dict:
    """``click`` as Label Studio's smart (Auto-Detect) key point tool sends it: ``is_positive``
    (false for an Alt+click) and the label in ``value.labels`` too (tools/KeyPoint.js,
    regions/KeyPointRegion.jsx serialize, Label Studio 1.23.2)."""
    out = copy.deepcopy(click)
    out["is_positive"] = positive
    out["value"]["labels"] = list(out["value"]["keypointlabels"])
    return out


def interactive(client, tid, context):
    r = client.post("/predict", json={"tasks": [text_task(tid)], "project": "1", "label_config": TEXT_XML,
                                      "params": {"context": {"result": context}}})
    assert r.status_code == 200, r.json
    return r.json["results"][0]["result"]


def test_a_smart_click_sent_again_before_its_answer_was_accepted_counts_once(
        client, vrshq_backend, media_root, truth):
    """Label Studio sends every smart click of the label on the page until an answer is
    accepted (accepting deletes them): a click sent again is the one the page already has."""
    tid = next_task_id()
    result = predicted(client, tid)
    before = vrshq_backend.states.load(1, tid)
    page, frame = extra_page(result, tid)
    (inside, away), _ = clicks_in_pixels(truth, frame)
    first, second = (smart(c) for c in keypoints(page, [inside, away], [1, 1], ids="lsf"))
    interactive(client, tid, [first])
    interactive(client, tid, [first, second])
    after = vrshq_backend.states.load(1, tid)
    assert_re_propagated(after, before, reference(vrshq_backend, media_root, before, frame, [inside, away], [1, 1]),
                         frame, [inside, away], [1, 1])
    assert [len(r.corrected_clicks) for r in vrshq_backend.corrections.list(project=1, task=tid)] == [1, 2]


def test_an_alt_click_of_the_smart_tool_is_negative_whatever_its_label(
        client, vrshq_backend, media_root, truth, queued):
    tid = next_task_id()
    result = predicted(client, tid)
    before = vrshq_backend.states.load(1, tid)
    page, frame = extra_page(result, tid)
    points, labels = clicks_in_pixels(truth, frame)  # Include inside, Exclude away
    sent = [smart(c, positive=bool(lb)) for c, lb in zip(keypoints(page, points, [1, 1], ids="lsf"), labels)]
    answer = interactive(client, tid, sent)
    after = vrshq_backend.states.load(1, tid)
    assert_re_propagated(after, before, reference(vrshq_backend, media_root, before, frame, points, labels),
                         frame, points, labels)
    echoed = [r["value"]["keypointlabels"] for r in answer if r["type"] == "keypointlabels"]
    assert echoed == [["Include"], ["Exclude"]]
    # a Submit of the clicks as sent (the answer's masks accepted, its echoed clicks not): the
    # same correction, nothing new
    shown = [r for r in predicted(client, tid) if r["type"] != "keypointlabels"]
    queued.on()
    r = webhook(client, tid, shown + sent, annotation_id=86)
    assert r.json["result"] == {"corrections": 0, "job": None, "objects": []}, r.json
    assert queued.calls == [] and len(vrshq_backend.corrections.list(project=1, task=tid)) == 1


def test_a_queued_job_whose_clicks_were_replaced_skips_them(client, vrshq_backend, truth, queued):
    """Jobs may run out of order: the older clicks' job must not bring them back over newer ones."""
    tid = next_task_id()
    result = predicted(client, tid)
    before = vrshq_backend.states.load(1, tid)
    page, frame = extra_page(result, tid)
    points, labels = clicks_in_pixels(truth, frame)
    queued.on()
    for n, clicks in enumerate((keypoints(page, points, labels), keypoints(page, points[:1], labels[:1]))):
        assert webhook(client, tid, result + clicks, annotation_id=85 + n).json["result"]["objects"] == [1]
    older, newer = ([correction_from_json(c) for c in payload["corrections"]] for _, _, payload in queued.calls)
    queued.off()
    assert vrshq_backend.correct_task("1", tid, older, latest_only=True, info=INFO) is None
    assert vrshq_backend.states.load(1, tid).object(1).track == before.object(1).track
    state = vrshq_backend.correct_task("1", tid, newer, latest_only=True, info=INFO)
    assert [(c.frame, c.point_labels) for c in state.object(1).corrections] == [(frame, [1])]


def test_a_mask_edited_on_the_same_page_wins_over_its_clicks(client, vrshq_backend, truth, queued):
    tid = next_task_id()
    result = predicted(client, tid)
    page, frame = extra_page(result, tid)
    fixed = truth[frame] == 1
    annotation = copy.deepcopy(result)
    brush = next(r for r in annotation if r["id"] == f"vrshq-{tid}-1-mask-f{frame + 1}")
    brush["value"]["rle"] = encode_brush(fixed)
    annotation += keypoints(page, *clicks_in_pixels(truth, frame))
    r = webhook(client, tid, annotation, annotation_id=82) if queued.on() else None
    assert r.json["result"]["objects"] == [1], r.json
    (_, _, payload), = queued.calls
    (c,) = [correction_from_json(c) for c in payload["corrections"]]
    assert (c.obj_id, c.frame, c.kind) == (1, frame, "mask") and np.array_equal(c.mask, fixed)
    (row,) = vrshq_backend.corrections.list(project=1, task=tid)
    assert row.corrected_mask is not None and row.corrected_clicks is None


def test_a_plugin_without_clicks_only_logs_them(client, vrshq_backend, truth, queued, monkeypatch):
    tid = next_task_id()
    result = predicted(client, tid)
    before = vrshq_backend.states.load(1, tid)
    page, frame = extra_page(result, tid)
    monkeypatch.setattr(type(vrshq_backend.plugin), "correction_kinds", frozenset({"mask", "box"}))
    queued.on()
    r = webhook(client, tid, result + keypoints(page, *clicks_in_pixels(truth, frame)), annotation_id=83)
    assert r.json["result"] == {"corrections": 1, "job": None, "objects": []}, r.json
    assert queued.calls == [] and vrshq_backend.states.load(1, tid).object(1).track == before.object(1).track
    (row,) = vrshq_backend.corrections.list(project=1, task=tid)
    assert row.frame == frame and len(row.corrected_clicks) == 2


def test_a_click_on_the_on_demand_placeholder_page_is_left_out(client, vrshq_backend, truth, queued):
    tid = next_task_id()
    result = predicted(client, tid)
    page, frame = extra_page(result, tid)
    pages = len(client_pages(vrshq_backend, tid))
    (stray,) = keypoints(pages, [(20.5, 30.5)], [1])  # the grey placeholder after the real pages
    queued.on()
    r = webhook(client, tid, result + [stray] + keypoints(page, *clicks_in_pixels(truth, frame)),
                annotation_id=85)
    assert r.status_code == 201 and r.json["result"]["objects"] == [1], r.json
    (row,) = vrshq_backend.corrections.list(project=1, task=tid)  # the real page's clicks only
    assert row.frame == frame and len(row.corrected_clicks) == 2


def client_pages(backend, tid):
    from vrshq.backend.labelstudio.pages import all_pages

    return all_pages(backend.states.load(1, tid))


@pytest.mark.parametrize("change, message", [
    ({"item_index": 99}, "page 99"),
    ({"value": {"x": 120.0, "y": 10.0, "keypointlabels": ["Include"]}}, "x must be a number in 0..100"),
    ({"value": {"x": 10.0, "y": -1.0, "keypointlabels": ["Include"]}}, "y must be a number in 0..100"),
    ({"value": {"x": 10.0, "y": 10.0, "keypointlabels": ["Maybe"]}}, "'Maybe' is not one of"),
    ({"value": {"x": 10.0, "y": 10.0, "keypointlabels": []}}, "exactly one label"),
])
def test_bad_clicks_are_a_400_naming_the_problem(client, vrshq_backend, truth, queued, change, message):
    tid = next_task_id()
    result = predicted(client, tid)
    page, frame = extra_page(result, tid)
    (click,) = keypoints(page, [(20.5, 30.5)], [1])
    queued.on()
    r = webhook(client, tid, result + [{**click, **change}], annotation_id=84)
    assert r.status_code == 400 and message in r.json["error"], r.json
    assert queued.calls == [] and vrshq_backend.corrections.list(project=1, task=tid) == []
    queued.off()
    r = client.post("/predict", json={"tasks": [text_task(tid)], "project": "1", "label_config": TEXT_XML,
                                      "params": {"context": {"result": [{**click, **change}]}}})
    assert r.status_code == 400 and message in r.json["error"], r.json


def test_clicks_on_a_sam3_instance_re_propagate_with_sam3s_tracker(tiny_sam3_dir, media_root,
                                                                    tmp_path):
    from tests.backend_fixtures import assert_as_plugin_corrects, make_backend, predicted_with
    from vrshq.backend.labelstudio.pages import all_pages

    backend = make_backend(tiny_sam3_dir, media_root, tmp_path, plugin="sam3", max_objects=64)
    try:
        client, task, before, _ = predicted_with(backend, SPEC.fps, TEXT_XML)
        tid = task["id"]
        page, (obj, frame) = next((i, (o, f)) for i, (o, f) in enumerate(all_pages(before)) if f != o.keyframe)
        points, labels = [(40.5, 30.5), (120.5, 90.5)], [1, 0]
        r = client.post("/predict", json={"tasks": [task], "project": "1", "label_config": TEXT_XML,
                                          "params": {"context": {"result": keypoints(page, points, labels)}}})
        assert r.status_code == 200, r.get_data(as_text=True)[:500]
        after = backend.states.load("1", tid).object(obj.obj_id)
        assert [(c.frame, c.kind, c.point_labels) for c in after.corrections] == [(frame, "points", labels)]
        assert np.allclose(after.corrections[0].points, points, atol=1e-6)
        assert_as_plugin_corrects(backend, media_root / "clips" / "a.mp4", before.objects,
                                  Correction(obj.obj_id, frame, points=points, point_labels=labels), after)
    finally:
        backend.close()
