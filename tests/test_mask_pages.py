"""Issue 14 §2: mask pages beyond the keyframe, corrections on any page's frame, frames on demand.

Driven through the backend's HTTP app on the tiny models and the real ffmpeg-encoded synthetic
video; Label Studio's two task-data calls and its prediction post are recorded by a stand-in
(the real Label Studio round trip of the keyframe pages is in test_labelstudio_e2e.py).
Expected values come from the drawn masks themselves and from the rules written out here.
"""

from __future__ import annotations

import copy
import time
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from vrshq.backend.labelstudio.labelconfig import parse_label_config
from vrshq.backend.labelstudio.predictions import (
    page_frame,
    page_region_id,
    parse_annotation,
    track_region_id,
)
from vrshq.backend.labelstudio.strips import frames_to_check
from vrshq.backend.tasks.state import TaskState
from vrshq.masks import Track, decode_brush, encode_brush
from tests.backend_fixtures import SPEC, TEXT_XML, next_task_id, text_task
from tests.test_overlay_backend import FakeLabelStudio

INFO = parse_label_config(TEXT_XML)


class RecordingLabelStudio(FakeLabelStudio):
    """The task-data calls, and the predictions a re-propagation job posts."""

    def __init__(self) -> None:
        super().__init__()
        self.predictions: list[tuple[int, list]] = []

    def create_prediction(self, task: int, result: list, score: float, model_version: str) -> int:
        self.predictions.append((int(task), result))
        return len(self.predictions)


@pytest.fixture
def ls(vrshq_backend, monkeypatch) -> RecordingLabelStudio:
    fake = RecordingLabelStudio()
    monkeypatch.setattr(vrshq_backend, "writer", lambda project: fake)
    return fake


def square(y0: int, x0: int, size: int) -> np.ndarray:
    m = np.zeros((SPEC.height, SPEC.width), bool)
    m[y0:y0 + size, x0:x0 + size] = True
    return m


def _predict(client, ls, tid):
    task = text_task(tid)
    ls.data[tid] = dict(task["data"])
    r = client.post("/predict", json={"tasks": [task], "project": "1", "label_config": TEXT_XML})
    assert r.status_code == 200, r.json
    return r.json["results"][0]["result"]


def _brush(results, rid):
    return next(r for r in results if r["type"] == "brushlabels" and r["id"] == rid)


def _webhook(client, tid, result, annotation_id):
    return client.post("/webhook", json={
        "action": "ANNOTATION_UPDATED", "project": {"id": 1, "label_config": TEXT_XML},
        "task": {"id": tid, "data": text_task(tid)["data"]},
        "annotation": {"id": annotation_id, "task": tid, "completed_by": 9, "result": result,
                       "was_cancelled": False, "updated_at": f"2026-12-06T20:0{annotation_id}:00+00:00"}})


def _wait(backend, job_id, timeout=120.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        job = backend.job(job_id)
        if job is not None and job.state not in ("queued", "running"):
            assert job.state == "done", job.error
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


# --- the ranking and the ids ------------------------------------------------------------------

def _scored(scores: list[float]) -> Track:
    t = Track(1, 8, 8)
    for f, s in enumerate(scores):
        t.set(f, np.ones((8, 8), bool), score=s)  # same area everywhere: no events, no jumps
    return t


def test_low_object_scores_are_a_signal_taken_in_turn_with_distance():
    # 10 frames, anchor 0. Lowest scores: 5 (-3), then 2 and 7 (-1, a tie: the lower frame first);
    # farthest from the anchor: 9, 8, ... Taken in turn: low 5, far 9, low 2, far 8, low 7.
    track = _scored([4, 3, -1, 3, 3, -3, 3, -1, 3, 3])
    assert frames_to_check(track, 10, [0], 1) == [5]
    assert frames_to_check(track, 10, [0], 2) == [5, 9]
    assert frames_to_check(track, 10, [0], 4) == [2, 5, 8, 9]
    assert frames_to_check(track, 10, [0], 5) == [2, 5, 7, 8, 9]
    # An anchor (a corrected frame) is never a low-score pick; excluded frames are never picked.
    assert frames_to_check(track, 10, [0, 5], 1) == [2]
    assert frames_to_check(track, 10, [0], 2, exclude=[5, 9]) == [2, 8]


def test_page_ids_name_their_object_and_frame():
    assert page_region_id("vrshq-7-2", 119) == "vrshq-7-2-mask-f120"
    assert page_frame("vrshq-7-2-mask-f120") == 119
    assert track_region_id("vrshq-7-2-mask-f120") == "vrshq-7-2"
    assert track_region_id("vrshq-7-2-mask") == "vrshq-7-2"
    assert page_frame("vrshq-7-2-mask") is None and page_frame("vrshq-7-2-mask-f0") is None
    mask = square(10, 10, 20)
    results = [{"id": "Ab-mask-f3", "from_name": "mask", "to_name": "keyframes", "type": "brushlabels",
                "item_index": 4, "original_width": SPEC.width, "original_height": SPEC.height,
                "value": {"format": "rle", "rle": encode_brush(mask), "brushlabels": ["Car"]}}]
    region = parse_annotation(results, INFO)["Ab"]
    assert region.mask is None and list(region.pages) == [2] and region.page_items == {2: 4}
    assert np.array_equal(region.pages[2], mask)


def test_a_state_written_before_pages_reads_with_keyframe_pages_only(client, vrshq_backend, ls):
    tid = next_task_id()
    _predict(client, ls, tid)
    doc = vrshq_backend.states.load(1, tid).to_json()
    del doc["pages"], doc["page_urls"]
    old = TaskState.from_json(doc)
    assert old.pages == [] and old.page_urls == [] and len(old.objects) == 2


# --- pages on a prediction --------------------------------------------------------------------

def test_a_prediction_has_k_extra_pages_per_object_after_the_keyframe_pages(client, vrshq_backend, ls, media_root):
    tid = next_task_id()
    results = _predict(client, ls, tid)
    state = vrshq_backend.states.load(1, tid)
    k = vrshq_backend.config.mask_pages
    assert k == 2
    for obj in state.objects:
        frames = [p.frame for p in state.pages if p.obj_id == obj.obj_id]
        # The ranking's own choice, with the keyframe left out (it has its page already).
        assert frames == frames_to_check(obj.track, state.frames_count, [obj.keyframe], k,
                                         exclude=[obj.keyframe])
    data = ls.data[tid]
    n = len(state.objects)
    # ... and the on-demand page last (tests/test_demand_page.py): no frame, no object
    assert len(data["keyframes"]) == n + len(state.pages) + 1 == n + k * n + 1
    assert data["keyframe_frames"] == [o.keyframe + 1 for o in state.objects] + [p.frame + 1 for p in state.pages] + [0]
    assert data["keyframe_objects"] == [o.obj_id for o in state.objects] + [p.obj_id for p in state.pages] + [0]
    for i, page in enumerate(state.pages, start=n):
        obj = state.object(page.obj_id)
        result = _brush(results, f"vrshq-{tid}-{obj.obj_id}-mask-f{page.frame + 1}")
        assert result["item_index"] == i
        assert np.array_equal(decode_brush(result["value"]["rle"], SPEC.height, SPEC.width),
                              obj.track.mask(page.frame))
        # The page image is the frame with its caption in the corner: black behind white text.
        path = media_root / unquote(data["keyframes"][i].split("?d=", 1)[1])
        assert path.name == f"page-obj{obj.obj_id}-f{page.frame + 1}.jpg"
        img = np.asarray(Image.open(path).convert("L")).astype(int)
        corner = img[0:12, 0:40]
        assert corner.min() < 40 and corner.max() > 200  # black box, white text
        video = vrshq_backend.open_video("1", tid, state.video, state.fps)
        try:
            raw = np.asarray(Image.fromarray(video.frame(page.frame)).convert("L"), dtype=int)
        finally:
            video.close()
        assert np.abs(img[20:, :] - raw[20:, :]).mean() < 8  # the rest is the frame itself


# --- corrections on extra pages ---------------------------------------------------------------

def test_fixes_on_two_pages_by_webhook_both_stay_exactly_on_their_frames(client, vrshq_backend, ls):
    tid = next_task_id()
    results = _predict(client, ls, tid)
    state = vrshq_backend.states.load(1, tid)
    a, b = [p.frame for p in state.pages if p.obj_id == 1][:2]
    fix_a, fix_b = square(10, 20, 30), square(50, 90, 25)

    first = copy.deepcopy(results)
    _brush(first, f"vrshq-{tid}-1-mask-f{a + 1}")["value"]["rle"] = encode_brush(fix_a)
    r = _webhook(client, tid, first, 1)
    assert r.status_code == 201 and r.json["result"]["objects"] == [1], r.json
    _wait(vrshq_backend, r.json["result"]["job"])
    (row,) = vrshq_backend.corrections.list(project=1, task=tid)
    assert row.frame == a and row.obj_id == 1
    before = state.object(1).track.mask(a)
    from vrshq.masks import decode_rle
    assert np.array_equal(decode_rle(row.predicted_mask), before)
    assert np.array_equal(decode_rle(row.corrected_mask), fix_a)

    # The annotator starts from the re-propagated prediction and fixes page b.
    second = copy.deepcopy(ls.predictions[-1][1])
    _brush(second, f"vrshq-{tid}-1-mask-f{b + 1}")["value"]["rle"] = encode_brush(fix_b)
    r = _webhook(client, tid, second, 2)
    assert r.status_code == 201 and r.json["result"]["corrections"] == 1, r.json
    _wait(vrshq_backend, r.json["result"]["job"])
    after = vrshq_backend.states.load(1, tid)
    obj = after.object(1)
    assert sorted(c.frame for c in obj.corrections) == sorted([a, b])  # both condition the track
    assert np.array_equal(obj.track.mask(a), fix_a) and np.array_equal(obj.track.mask(b), fix_b)
    posted = ls.predictions[-1][1]
    for frame, fix in ((a, fix_a), (b, fix_b)):
        page = _brush(posted, f"vrshq-{tid}-1-mask-f{frame + 1}")
        assert np.array_equal(decode_brush(page["value"]["rle"], SPEC.height, SPEC.width), fix)
    # Provenance, the newest submission's verdict: page b corrected, page a shown again unchanged
    # (reviewed), object 2's pages reviewed.
    status = {(rv.obj_id, rv.frame): rv.status for rv in after.reviews}
    assert status[(1, a)] == "reviewed" and status[(1, b)] == "corrected"
    assert all(status[(2, p.frame)] == "reviewed" for p in after.pages if p.obj_id == 2)


def test_an_interactive_brush_edit_on_an_extra_page_is_a_correction_on_its_frame(client, vrshq_backend, ls):
    tid = next_task_id()
    results = _predict(client, ls, tid)
    state = vrshq_backend.states.load(1, tid)
    page = next(p for p in state.pages if p.obj_id == 2)
    fix = square(30, 40, 35)
    brush = copy.deepcopy(_brush(results, f"vrshq-{tid}-2-mask-f{page.frame + 1}"))
    brush["value"]["rle"] = encode_brush(fix)
    r = client.post("/predict", json={"tasks": [text_task(tid)], "project": "1", "label_config": TEXT_XML,
                                      "params": {"context": {"result": [brush]}}})
    assert r.status_code == 200, r.json
    out = r.json["results"][0]["result"]
    assert {track_region_id(x["id"]) for x in out} == {f"vrshq-{tid}-2"}
    got = _brush(out, f"vrshq-{tid}-2-mask-f{page.frame + 1}")
    assert np.array_equal(decode_brush(got["value"]["rle"], SPEC.height, SPEC.width), fix)
    obj = vrshq_backend.states.load(1, tid).object(2)
    assert [c.frame for c in obj.corrections] == [page.frame]
    assert np.array_equal(obj.track.mask(page.frame), fix)
    (row,) = vrshq_backend.corrections.list(project=1, task=tid)
    assert (row.obj_id, row.frame, row.event) == (2, page.frame, "interactive")


# --- frames on demand -------------------------------------------------------------------------

def _typed(client, tid, text):
    typed = {"from_name": "prompt", "to_name": "video", "type": "textarea", "value": {"text": [text]}}
    return client.post("/predict", json={"tasks": [text_task(tid)], "project": "1", "label_config": TEXT_XML,
                                         "params": {"context": {"result": [typed]}}})


def test_frame_n_adds_the_page_of_every_object_with_its_current_mask(client, vrshq_backend, ls):
    tid = next_task_id()
    _predict(client, ls, tid)
    before = vrshq_backend.states.load(1, tid)
    paged = {(p.obj_id, p.frame) for p in before.pages} | {(o.obj_id, o.keyframe) for o in before.objects}
    frame = next(f for f in range(SPEC.num_frames) if all((o.obj_id, f) not in paged for o in before.objects))
    r = _typed(client, tid, f"frame {frame + 1}")
    assert r.status_code == 200, r.json
    out = r.json["results"][0]["result"]
    after = vrshq_backend.states.load(1, tid)
    assert after.pages[:len(before.pages)] == before.pages  # existing pages keep their indices
    n = len(after.objects)
    for k, obj in enumerate(after.objects):
        index = n + len(before.pages) + k
        assert (after.pages[index - n].obj_id, after.pages[index - n].frame) == (obj.obj_id, frame)
        got = _brush(out, f"vrshq-{tid}-{obj.obj_id}-mask-f{frame + 1}")
        # answered on the on-demand page of the editor that asked (the one after its pages)
        assert got["item_index"] == n + len(before.pages)
        assert np.array_equal(decode_brush(got["value"]["rle"], SPEC.height, SPEC.width), obj.track.mask(frame))
        assert ls.data[tid]["keyframe_frames"][index] == frame + 1
        assert ls.data[tid]["keyframe_objects"][index] == obj.obj_id
    assert len(ls.data[tid]["keyframes"]) == n + len(after.pages) + 1
    # One object by label or id; asking again adds nothing.
    r = _typed(client, tid, f"frame {frame + 1} #2")
    assert r.status_code == 200 and vrshq_backend.states.load(1, tid).pages == after.pages


@pytest.mark.parametrize("text,words", [
    ("frame 0", "outside the video's frames 1..12"),
    ("frame 13", "outside the video's frames 1..12"),
    ("frame 3 #9", "no object '#9'"),
    ("frame 3 Airplane", "no object 'Airplane'"),
])
def test_a_bad_frame_request_is_a_4xx_naming_the_problem(client, vrshq_backend, ls, text, words):
    tid = next_task_id()
    _predict(client, ls, tid)
    r = _typed(client, tid, text)
    assert r.status_code == 400 and words in r.json["error"], r.json


def test_a_new_prediction_removes_the_page_images_no_longer_shown(client, vrshq_backend, ls, media_root):
    tid = next_task_id()
    _predict(client, ls, tid)
    folder = (media_root / unquote(ls.data[tid]["keyframes"][-1].split("?d=", 1)[1])).parent
    (folder / "page-obj1-f999.jpg").write_bytes(b"old")  # a page of an earlier prediction
    (folder / "strip-obj1-0123.jpg").write_bytes(b"strip")  # not a page: left alone
    task = text_task(tid, "the car\nthe red disc")  # other prompts: predicted afresh
    ls.data[tid] = dict(task["data"])
    r = client.post("/predict", json={"tasks": [task], "project": "1", "label_config": TEXT_XML})
    assert r.status_code == 200, r.json
    state = vrshq_backend.states.load(1, tid)
    shown = {unquote(u.split("?d=", 1)[1]).rsplit("/", 1)[1] for u in ls.data[tid]["keyframes"]}
    assert shown == {f"obj{o.obj_id}-f{o.keyframe + 1}.jpg" for o in state.objects} | \
        {f"page-obj{p.obj_id}-f{p.frame + 1}.jpg" for p in state.pages} | {state.demand_name}
    on_disk = {p.name for p in folder.glob("*.jpg")}
    assert on_disk - {"strip-obj1-0123.jpg"} == shown
