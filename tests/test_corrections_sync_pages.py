"""`vrshq corrections sync` logs what the webhook logs, page for page, against a real Label Studio.

One annotation, started from the backend's prediction and carrying: a mask edited on an extra
page the prediction had, a mask edited on a page that ``frame N`` added after the prediction, a
region drawn anew on that requested page (the on-demand page), a moved box, clicks on a page and
a newly drawn object. Backend A receives it by webhook; backend B (a copy of A's data folder
taken before the webhook, with an empty log) catches it up with ``vrshq corrections sync``. Their log rows must be
equal field for field, and both must be what the annotation says (the drawn masks and boxes,
written out here), not only equal to each other.
"""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest

from vrshq.backend.corrections import CorrectionsLog
from vrshq.backend.http.app import create_app
from vrshq.backend.tasks.state import TaskStateStore
from vrshq.backend.labelstudio.predictions import page_frame
from vrshq.masks import decode_brush, decode_rle, encode_brush
from vrshq.synthetic import SyntheticSpec, write_video
from tests.backend_fixtures import TEXT_XML, make_backend
from tests.cli_helpers import run_cli

pytestmark = pytest.mark.timeout(600)
SPEC = SyntheticSpec(num_frames=12, width=96, height=64, fps=10.0, num_objects=2, seed=47)
# What a row says about the correction (id, event and logging time aside).
FIELDS = ("annotation", "annotator", "obj_id", "label", "frame", "prompt", "predicted_mask",
          "corrected_mask", "predicted_boxes", "corrected_boxes", "annotated_at", "model_version",
          "plugin", "video_path", "fps", "corrected_clicks")


def square(y0: int, x0: int, size: int = 16) -> np.ndarray:
    m = np.zeros((SPEC.height, SPEC.width), bool)
    m[y0:y0 + size, x0:x0 + size] = True
    return m


def row_clicks(clicks: list[dict]) -> list[tuple]:
    """A log row's clicks as (x, y, label) in pixels."""
    return [(c["x"], c["y"], c["label"]) for c in clicks]


def _by_id(results: list[dict], rid: str) -> dict:
    return next(r for r in results if r["id"] == rid)


def _rows(log_dir) -> list[tuple]:
    with CorrectionsLog.for_model_dir(log_dir) as log:
        return sorted(tuple(getattr(r, f) for f in FIELDS) for r in log.list())


def _reviews(data_dir, pid: int, tid: int) -> list[tuple]:
    """The provenance the submission left (export's corrected/reviewed), per object and frame."""
    state = TaskStateStore(data_dir).load(str(pid), tid)
    return sorted((r.obj_id, r.frame, r.status, np.packbits(r.mask).tobytes(), str(r.annotation), r.prompt)
                  for r in state.reviews)


def _annotation(pred: list[dict], answer: list[dict], tid: int, page_a: int, frame_n: int,
                slot: int) -> tuple[list[dict], dict]:
    """The submitted result (see the module docstring) and what each edit must log."""
    result = copy.deepcopy(pred) + [copy.deepcopy(r) for r in answer
                                    if r["id"] not in {p["id"] for p in pred}]
    one, two = f"vrshq-{tid}-1", f"vrshq-{tid}-2"
    fix_a, fix_n, drawn = square(4, 6), square(30, 60), square(40, 10, 12)
    _by_id(result, f"{one}-mask-f{page_a + 1}")["value"]["rle"] = encode_brush(fix_a)
    _by_id(result, f"{two}-mask-f{frame_n + 1}")["value"]["rle"] = encode_brush(fix_n)
    on_slot = _by_id(result, f"{one}-mask-f{frame_n + 1}")
    assert on_slot["item_index"] == slot  # the answer sits on the on-demand page
    shown_n = decode_brush(on_slot["value"]["rle"], SPEC.height, SPEC.width)
    brush = copy.deepcopy(on_slot)
    brush.update(id="drawn-on-demand", item_index=slot)
    brush["value"]["rle"] = encode_brush(drawn)
    result.append(brush)
    track = _by_id(result, two)
    moved = copy.deepcopy(track["value"]["sequence"])
    moved[0]["x"] = float(moved[0]["x"]) + 8.0  # the first keyframe's box, 8% of the width right
    track["value"]["sequence"] = moved
    new_object = copy.deepcopy(_by_id(result, one))
    new_object["id"] = "drawn-new-object"
    result.append(new_object)
    # Two clicks (Include, Exclude) on object 2's first extra page of the prediction.
    page_b = next(r for r in pred if r["id"].startswith(f"{two}-mask-f"))
    points = [(20.5, 30.5, 1), (70.5, 10.5, 0)]
    result += [{"id": f"click{k}", "from_name": "clicks", "to_name": "keyframes", "type": "keypointlabels",
                "item_index": page_b["item_index"], "original_width": SPEC.width,
                "original_height": SPEC.height, "image_rotation": 0,
                "value": {"x": 100 * x / SPEC.width, "y": 100 * y / SPEC.height, "width": 0.6,
                          "keypointlabels": ["Include" if label else "Exclude"]}}
               for k, (x, y, label) in enumerate(points)]
    expect = {(1, page_a): fix_a, (2, frame_n): fix_n, (1, frame_n): shown_n | drawn}
    return result, {"masks": expect, "boxes": moved,
                    "clicks": {(2, page_frame(page_b["id"])): points}}


class TaskA:
    """A task predicted by backend A (its data folder ``a``), the prediction posted to Label Studio."""

    def __init__(self, label_studio, ls_api, tiny_models, tmp_path, name: str, prompt: str) -> None:
        clips = label_studio.doc_root / name
        clips.mkdir(parents=True, exist_ok=True)
        write_video(SPEC, clips / "v.mp4")
        self.ls_api, self.data_a, self.data_b = ls_api, tmp_path / "a", tmp_path / "b"
        self.pid = ls_api.create_project(f"vrshq {name}", TEXT_XML)
        ls_api.add_local_storage(self.pid, clips)
        (self.tid,) = ls_api.import_tasks(self.pid, [{"data": {
            "video": f"/data/local-files/?d={name}/v.mp4", "fps": 10, "prompt": prompt}}])
        self.backend = make_backend(tiny_models, label_studio.doc_root, self.data_a,
                                    label_studio_url=label_studio.url, api_key=label_studio.token)
        try:
            self.client = create_app(backend=self.backend).test_client()
            self.pred = self.predict()
            self.parent = self.backend.post_prediction(str(self.pid), self.tid, self.pred)
        except BaseException:
            self.backend.close()
            raise

    def predict(self, typed: str | None = None) -> dict:
        """The task's prediction, or the answer to ``typed`` in its prompt box (auto-annotation)."""
        body = {"tasks": [self.ls_api.get_task(self.tid)], "project": str(self.pid), "label_config": TEXT_XML}
        if typed is not None:
            body["params"] = {"context": {"result": [{"from_name": "prompt", "to_name": "video",
                                                      "type": "textarea", "value": {"text": [typed]}}]}}
        r = self.client.post("/predict", json=body)
        assert r.status_code == 200, r.json
        return r.json["results"][0]

    def submit(self, result: list[dict]) -> None:
        """Copy A's data folder to B (the state before the webhook, an empty log), then submit
        ``result`` to Label Studio, started from the prediction, and deliver its webhook to A."""
        shutil.copytree(self.data_a, self.data_b, ignore=shutil.ignore_patterns("corrections.sqlite3*"))
        CorrectionsLog.for_model_dir(self.data_b).close()
        aid = self.ls_api.create_annotation(self.tid, result, parent_prediction=self.parent)
        r = self.client.post("/webhook", json={
            "action": "ANNOTATION_CREATED", "project": {"id": self.pid, "label_config": TEXT_XML},
            "task": {"id": self.tid}, "annotation": self.ls_api.get_annotation(aid)})
        assert r.status_code == 201, r.json


def _sync_b(task: TaskA, label_studio, capfd, monkeypatch) -> tuple[list[tuple], list[tuple]]:
    """``vrshq corrections sync`` into B; the rows A's webhook logged and those sync logged, whose
    provenance must be equal too."""
    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.token)
    rc, out, err = run_cli(capfd, "corrections", "sync", "--project", task.pid, "--data-dir", task.data_b)
    assert rc == 0, err
    by_webhook, by_sync = _rows(task.data_a), _rows(task.data_b)
    assert [(r[2], r[4]) for r in by_sync] == [(r[2], r[4]) for r in by_webhook]
    for mine, theirs in zip(by_sync, by_webhook):
        assert [f for f, a, b in zip(FIELDS, mine, theirs) if a != b] == [], mine[2:5]
    assert by_sync == by_webhook
    # The same provenance too: each shown page corrected or reviewed, as the export reads it.
    assert _reviews(task.data_b, task.pid, task.tid) == _reviews(task.data_a, task.pid, task.tid)
    # Idempotent: a second run adds nothing.
    rc, out, err = run_cli(capfd, "corrections", "sync", "--project", task.pid, "--data-dir", task.data_b)
    assert rc == 0 and "0 correction(s) logged" in out, out
    assert _rows(task.data_b) == by_sync
    return by_webhook, by_sync


def test_sync_logs_exactly_what_the_webhook_logs_on_every_page(label_studio, ls_api, tiny_models,
                                                               tmp_path, capfd, monkeypatch):
    task = TaskA(label_studio, ls_api, tiny_models, tmp_path, "syncpages", "the red disc\nthe car")
    try:
        state = task.backend.states.load(str(task.pid), task.tid)
        page_a = next(p.frame for p in state.pages if p.obj_id == 1)
        paged = {p.frame for p in state.pages} | {o.keyframe for o in state.objects}
        frame_n = next(f for f in range(SPEC.num_frames) if f not in paged)
        slot = len(state.objects) + len(state.pages)  # the on-demand page's index
        answer = task.predict(f"frame {frame_n + 1}")["result"]
        result, expect = _annotation(task.pred["result"], answer, task.tid, page_a, frame_n, slot)
        task.submit(result)
    finally:
        task.backend.close()

    _, by_sync = _sync_b(task, label_studio, capfd, monkeypatch)
    reviews = _reviews(task.data_b, task.pid, task.tid)
    assert {(r[0], r[1]) for r in reviews if r[2] == "corrected"} == set(expect["masks"])
    # Both are what the annotator did: each edited or drawn page, and the moved box.
    rows = {(row[2], row[4]): row for row in by_sync}
    masks = {k: decode_rle(row[7]) for k, row in rows.items() if row[7] is not None}
    assert set(masks) == set(expect["masks"])
    for key, mask in expect["masks"].items():
        assert np.array_equal(masks[key], mask), key
    (boxed,) = [row for row in by_sync if row[9] is not None]
    assert boxed[2] == 2 and [b["x"] for b in boxed[9]] == [b["x"] for b in expect["boxes"]]
    ((key, clicked),) = [((row[2], row[4]), row[15]) for row in by_sync if row[15] is not None]
    assert key in expect["clicks"] and np.allclose(row_clicks(clicked), expect["clicks"][key], atol=1e-6)
    assert len(by_sync) == 5  # the drawn new object is not a correction (the webhook's rule too)


def test_sync_logs_the_edits_of_an_object_added_after_the_prediction(label_studio, ls_api, tiny_models,
                                                                    tmp_path, capfd, monkeypatch):
    """An object typed into the open editor after the prediction (the backend's answer put it
    there) and then edited: the webhook logs the edit against the object as answered, sync too."""
    task = TaskA(label_studio, ls_api, tiny_models, tmp_path, "syncadded", "the red disc")
    try:
        answer = task.predict("the car")["result"]
        two = f"vrshq-{task.tid}-2"
        assert {x["id"] for x in answer} >= {two, f"{two}-mask"}, [x["id"] for x in answer]
        result = copy.deepcopy(task.pred["result"]) + copy.deepcopy(answer)
        fix = square(20, 30)
        _by_id(result, f"{two}-mask")["value"]["rle"] = encode_brush(fix)
        track = _by_id(result, two)
        moved = copy.deepcopy(track["value"]["sequence"])
        moved[0]["y"] = float(moved[0]["y"]) + 10.0
        track["value"]["sequence"] = moved
        task.submit(result)
    finally:
        task.backend.close()

    _, by_sync = _sync_b(task, label_studio, capfd, monkeypatch)
    (row,) = by_sync
    assert row[2] == 2 and np.array_equal(decode_rle(row[7]), fix)
    assert [b["y"] for b in row[9]] == [b["y"] for b in moved]
