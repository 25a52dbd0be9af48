"""A fix's answer does not wait for the overlay video (issue 14, timing): the ``overlay`` job.

With the overlay config, a correction (interactive ``/predict`` or the webhook's ``correct`` job)
answers, or posts its prediction, with the page list written; the overlay video and strips are
written afterwards by an ``overlay`` job. Here the backend's one job worker is held busy by a
gate job, so the overlay job demonstrably waits while the answer comes back; releasing the gate
lets it run. The overlay's decoded frames are compared with ``overlay_frame`` of the saved state
(the independent reference the overlay tests use). Label Studio is the task-data recorder of
test_overlay_backend.py; the real one runs this path in test_whole_loop_browser.py.
"""

from __future__ import annotations

import copy
import shutil
import threading
import time
from pathlib import Path
from urllib.parse import unquote

import av
import numpy as np
import pytest

from vrshq.backend.labelstudio.labelconfig import parse_label_config
from vrshq.backend.labelstudio.overlay import label_color, overlay_frame
from vrshq.masks import encode_brush
from tests.backend_fixtures import SPEC, next_task_id, text_task
from tests.test_mask_pages import RecordingLabelStudio, square
from tests.test_overlay_backend import OVERLAY_XML

INFO = parse_label_config(OVERLAY_XML)


@pytest.fixture
def ls(vrshq_backend, monkeypatch) -> RecordingLabelStudio:
    fake = RecordingLabelStudio()
    monkeypatch.setattr(vrshq_backend, "writer", lambda project: fake)
    return fake


class Gate:
    """A job that holds the backend's only job worker until :meth:`open` (queued jobs wait)."""

    def __init__(self, backend) -> None:
        self.event = threading.Event()
        self.job, _ = backend.jobs.submit("gate", f"gate:{time.monotonic_ns()}",
                                          lambda report: self.event.wait(120))
        self.backend = backend

    def open(self) -> None:
        self.event.set()
        self.backend.jobs.wait(self.job.id, 30)


def _overlay_jobs(backend, tid: int) -> list:
    return [j for j in backend.all_jobs() if j.kind == "overlay" and j.info.get("task") == tid]


def _finish(backend, tid: int) -> list:
    jobs = _overlay_jobs(backend, tid)
    return [backend.jobs.wait(j.id, 120) for j in jobs]


def _predict(client, ls, tid: int, video: str = "clips/a.mp4") -> list:
    task = text_task(tid, video=video)
    task["data"]["overlay"] = ""
    ls.data[tid] = dict(task["data"])
    r = client.post("/predict", json={"tasks": [task], "project": "1", "label_config": OVERLAY_XML})
    assert r.status_code == 200, r.json
    return r.json["results"][0]["result"]


def _fix(client, tid: int, results: list, rid: str, mask: np.ndarray, video: str = "clips/a.mp4"):
    brush = copy.deepcopy(next(r for r in results if r["type"] == "brushlabels" and r["id"] == rid))
    brush["value"]["rle"] = encode_brush(mask)
    return client.post("/predict", json={"tasks": [text_task(tid, video=video)], "project": "1",
                                         "label_config": OVERLAY_XML,
                                         "params": {"context": {"result": [brush]}}})


def _file(media_root: Path, url: str) -> Path:
    return media_root / unquote(url.split("?d=", 1)[1])


def _decoded(path: Path, index: int) -> np.ndarray:
    with av.open(str(path)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i == index:
                return frame.to_ndarray(format="rgb24").astype(np.float32)
    raise AssertionError(f"{path} has no frame {index}")


def _reference(backend, state, index: int) -> np.ndarray:
    colors = [label_color(o.label, o.obj_id, INFO.label_colors) for o in state.objects]
    with backend.open_video(state.project, int(state.task), state.video, state.fps) as video:
        return overlay_frame(video, index, state.objects, colors).astype(np.float32)


def _shows(backend, media_root, url: str, state, old_state, frame: int) -> None:
    """The overlay at ``url`` shows ``state``'s masks on ``frame``: where the references of the
    two states differ, the decoded frame is close to ``state``'s and far from ``old_state``'s."""
    got = _decoded(_file(media_root, url), frame)
    new, old = _reference(backend, state, frame), _reference(backend, old_state, frame)
    region = np.abs(old - new).max(axis=-1) > 20  # where the two states look different
    assert region.sum() >= 200, region.sum()
    err_new, err_old = np.abs(got - new)[region].mean(), np.abs(got - old)[region].mean()
    assert err_new <= 12 and err_new < err_old / 3, (err_new, err_old)


def _frame_n(client, backend, tid: int, data: dict) -> int:
    """``frame N`` typed in an editor that holds task ``data``, for a frame without a page; N - 1."""
    state = backend.states.load(1, tid)
    shown = {p.frame for p in state.pages} | {o.keyframe for o in state.objects}
    n = next(f for f in range(SPEC.num_frames) if f not in shown)
    typed = {"from_name": "prompt", "to_name": "video", "type": "textarea", "value": {"text": [f"frame {n + 1}"]}}
    r = client.post("/predict", json={"tasks": [{**text_task(tid), "data": data}], "project": "1",
                                      "label_config": OVERLAY_XML, "params": {"context": {"result": [typed]}}})
    assert r.status_code == 200, r.json
    return n


def _page_frame(backend, tid: int, obj_id: int = 1) -> int:
    state = backend.states.load(1, tid)
    return next(p.frame for p in state.pages if p.obj_id == obj_id and p.why == "ranked")


def test_a_fix_answers_before_its_overlay_then_the_job_writes_the_corrected_overlay(
        client, vrshq_backend, ls, media_root):
    tid = next_task_id()
    results = _predict(client, ls, tid)
    first = ls.data[tid]["overlay"]  # the prediction wrote its overlay inline
    assert first and _file(media_root, first).is_file() and not _overlay_jobs(vrshq_backend, tid)
    before = vrshq_backend.states.load(1, tid)
    frame, fix = _page_frame(vrshq_backend, tid), square(20, 30, 50)
    gate = Gate(vrshq_backend)
    try:
        r = _fix(client, tid, results, f"vrshq-{tid}-1-mask-f{frame + 1}", fix)
        assert r.status_code == 200, r.json
        # Answered while the overlay job waits: the old overlay still in the data, the job queued.
        (job,) = _overlay_jobs(vrshq_backend, tid)
        assert job.state == "queued" and ls.data[tid]["overlay"] == first
        pages = {k: ls.data[tid][k] for k in ("keyframes", "keyframe_frames", "keyframe_objects")}
        assert frame + 1 in pages["keyframe_frames"]
    finally:
        gate.open()
    (done,) = _finish(vrshq_backend, tid)
    assert done.state == "done", done.error
    after = vrshq_backend.states.load(1, tid)
    second = ls.data[tid]["overlay"]
    assert second != first and done.result["overlay"] == second
    assert not _file(media_root, first).exists()  # the old overlay file is removed
    assert sorted(p.name for p in _file(media_root, second).parent.iterdir()) == [_file(media_root, second).name]
    _shows(vrshq_backend, media_root, second, after, before, frame)
    # The page list the fix wrote is as it was (the job set only the overlay and strips).
    assert {k: ls.data[tid][k] for k in pages} == pages
    # The job is listed as other jobs are.
    listed = client.get(f"/jobs/{done.id}").json
    assert (listed["kind"], listed["state"], listed["task"]) == ("overlay", "done", tid)


def test_a_second_fix_before_the_overlay_job_ends_with_the_newest_overlay(client, vrshq_backend, ls, media_root):
    tid = next_task_id()
    results = _predict(client, ls, tid)
    frame = _page_frame(vrshq_backend, tid)
    gate = Gate(vrshq_backend)
    try:
        assert _fix(client, tid, results, f"vrshq-{tid}-1-mask-f{frame + 1}", square(20, 30, 50)).status_code == 200
        middle = vrshq_backend.states.load(1, tid)
        newest_fix = square(60, 100, 40)
        assert _fix(client, tid, results, f"vrshq-{tid}-1-mask-f{frame + 1}", newest_fix).status_code == 200
        assert [j.state for j in _overlay_jobs(vrshq_backend, tid)] == ["queued", "queued"]
    finally:
        gate.open()
    jobs = _finish(vrshq_backend, tid)
    assert [j.state for j in jobs] == ["done", "done"]
    assert "newer correction" in jobs[0].result["skipped"]  # the first state's overlay is never written
    newest = vrshq_backend.states.load(1, tid)
    assert ls.data[tid]["overlay"] == jobs[1].result["overlay"]
    _shows(vrshq_backend, media_root, ls.data[tid]["overlay"], newest, middle, frame)


def test_the_overlay_job_keeps_a_page_list_written_after_the_fix(client, vrshq_backend, ls):
    tid = next_task_id()
    results = _predict(client, ls, tid)
    frame = _page_frame(vrshq_backend, tid)
    gate = Gate(vrshq_backend)
    try:
        assert _fix(client, tid, results, f"vrshq-{tid}-1-mask-f{frame + 1}", square(20, 30, 50)).status_code == 200
        n = _frame_n(client, vrshq_backend, tid, dict(ls.data[tid]))  # the data as LS sends it
        written = dict(ls.data[tid])
        assert n + 1 in written["keyframe_frames"]
    finally:
        gate.open()
    (job,) = _finish(vrshq_backend, tid)
    assert job.state == "done" and job.result["overlay"] != written["overlay"]
    # Everything but the overlay and the strips is as frame N wrote it.
    rest = lambda d: {k: v for k, v in d.items() if k not in ("overlay", "strips")}  # noqa: E731
    assert rest(ls.data[tid]) == rest(written)


def test_a_failed_overlay_job_is_a_job_error_and_the_fix_stays(client, vrshq_backend, ls, media_root):
    tid = next_task_id()
    shutil.copy(media_root / "clips" / "a.mp4", media_root / "clips" / "gone.mp4")
    results = _predict(client, ls, tid, video="clips/gone.mp4")
    first = ls.data[tid]["overlay"]
    frame, fix = _page_frame(vrshq_backend, tid), square(20, 30, 50)
    gate = Gate(vrshq_backend)
    try:
        r = _fix(client, tid, results, f"vrshq-{tid}-1-mask-f{frame + 1}", fix, video="clips/gone.mp4")
        assert r.status_code == 200, r.json
        (media_root / "clips" / "gone.mp4").unlink()  # the video vanishes before the job runs
    finally:
        gate.open()
    (job,) = _finish(vrshq_backend, tid)
    assert job.state == "failed" and "gone.mp4" in job.error, job.error
    listed = client.get(f"/jobs/{job.id}").json
    assert listed["state"] == "failed" and listed["error"] == job.error
    state = vrshq_backend.states.load(1, tid)  # the correction was saved before the job
    assert np.array_equal(state.object(1).track.mask(frame), fix)
    assert ls.data[tid]["overlay"] == first


def test_a_webhook_correction_posts_its_prediction_then_queues_the_overlay(client, vrshq_backend, ls, media_root):
    tid = next_task_id()
    results = _predict(client, ls, tid)
    first = ls.data[tid]["overlay"]
    before = vrshq_backend.states.load(1, tid)
    frame, fix = _page_frame(vrshq_backend, tid), square(20, 30, 50)
    edited = copy.deepcopy(results)
    page = next(r for r in edited if r["id"] == f"vrshq-{tid}-1-mask-f{frame + 1}")
    page["value"]["rle"] = encode_brush(fix)
    r = client.post("/webhook", json={
        "action": "ANNOTATION_UPDATED", "project": {"id": 1, "label_config": OVERLAY_XML},
        "task": {"id": tid, "data": dict(ls.data[tid])},
        "annotation": {"id": 1, "task": tid, "completed_by": 9, "result": edited,
                       "was_cancelled": False, "updated_at": "2026-12-07T03:00:00+00:00"}})
    assert r.status_code == 201, r.json
    correct = vrshq_backend.jobs.wait(r.json["result"]["job"], 120)
    assert correct.state == "done", correct.error
    assert ls.predictions and ls.predictions[-1][0] == tid
    (job,) = _finish(vrshq_backend, tid)
    assert job.state == "done" and job.created >= correct.started  # queued by the correct job
    after = vrshq_backend.states.load(1, tid)
    assert ls.data[tid]["overlay"] != first
    _shows(vrshq_backend, media_root, ls.data[tid]["overlay"], after, before, frame)


def test_frame_n_from_the_editor_that_sent_the_fix_keeps_the_jobs_overlay(client, vrshq_backend, ls, media_root):
    # The open editor still holds the task data it loaded (the old overlay URL) when it asks for
    # a frame after a fix; the page list it leads to must not bring that removed overlay back.
    tid = next_task_id()
    results = _predict(client, ls, tid)
    loaded = dict(ls.data[tid])  # what the editor loaded
    frame = _page_frame(vrshq_backend, tid)
    assert _fix(client, tid, results, f"vrshq-{tid}-1-mask-f{frame + 1}", square(20, 30, 50)).status_code == 200
    (job,) = _finish(vrshq_backend, tid)
    new = ls.data[tid]["overlay"]
    assert job.state == "done" and new != loaded["overlay"] and not _file(media_root, loaded["overlay"]).exists()
    n = _frame_n(client, vrshq_backend, tid, loaded)
    assert n + 1 in ls.data[tid]["keyframe_frames"]
    assert ls.data[tid]["overlay"] == new and _file(media_root, new).is_file()
    assert ls.data[tid]["strips"] == job.result["strips"]
