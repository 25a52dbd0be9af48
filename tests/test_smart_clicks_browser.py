"""A smart click answered at once in the real Label Studio 1.23.2 editor (headless Chromium).

`tests/browser/smart_click.mjs` opens the predicted task's annotation, switches Auto-Annotation
on, goes to one of object 1's extra mask pages, picks the toolbar's Auto-Detect key point tool
and Include, and clicks the picture once. Label Studio sends the click to the backend's
``/predict`` at once (no Submit); the answer comes back as suggestions, accepted with the
bottom bar's button; then the annotation is submitted.

Checked: what Label Studio sent (one ``keypointlabels`` result on the page, in percent, with its
label and ``is_positive``); the page's brush region in the editor after accepting is the
backend's re-propagated mask on that frame (not the one before), and the click is the backend's
echoed keypoint; the re-propagation equals the plugin's own ``correct`` with the click in pixels
(what the webhook's correction runs; run here on the same tiny weights); the click is logged
once: the Submit that follows neither logs nor re-propagates it again.
"""

from __future__ import annotations

import copy
import json
import subprocess
import urllib.request

import numpy as np
import pytest

from vrshq.backend.corrections.store import CorrectionsLog, default_url
from vrshq.backend.tasks.state import TaskStateStore
from vrshq.masks import decode_brush
from vrshq.plugins.base import Correction
from vrshq.synthetic import SyntheticSpec
from vrshq.video.reader import open_video
from tests.backend_fixtures import TEXT_XML, make_backend
from tests.browser import BROWSER_DIR
from tests.served_backend import connected_task, first_extra_page, poll, served_backend

SPEC = SyntheticSpec(num_frames=12, width=320, height=240, fps=10.0, num_objects=2, seed=17)
CLICK = (40.0, 55.0)  # percent of the page picture

pytestmark = pytest.mark.timeout(900)


def _webhooks(log) -> int:
    """How many webhook deliveries the served backend has answered."""
    return log.read_text().count("POST /webhook")


def _page_mask(results: list, rid: str) -> np.ndarray:
    (r,) = [r for r in results if r["id"] == rid and r["type"] == "brushlabels"]
    return decode_brush(r["value"]["rle"], SPEC.height, SPEC.width)


def test_a_smart_click_is_answered_at_once_and_logged_once(label_studio, ls_api, tiny_models, tmp_path):
    (tmp_path / "backend").mkdir()
    with served_backend(label_studio, tiny_models, tmp_path / "backend", VRSHQ_MASK_PAGES="2") as backend:
        pid, tid, _ = connected_task(label_studio, ls_api, backend, SPEC, "smart-clicks", TEXT_XML)
        (pred,) = poll("the prediction", lambda: ls_api.list_predictions(tid), timeout=240)
        ann = ls_api.create_annotation(tid, copy.deepcopy(pred["result"]))  # the predicted regions, opened below
        poll("the annotation's webhook", lambda: _webhooks(backend["log"]) >= 1, timeout=60)
        store = TaskStateStore(backend["model_dir"])
        before = store.load(pid, tid)
        page, frame = first_extra_page(before)
        rid = f"vrshq-{tid}-1-mask-f{frame + 1}"
        hooks = _webhooks(backend["log"])
        args = {"url": label_studio.url, "email": label_studio.username, "password": label_studio.password,
                "project": pid, "task": tid, "annotation": ann, "page": page + 1, "label": "Include",
                "click": list(CLICK), "accept": True, "submit": True,
                "screenshot": str(tmp_path / "smart-click.png"), "timeout_ms": 120000}
        proc = subprocess.run(["node", str(BROWSER_DIR / "smart_click.mjs"), json.dumps(args)], cwd=str(BROWSER_DIR),
                              capture_output=True, text=True, timeout=400, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        (tmp_path / "smart-click.json").write_text(json.dumps(out))  # for a failure's reader
        # what Label Studio sent: the one click, on the page, in percent, with its label
        (sent,) = out["sent"]["context"]["result"]
        assert (sent["type"], sent["from_name"], sent["item_index"], sent["value"]["keypointlabels"],
                sent["is_positive"]) == ("keypointlabels", "clicks", page, ["Include"], True), sent
        assert abs(sent["value"]["x"] - CLICK[0]) < 0.5 and abs(sent["value"]["y"] - CLICK[1]) < 0.5, sent
        click = (sent["value"]["x"] * SPEC.width / 100, sent["value"]["y"] * SPEC.height / 100)
        # the backend re-propagated object 1 from it, once
        after = store.load(pid, tid)
        (c,) = after.object(1).corrections
        assert (c.frame, c.kind, c.point_labels) == (frame, "points", [1])
        assert np.allclose(c.points, [click], rtol=0, atol=1e-6)
        new = after.object(1).track.mask(frame)
        assert not np.array_equal(new, before.object(1).track.mask(frame)), "the click changed nothing"
        # the answer, and the editor's page region after accepting it, show the new mask
        assert np.array_equal(_page_mask(out["answer"]["data"]["result"], rid), new)
        assert np.array_equal(_page_mask(out["suggested"]["results"], rid), before.object(1).track.mask(frame))
        assert np.array_equal(_page_mask(out["after"]["results"], rid), new)
        kept = [r for r in out["after"]["results"] if r["type"] == "keypointlabels"]
        assert [(r["id"], r["value"]["keypointlabels"]) for r in kept] == [(f"vrshq-{tid}-1-click-f{frame + 1}-0",
                                                                            ["Include"])], kept
        assert out["after"]["dynamic"] == [] and out["saved"]["status"] in (200, 201), out["saved"]
        # the Submit that followed: delivered, and neither logged nor re-propagated again
        poll("the Submit's webhook", lambda: _webhooks(backend["log"]) > hooks, timeout=120)
        with CorrectionsLog(default_url(backend["model_dir"]), create=False) as log:
            rows = log.list(project=pid, task=tid)
        assert [(r.event, r.frame, len(r.corrected_clicks)) for r in rows] == [("interactive", frame, 1)]
        assert store.load(pid, tid).object(1).corrections == after.object(1).corrections
        # the webhook queues a job before it answers: none was queued to re-propagate the click again
        with urllib.request.urlopen(f"{backend['url']}/jobs", timeout=30) as r:
            jobs = [j["kind"] for j in json.load(r)["jobs"]]
        assert "correct" not in jobs, jobs
    # the webhook's correction runs the plugin's own correct with the clicks in pixels: the same masks
    reference = make_backend(tiny_models, label_studio.doc_root, tmp_path / "reference")
    video = open_video(label_studio.doc_root / "smart-clicks" / "v.mp4")
    try:
        (ref,) = [t for t in reference.plugin.correct(video, before.objects, [Correction(
            1, frame, points=[click], point_labels=[1])]) if t.obj_id == 1]
    finally:
        video.close()
        reference.close()
    assert after.object(1).track.frames() == ref.track.frames()
    for f in ref.track.frames():
        assert np.array_equal(after.object(1).track.mask(f), ref.track.mask(f)), f"frame {f}"
