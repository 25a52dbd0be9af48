"""Mask pages with a real Label Studio 1.23.2 and `vrshq serve` (VRSHQ_MASK_PAGES=2).

Through Label Studio's REST API: the prediction Label Studio stores carries the extra pages, the
task data lists them and Label Studio serves their images; ``frame N`` sent through Label
Studio's own interactive endpoint adds the page; an annotation with a fix on an extra page
reaches the backend by webhook and the re-propagated prediction carries the fix on its page.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from vrshq.backend.labelstudio.predictions import parse_annotation
from vrshq.backend.tasks.state import TaskStateStore
from vrshq.masks import decode_brush, encode_brush
from vrshq.synthetic import SyntheticSpec
from tests.backend_fixtures import TEXT_XML
from tests.served_backend import connected_task, poll, served_backend
from tests.test_labelstudio_e2e import INFO

SPEC = SyntheticSpec(num_frames=16, width=320, height=240, fps=10.0, num_objects=2, seed=11)

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def served(label_studio, ls_api, tiny_models, tmp_path_factory):
    """`vrshq serve` with mask pages, a project connected to it and one predicted task."""
    # Without the on-demand page (tests/test_demand_page.py, the whole-loop browser test): the
    # page list here is the keyframe and extra pages, a requested page appended last.
    with served_backend(label_studio, tiny_models, tmp_path_factory.mktemp("pages_backend"),
                        VRSHQ_MASK_PAGES="2", VRSHQ_DEMAND_PAGE="0") as backend:
        pid, tid, ml = connected_task(label_studio, ls_api, backend, SPEC, "pages", TEXT_XML)
        yield {"pid": pid, "tid": tid, "ml": ml, "db": backend["model_dir"]}


def test_label_studio_stores_the_pages_lists_them_and_serves_their_images(ls_api, served):
    tid = served["tid"]
    (pred,) = ls_api.list_predictions(tid)
    state = TaskStateStore(served["db"]).load(served["pid"], tid)
    assert len(state.pages) == 4  # 2 objects x VRSHQ_MASK_PAGES
    pages = {r["id"]: r for r in pred["result"] if "-mask-f" in r["id"]}
    for i, page in enumerate(state.pages, start=2):
        r = pages[f"vrshq-{tid}-{page.obj_id}-mask-f{page.frame + 1}"]
        assert r["item_index"] == i
        mask = decode_brush(r["value"]["rle"], SPEC.height, SPEC.width)
        assert np.array_equal(mask, state.object(page.obj_id).track.mask(page.frame))
    data = ls_api.get_task(tid)["data"]
    assert data["keyframe_frames"] == [o.keyframe + 1 for o in state.objects] + [p.frame + 1 for p in state.pages]
    assert data["keyframe_objects"] == [1, 2] + [p.obj_id for p in state.pages]
    assert len(data["keyframes"]) == 6
    for url in data["keyframes"]:
        assert ls_api.request("GET", url).content[:3] == b"\xff\xd8\xff", url  # a JPEG, served


def test_frame_n_through_label_studio_adds_the_page(ls_api, served):
    tid = served["tid"]
    state = TaskStateStore(served["db"]).load(served["pid"], tid)
    paged = {p.frame for p in state.pages} | {o.keyframe for o in state.objects}
    frame = next(f for f in range(SPEC.num_frames) if f not in paged)
    typed = {"from_name": "prompt", "to_name": "video", "type": "textarea",
             "value": {"text": [f"frame {frame + 1} #1"]}}
    answer = ls_api.interactive(served["ml"], tid, {"result": [typed]})
    assert "errors" not in answer, answer
    (page,) = [r for r in answer["data"]["result"] if r["id"] == f"vrshq-{tid}-1-mask-f{frame + 1}"]
    after = TaskStateStore(served["db"]).load(served["pid"], tid)
    assert page["item_index"] == 2 + len(state.pages) == len(after.objects) + len(after.pages) - 1
    assert np.array_equal(decode_brush(page["value"]["rle"], SPEC.height, SPEC.width),
                          after.object(1).track.mask(frame))
    data = ls_api.get_task(tid)["data"]
    assert data["keyframe_frames"][-1] == frame + 1 and data["keyframe_objects"][-1] == 1
    assert ls_api.request("GET", data["keyframes"][-1]).content[:3] == b"\xff\xd8\xff"


def test_a_fix_on_an_extra_page_comes_back_on_that_page(ls_api, served):
    tid = served["tid"]
    pred = ls_api.list_predictions(tid)[-1]
    state = TaskStateStore(served["db"]).load(served["pid"], tid)
    page = next(p for p in state.pages if p.obj_id == 2)
    fixed = np.zeros((SPEC.height, SPEC.width), bool)
    fixed[60:140, 100:200] = True
    result = copy.deepcopy(pred["result"])
    next(r for r in result if r["id"] == f"vrshq-{tid}-2-mask-f{page.frame + 1}")["value"]["rle"] = encode_brush(fixed)
    before = len(ls_api.list_predictions(tid))
    ls_api.create_annotation(tid, result)
    (new,) = poll("the re-propagated prediction", lambda: ls_api.list_predictions(tid)[before:], timeout=240)
    got = parse_annotation(new["result"], INFO)[f"vrshq-{tid}-2"].pages[page.frame]
    assert np.array_equal(got, fixed)
    obj = TaskStateStore(served["db"]).load(served["pid"], tid).object(2)
    assert [c.frame for c in obj.corrections] == [page.frame]
    assert np.array_equal(obj.track.mask(page.frame), fixed)
