"""A moved box is a correction, through the backend on the tiny models (vrshq plugin).

The annotator moves object 1's box on a frame that is not a keyframe of its track (Label Studio
adds a keyframe there). Interactively the backend re-propagates at once; by webhook it logs the
change and queues the re-propagation (the queue is the stand-in of test_hardening_server.py
that keeps the queue's one-job-per-key promise, as the backend has no Label Studio here; the
job's own work, ``Backend.correct_task``, runs for real). The re-propagated masks are compared
with the plugin's own ``correct`` given the box in pixels, worked out here from the percent box.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest

from tests.backend_fixtures import SPEC, TEXT_XML, next_task_id, text_task
from tests.sam3_fixtures import tiny_sam3_dir  # noqa: F401 - fixture
from tests.test_hardening_server import KeyedQueue
from vrshq.backend.labelstudio.labelconfig import parse_label_config
from vrshq.backend.tasks.state import correction_from_json
from vrshq.plugins.base import Correction
from vrshq.video.reader import open_video

INFO = parse_label_config(TEXT_XML)
N = 6  # the moved frame (0-based; Label Studio's frame 7), not a keyframe of the predicted track


def predicted(client, tid):
    r = client.post("/predict", json={"tasks": [text_task(tid)], "project": "1", "label_config": TEXT_XML})
    assert r.status_code == 200, r.json
    return r.json["results"][0]["result"]


def moved(result: list[dict], tid: int, frame: int, box_px) -> list[dict]:
    """The result with object 1's box moved on ``frame``: a keyframe added there, as the editor does."""
    out = copy.deepcopy(result)
    x0, y0, x1, y1 = box_px
    track = next(r for r in out if r["type"] == "videorectangle" and r["id"] == f"vrshq-{tid}-1")
    sequence = track["value"]["sequence"]
    assert frame + 1 not in {k["frame"] for k in sequence}, "pick a frame that is not a keyframe"
    sequence.append({"frame": frame + 1, "x": 100 * x0 / SPEC.width, "y": 100 * y0 / SPEC.height,
                     "width": 100 * (x1 - x0) / SPEC.width, "height": 100 * (y1 - y0) / SPEC.height,
                     "rotation": 0, "enabled": True, "time": (frame + 1) / SPEC.fps})
    sequence.sort(key=lambda k: k["frame"])
    return out


def webhook(client, tid, result, annotation_id):
    return client.post("/webhook", json={
        "action": "ANNOTATION_UPDATED", "project": {"id": 1, "label_config": TEXT_XML},
        "task": {"id": tid, "data": text_task(tid)["data"]},
        "annotation": {"id": annotation_id, "task": tid, "completed_by": 9, "result": result,
                       "was_cancelled": False, "updated_at": "2026-12-06T10:00:00.000000+00:00"}})


def box_of(truth, frame) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(truth[frame] == 1)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def expected(backend, media_root, before, box):
    """The plugin's own re-propagation of object 1 with the box (the independent reference), and
    with the box 10 px to the right (to show that where the box is decides the masks)."""
    video = open_video(media_root / "clips" / "a.mp4")
    shifted = (box[0] + 10, box[1], box[2] + 10, box[3])
    try:
        return tuple(backend.plugin.correct(video, before.objects, [Correction(1, N, box=b)])[0].track
                     for b in (box, shifted))
    finally:
        video.close()


def assert_re_propagated(after, before, refs, box):
    """Object 1 re-tracked with the box on frame N, every frame as the reference; object 2 as it was.

    The tiny models are untrained: the mask a box gives is not inside the box, so the check is
    equality with the plugin's own answer for that box (which a box 10 px off does not give).
    """
    ref, shifted = refs
    obj = after.object(1)
    assert [(c.frame, c.kind) for c in obj.corrections] == [(N, "box")]
    assert obj.corrections[0].box == pytest.approx(box, abs=1e-6)
    assert obj.track.frames() == ref.frames()
    for f in ref.frames():
        assert np.array_equal(obj.track.mask(f), ref.mask(f)), f"frame {f}"
    assert not np.array_equal(obj.track.mask(N), before.object(1).track.mask(N))
    assert not np.array_equal(obj.track.mask(N), shifted.mask(N))
    assert after.object(2).track == before.object(2).track


def test_a_moved_box_re_propagates_interactively(client, vrshq_backend, media_root, truth):
    tid = next_task_id()
    result = predicted(client, tid)
    before = vrshq_backend.states.load(1, tid)
    box = box_of(truth, N)
    track = next(r for r in moved(result, tid, N, box) if r["id"] == f"vrshq-{tid}-1"
                 and r["type"] == "videorectangle")
    r = client.post("/predict", json={"tasks": [text_task(tid)], "project": "1", "label_config": TEXT_XML,
                                      "params": {"context": {"result": [track]}}})
    assert r.status_code == 200, r.json
    after = vrshq_backend.states.load(1, tid)
    assert_re_propagated(after, before, expected(vrshq_backend, media_root, before, box), box)
    ids = {x["id"] for x in r.json["results"][0]["result"]}
    assert f"vrshq-{tid}-1" in ids and not any(i.startswith(f"vrshq-{tid}-2") for i in ids)
    (row,) = vrshq_backend.corrections.list(project=1, task=tid)
    assert row.event == "interactive" and row.obj_id == 1 and row.corrected_mask is None
    assert N + 1 in {k["frame"] for k in row.corrected_boxes}
    assert N + 1 not in {k["frame"] for k in row.predicted_boxes}


def test_a_moved_box_by_webhook_is_queued_run_and_not_queued_again(client, vrshq_backend, media_root,
                                                                     truth, monkeypatch):
    tid = next_task_id()
    result = predicted(client, tid)
    before = vrshq_backend.states.load(1, tid)
    box = box_of(truth, N)
    annotation = moved(result, tid, N, box)
    queue = KeyedQueue()
    writer = vrshq_backend.writer
    monkeypatch.setattr(vrshq_backend, "submit", queue.submit)
    monkeypatch.setattr(vrshq_backend, "writer", lambda project: SimpleNamespace(configured=True))
    r = webhook(client, tid, annotation, annotation_id=91)
    assert r.status_code == 201, r.json
    assert r.json["result"]["corrections"] == 1 and r.json["result"]["objects"] == [1]
    (kind, key, payload), = queue.calls
    corrections = [correction_from_json(c) for c in payload["corrections"]]
    assert kind == "correct" and [(c.obj_id, c.frame, c.kind) for c in corrections] == [(1, N, "box")]
    assert corrections[0].box == pytest.approx(box, abs=1e-6)
    (row,) = vrshq_backend.corrections.list(project=1, task=tid)
    assert N + 1 in {k["frame"] for k in row.corrected_boxes} and row.corrected_mask is None
    # a re-delivery while the job waits joins it
    again = webhook(client, tid, annotation, annotation_id=91)
    assert again.json["result"]["job"] == r.json["result"]["job"] and len(queue.jobs) == 1
    # the job's work
    monkeypatch.setattr(vrshq_backend, "writer", writer)
    vrshq_backend.correct_task("1", tid, corrections, latest_only=True, info=INFO)
    after = vrshq_backend.states.load(1, tid)
    assert_re_propagated(after, before, expected(vrshq_backend, media_root, before, box), box)
    # once the state carries the box, a re-delivery queues nothing and logs nothing
    monkeypatch.setattr(vrshq_backend, "writer", lambda project: SimpleNamespace(configured=True))
    calls = len(queue.calls)
    done = webhook(client, tid, annotation, annotation_id=91)
    assert done.json["result"] == {"corrections": 0, "job": None, "objects": []}, done.json
    assert len(queue.calls) == calls and len(vrshq_backend.corrections.list(project=1, task=tid)) == 1


def test_a_plugin_without_box_corrections_only_logs_the_moved_box(client, vrshq_backend, truth,
                                                                    monkeypatch):
    tid = next_task_id()
    result = predicted(client, tid)
    before = vrshq_backend.states.load(1, tid)
    queue = KeyedQueue()
    monkeypatch.setattr(vrshq_backend, "submit", queue.submit)
    monkeypatch.setattr(vrshq_backend, "writer", lambda project: SimpleNamespace(configured=True))
    monkeypatch.setattr(type(vrshq_backend.plugin), "correction_kinds", frozenset({"mask"}))
    r = webhook(client, tid, moved(result, tid, N, box_of(truth, N)), annotation_id=92)
    assert r.json["result"] == {"corrections": 1, "job": None, "objects": []}, r.json
    assert queue.calls == [] and vrshq_backend.states.load(1, tid).object(1).track == before.object(1).track


def test_a_moved_box_after_a_mask_fix_on_its_frame_is_applied_by_its_job(client, vrshq_backend, truth,
                                                                          monkeypatch):
    """A queued job applies only its object's newest correction of a frame (jobs may run out of
    order); a box moved on a frame whose mask was fixed earlier is the newest there, though the
    log's newest *mask* row of that frame is the older fix."""
    from vrshq.masks import encode_brush

    tid = next_task_id()
    result = predicted(client, tid)
    k = vrshq_backend.states.load(1, tid).object(1).keyframe
    fixed = np.zeros((SPEC.height, SPEC.width), bool)
    fixed[20:60, 20:60] = True
    brush = next(r for r in result if r["type"] == "brushlabels" and r["id"] == f"vrshq-{tid}-1-mask")
    brush = {**brush, "value": {**brush["value"], "rle": encode_brush(fixed)}}
    r = client.post("/predict", json={"tasks": [text_task(tid)], "project": "1", "label_config": TEXT_XML,
                                      "params": {"context": {"result": [brush]}}})
    assert r.status_code == 200, r.json
    # the annotator then moves the box on that frame, in the prediction the fix made
    annotation = copy.deepcopy(predicted(client, tid))
    track = next(r for r in annotation if r["type"] == "videorectangle" and r["id"] == f"vrshq-{tid}-1")
    first = next(key for key in track["value"]["sequence"] if key["frame"] == k + 1)
    first.update(x=25.0, y=20.0, width=40.0, height=50.0)
    queue, writer = KeyedQueue(), vrshq_backend.writer
    monkeypatch.setattr(vrshq_backend, "submit", queue.submit)
    monkeypatch.setattr(vrshq_backend, "writer", lambda project: SimpleNamespace(configured=True))
    assert webhook(client, tid, annotation, annotation_id=93).json["result"]["objects"] == [1]
    monkeypatch.setattr(vrshq_backend, "writer", writer)  # the job's own
    (_, _, payload), = queue.calls
    corrections = [correction_from_json(c) for c in payload["corrections"]]
    assert [(c.frame, c.kind) for c in corrections] == [(k, "box")]
    assert corrections[0].box == pytest.approx((40.0, 24.0, 104.0, 84.0))  # 25..65% of 160, 20..70% of 120
    state = vrshq_backend.correct_task("1", tid, corrections, latest_only=True, info=INFO)
    assert state is not None, "the job skipped the newest correction of the frame"
    assert [(c.frame, c.kind) for c in state.object(1).corrections] == [(k, "box")]


def test_a_moved_box_of_a_sam3_instance_re_propagates_with_sam3s_tracker(tiny_sam3_dir, media_root,  # noqa: F811
                                                                          tmp_path):
    from tests.backend_fixtures import assert_as_plugin_corrects, make_backend, predicted_with

    pytest.importorskip("transformers")
    backend = make_backend(tiny_sam3_dir, media_root, tmp_path, plugin="sam3", max_objects=64)
    try:
        client, task, before, predicted = predicted_with(backend, SPEC.fps, TEXT_XML)
        tid = task["id"]
        obj = before.objects[0]
        rid = f"vrshq-{tid}-{obj.obj_id}"
        track = copy.deepcopy(next(x for x in predicted
                                   if x["type"] == "videorectangle" and x["id"] == rid))
        frame = next(f for f in range(SPEC.num_frames) if f + 1 not in
                     {k["frame"] for k in track["value"]["sequence"]} and f != obj.keyframe)
        track["value"]["sequence"].append({"frame": frame + 1, "x": 25.0, "y": 20.0, "width": 40.0,
                                           "height": 50.0, "enabled": True, "rotation": 0})
        track["value"]["sequence"].sort(key=lambda k: k["frame"])
        r = client.post("/predict", json={"tasks": [task], "project": "1", "label_config": TEXT_XML,
                                          "params": {"context": {"result": [track]}}})
        assert r.status_code == 200, r.get_data(as_text=True)[:500]
        after = backend.states.load("1", tid).object(obj.obj_id)
        pixels = (0.25 * SPEC.width, 0.20 * SPEC.height, 0.65 * SPEC.width, 0.70 * SPEC.height)
        assert [(c.frame, c.kind) for c in after.corrections] == [(frame, "box")]
        assert after.corrections[0].box == pytest.approx(pixels)
        assert_as_plugin_corrects(backend, media_root / "clips" / "a.mp4", before.objects,
                                  Correction(obj.obj_id, frame, box=pixels), after)
    finally:
        backend.close()
