"""Clicks drawn with the mouse in the real Label Studio 1.23.2 editor (headless Chromium).

`tests/browser/click_page.mjs` opens the predicted task, goes to one of object 1's extra mask
pages, picks Include / Exclude and clicks the image there, and submits. Label Studio stores the
keypoints on that page; the webhook re-propagates object 1 from them: the backend's state holds
one clicks correction on the page's frame, at the clicked pixels (within a pixel: the mouse
lands on whole screen pixels) with the picked labels.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from vrshq.backend.tasks.state import TaskStateStore
from vrshq.synthetic import SyntheticSpec
from tests.backend_fixtures import TEXT_XML
from tests.browser import BROWSER_DIR
from tests.served_backend import connected_task, first_extra_page, poll, served_backend

SPEC = SyntheticSpec(num_frames=12, width=320, height=240, fps=10.0, num_objects=2, seed=17)

pytestmark = pytest.mark.timeout(900)


def test_clicks_drawn_in_the_editor_re_propagate(label_studio, ls_api, tiny_models, tmp_path):
    (tmp_path / "backend").mkdir()
    with served_backend(label_studio, tiny_models, tmp_path / "backend", VRSHQ_MASK_PAGES="2") as backend:
        pid, tid, _ = connected_task(label_studio, ls_api, backend, SPEC, "clicks-browser", TEXT_XML)
        poll("the prediction", lambda: ls_api.list_predictions(tid), timeout=240)
        page, frame = first_extra_page(TaskStateStore(backend["model_dir"]).load(pid, tid))
        clicks = [[40.0, 55.0, "Include"], [80.0, 20.0, "Exclude"]]
        args = {"url": label_studio.url, "email": label_studio.username, "password": label_studio.password,
                "project": pid, "task": tid, "page": page + 1, "clicks": clicks,
                "screenshot": str(tmp_path / "clicks.png"), "timeout_ms": 120000}
        proc = subprocess.run(["node", str(BROWSER_DIR / "click_page.mjs"), json.dumps(args)], cwd=str(BROWSER_DIR),
                              capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        shown = json.loads(proc.stdout.strip().splitlines()[-1])
        assert shown["status"] == 201 and shown["page"].startswith(str(page + 1)), shown
        (ann,) = ls_api.list_annotations(tid)
        # started from the prediction: the objects' masks are in it (else the clicks correct nothing)
        assert {r["type"] for r in ann["result"]} >= {"brushlabels", "videorectangle"}, ann["result"]
        stored = [r for r in ann["result"] if r["type"] == "keypointlabels"]
        assert [(r["item_index"], r["value"]["keypointlabels"]) for r in stored] == \
            [(page, ["Include"]), (page, ["Exclude"])], stored
        for r, (x, y, _) in zip(stored, clicks):
            assert abs(r["value"]["x"] - x) < 1 and abs(r["value"]["y"] - y) < 1, r["value"]

        def corrected():
            obj = TaskStateStore(backend["model_dir"]).load(pid, tid).object(1)
            return obj if obj.corrections else None

        obj = poll("the re-propagation", corrected, timeout=240)
        (c,) = obj.corrections
        assert (c.frame, c.kind, c.point_labels) == (frame, "points", [1, 0])
        want = [(r["value"]["x"] * SPEC.width / 100, r["value"]["y"] * SPEC.height / 100) for r in stored]
        assert np.allclose(c.points, want, atol=1e-6)
        assert np.allclose(c.points, [(x * SPEC.width / 100, y * SPEC.height / 100) for x, y, _ in clicks], atol=3.2)
