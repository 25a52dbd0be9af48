"""Clicks on a mask page with a real Label Studio 1.23.2 and `vrshq serve` (VRSHQ_MASK_PAGES=2).

Through Label Studio's REST API: a project with the shipped text config (its ``<KeyPointLabels
name="clicks" toName="keyframes">`` on the ``<Image valueList>`` pager) accepts an annotation
with keypoints on an extra mask page and stores them on that page; the webhook re-propagates
object 1 from the clicks; the new prediction echoes the clicks on their page and its masks are
the plugin's own ``correct`` with the same clicks in pixels (run here, on the same tiny weights).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from vrshq.backend.labelstudio.predictions import parse_annotation
from vrshq.backend.labelstudio.results import shown_mask
from vrshq.backend.tasks.state import TaskStateStore
from vrshq.masks import decode_brush
from vrshq.plugins.base import Correction
from vrshq.synthetic import SyntheticSpec, ground_truth
from vrshq.video.reader import open_video
from tests.backend_fixtures import TEXT_XML, make_backend
from tests.served_backend import connected_task, first_extra_page, poll, served_backend
from tests.test_labelstudio_e2e import INFO

SPEC = SyntheticSpec(num_frames=12, width=320, height=240, fps=10.0, num_objects=2, seed=13)

pytestmark = pytest.mark.timeout(900)


def test_clicks_on_a_mask_page_in_label_studio_re_propagate(label_studio, ls_api, tiny_models, tmp_path):
    (tmp_path / "backend").mkdir()
    with served_backend(label_studio, tiny_models, tmp_path / "backend", VRSHQ_MASK_PAGES="2") as backend:
        pid, tid, _ = connected_task(label_studio, ls_api, backend, SPEC, "clicks", TEXT_XML)
        (pred,) = poll("the prediction", lambda: ls_api.list_predictions(tid), timeout=240)
        store = TaskStateStore(backend["model_dir"])
        before = store.load(pid, tid)
        page, frame = first_extra_page(before)
        ys, xs = np.nonzero(ground_truth(SPEC)[frame] == 1)
        points = [(float(round(xs.mean())) + 0.5, float(round(ys.mean())) + 0.5), (300.5, 20.5)]
        labels = [1, 0]
        clicks = [{"id": f"click{k}", "from_name": "clicks", "to_name": "keyframes", "type": "keypointlabels",
                   "item_index": page, "original_width": SPEC.width, "original_height": SPEC.height,
                   "image_rotation": 0,
                   "value": {"x": 100 * x / SPEC.width, "y": 100 * y / SPEC.height, "width": 0.6,
                             "keypointlabels": ["Include" if lb else "Exclude"]}}
                  for k, ((x, y), lb) in enumerate(zip(points, labels))]
        ann = ls_api.create_annotation(tid, copy.deepcopy(pred["result"]) + clicks)
        stored = [r for r in ls_api.get_annotation(ann)["result"] if r["type"] == "keypointlabels"]
        assert [(r["item_index"], r["value"]["keypointlabels"]) for r in stored] == \
            [(page, ["Include"]), (page, ["Exclude"])]
        (new,) = poll("the re-propagated prediction", lambda: ls_api.list_predictions(tid)[1:], timeout=240)
        after = store.load(pid, tid).object(1)
        assert [(c.frame, c.kind, c.point_labels) for c in after.corrections] == [(frame, "points", labels)]
        assert np.allclose(after.corrections[0].points, points, atol=1e-6)
        echoed = [r for r in new["result"] if r["type"] == "keypointlabels"]
        assert [(r["item_index"], r["value"]["keypointlabels"]) for r in echoed] == \
            [(page, ["Include"]), (page, ["Exclude"])]
        got = parse_annotation(new["result"], INFO)[f"vrshq-{tid}-1"].pages[frame]
        assert np.array_equal(got, after.track.mask(frame))
    reference = make_backend(tiny_models, label_studio.doc_root, tmp_path / "reference")
    video = open_video(label_studio.doc_root / "clicks" / "v.mp4")
    try:
        (ref,) = [t for t in reference.plugin.correct(video, before.objects, [Correction(
            1, frame, points=points, point_labels=labels)]) if t.obj_id == 1]
    finally:
        video.close()
        reference.close()
    assert after.track.frames() == ref.track.frames()
    for f in ref.track.frames():
        assert np.array_equal(after.track.mask(f), ref.track.mask(f)), f"frame {f}"
    assert not np.array_equal(after.track.mask(frame), before.object(1).track.mask(frame))
    assert np.array_equal(decode_brush(next(r for r in new["result"] if r["id"] == f"vrshq-{tid}-1-mask")
                                       ["value"]["rle"], SPEC.height, SPEC.width),
                          shown_mask(after))  # the keyframe page: what it shows
