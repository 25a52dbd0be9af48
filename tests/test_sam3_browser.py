"""The sam3 plugin as an annotator meets it: real Label Studio 1.23.2, `vrshq serve` with
``VRSHQ_PLUGIN=sam3`` and the tiny SAM 3, headless Chromium.

A project with the shipped ``video_concepts.xml`` (labels, no prompt) gets a task that holds only
a synthetic ffmpeg-encoded video with three moving objects. Label Studio's "Retrieve
predictions" pre-annotates it: the labels (but the fallback) are the concepts and every instance
is its own track with its own label and keyframe mask page. Reference: the sam3 plugin run here,
in this process, on the same file with the labels as concepts. The editor must show every track
and mask page (a screenshot is kept: docs/sam3-concepts.png is a copy). Then a keyframe mask is
corrected (a brush edit submitted as an annotation through Label Studio's API): the webhook's
re-propagated prediction carries the corrected mask exactly on its frame, the corrected
object's track equals the plugin's own correction here, and the other tracks are unchanged.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from tests.browser import show_task
from tests.sam3_fixtures import load_sam3_plugin, tiny_sam3_dir  # noqa: F401 - fixture
from tests.served_backend import poll, served_backend
from tests.test_labelstudio_e2e import ARTIFACTS
from vrshq.backend.labelstudio.labelconfig import parse_label_config, shipped_config
from vrshq.backend.labelstudio.predictions import parse_annotation
from vrshq.backend.tasks.state import TaskStateStore
from vrshq.masks import encode_brush
from vrshq.masks.boxes import box_to_percent, mask_to_box
from vrshq.plugins.base import Correction, ObjectPrompt
from vrshq.synthetic import SyntheticSpec, write_video
from vrshq.video.reader import open_video

pytest.importorskip("transformers")
pytestmark = pytest.mark.timeout(900)

XML = shipped_config("video_concepts")
INFO = parse_label_config(XML)
CONCEPTS = ("Person", "Car", "Animal")  # the config's labels but its fallback, Object
SPEC = SyntheticSpec(num_frames=16, width=320, height=240, fps=10.0, num_objects=3, seed=11)
# SAM 3's cap on the instances one session tracks. The tiny random model scores every detector
# query about 0.5, right at its admission threshold (vrshq/model/sam3_tiny.py), so uncapped it
# admitted 29 instances on this 16-frame video: too many for one editor page and its screenshot.
# Capped at 2 per concept session it keeps 5 (1 Person, 2 Car, 2 Animal), the same every run.
MAX_INSTANCES = 2


@pytest.fixture(scope="module")
def sam3_model(tiny_sam3_dir, tmp_path_factory) -> Path:  # noqa: F811
    """A copy of the tiny SAM 3 with ``max_num_objects`` capped (see MAX_INSTANCES)."""
    root = tmp_path_factory.mktemp("sam3_capped")
    shutil.copytree(tiny_sam3_dir / "sam3", root / "sam3")
    config_path = root / "sam3" / "config.json"
    config = json.loads(config_path.read_text())
    config["max_num_objects"] = MAX_INSTANCES
    config_path.write_text(json.dumps(config, indent=2))
    return root


@pytest.fixture(scope="module")
def sam3_server(label_studio, sam3_model, tmp_path_factory) -> dict[str, Any]:
    """`vrshq serve` with VRSHQ_PLUGIN=sam3, wired to the session's Label Studio."""
    with served_backend(label_studio, sam3_model, tmp_path_factory.mktemp("sam3_backend"),
                        # keyframe pages only: these tests count one mask page per instance
                        # (the extra pages are tests/test_mask_pages*.py's)
                        VRSHQ_PLUGIN="sam3", HF_HUB_OFFLINE="1", VRSHQ_MASK_PAGES="0") as served:
        yield served


@pytest.fixture(scope="module")
def plugin(sam3_model):
    """The reference: the sam3 plugin in this process, on the same (capped) model."""
    return load_sam3_plugin(sam3_model)


@pytest.fixture(scope="module")
def project(label_studio, ls_api, sam3_server) -> dict[str, Any]:
    """A concepts project with one task (video and fps only), predicted through Label Studio."""
    clips = label_studio.doc_root / "sam3"
    clips.mkdir(parents=True, exist_ok=True)
    write_video(SPEC, clips / "three.mp4")
    pid = ls_api.create_project("vrshq sam3 concepts", XML)
    ls_api.add_local_storage(pid, clips)
    (tid,) = ls_api.import_tasks(pid, [{"data": {"video": "/data/local-files/?d=sam3/three.mp4",
                                                 "fps": SPEC.fps}}])
    ls_api.connect_ml_backend(pid, sam3_server["url"], is_interactive=True)
    ls_api.retrieve_predictions(pid, [tid])
    (pred,) = poll("the sam3 prediction", lambda: ls_api.list_predictions(tid), timeout=300)
    return {"id": pid, "task": tid, "video": clips / "three.mp4", "prediction": pred}


@pytest.fixture(scope="module")
def reference(plugin, project):
    """The plugin's own instances for the labels as concepts, on the task's video file."""
    prompts = [ObjectPrompt(obj_id=i + 1, text=c, label=c) for i, c in enumerate(CONCEPTS)]
    with open_video(project["video"], fps=SPEC.fps) as video:
        return plugin.predict(video, prompts)


def _tracks(result: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in result if r["type"] == "videorectangle"]


def _percent_boxes(obj) -> dict[int, dict[str, float]]:
    """Frame -> Label Studio percent box of every frame the object's mask is on."""
    out = {}
    for f in obj.track.frames():
        box = mask_to_box(obj.track.mask(f))
        if box is not None:
            out[f] = box_to_percent(box, SPEC.height, SPEC.width)
    return out


def _assert_boxes(got: dict[int, dict[str, float]], want: dict[int, dict[str, float]], where: str) -> None:
    assert sorted(got) == sorted(want), (where, sorted(got), sorted(want))
    for f, box in want.items():
        assert got[f] == pytest.approx(box, abs=1e-6), (where, f)


def test_the_labels_pre_annotate_every_instance_as_its_own_track(ls_api, project, reference):
    tid, pred = project["task"], project["prediction"]
    assert pred["model_version"].startswith("sam3-"), pred["model_version"]
    tracks = _tracks(pred["result"])
    assert len(reference) >= 2 and len({o.label for o in reference}) >= 2, \
        [(o.obj_id, o.label) for o in reference]
    # one track per instance, in the plugin's order, with its concept's label
    assert [t["id"] for t in tracks] == [f"vrshq-{tid}-{o.obj_id}" for o in reference]
    assert [t["value"]["labels"] for t in tracks] == [[o.label] for o in reference]
    assert all(t["meta"]["label_rule"] for t in tracks)
    data = ls_api.get_task(tid)["data"]
    assert data["keyframe_frames"] == [o.keyframe + 1 for o in reference]
    assert len(data["keyframes"]) == len(reference)
    parsed = parse_annotation(pred["result"], INFO)
    for index, obj in enumerate(reference):
        rid = f"vrshq-{tid}-{obj.obj_id}"
        brush = next(r for r in pred["result"] if r["id"] == f"{rid}-mask")
        assert brush["item_index"] == index and brush["value"]["brushlabels"] == [obj.label]
        assert np.array_equal(parsed[rid].mask, obj.keyframe_mask), rid
        _assert_boxes(parsed[rid].boxes, _percent_boxes(obj), rid)


def test_the_editor_shows_every_instance_track_and_mask_page(label_studio, project, reference):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "sam3-concepts.png"
    seen = show_task(label_studio, project["id"], project["task"], shot)
    tracks = [r["label"] for r in seen["regions"] if r["type"] == "videorectangleregion"]
    masks = [r["label"] for r in seen["regions"] if r["type"] == "brushregion"]
    want = sorted(o.label for o in reference)
    assert seen["videoCanvas"] and seen["videoTimeline"], seen
    assert seen["timelineRows"] == len(reference), seen["timelineRows"]
    assert sorted(tracks) == want and sorted(masks) == want, seen["regions"]
    assert seen["keyframeImageSize"] == [SPEC.width, SPEC.height], seen
    assert [p["page"] for p in seen["maskPages"]] == list(range(1, len(reference) + 1))
    for page, obj in zip(seen["maskPages"], reference):
        # page k shows the keyframe mask of instance k: its pixels painted, nothing far off it
        chars = np.frombuffer(page["painted"].encode(), np.uint8).reshape(SPEC.height, SPEC.width)
        painted, on_screen = chars == ord("1"), chars != ord(".")
        wanted = obj.keyframe_mask & on_screen
        hit = int((painted & wanted).sum())
        assert wanted.sum() > 0 and hit / wanted.sum() >= 0.9, (page["page"], hit, int(wanted.sum()))
        assert hit / max(1, int(painted.sum())) >= 0.9, (page["page"], hit, int(painted.sum()), page["layers"])
    assert shot.stat().st_size > 10_000


def test_a_corrected_mask_re_propagates_with_the_mask_exactly_on_its_frame(ls_api, project, reference,
                                                                            plugin, sam3_server):
    tid, pred = project["task"], project["prediction"]
    target = reference[1]  # the second instance; the others stay as predicted
    rid = f"vrshq-{tid}-{target.obj_id}"
    fixed = np.zeros((SPEC.height, SPEC.width), bool)
    fixed[60:140, 100:200] = True
    fixed[90:110, 130:170] = False  # a hole: the exact mask, not its box, must come back
    result = copy.deepcopy(pred["result"])
    next(r for r in result if r["id"] == f"{rid}-mask")["value"]["rle"] = encode_brush(fixed)
    before = len(ls_api.list_predictions(tid))
    ls_api.create_annotation(tid, result)
    (new,) = poll("the re-propagated prediction", lambda: ls_api.list_predictions(tid)[before:], timeout=300)

    assert {r["id"] for r in new["result"]} == {r["id"] for r in pred["result"]}
    parsed = parse_annotation(new["result"], INFO)
    # against the edit itself first (the in-process reference below runs the same plugin code)
    assert np.array_equal(parsed[rid].mask, fixed), "the corrected keyframe mask did not come back exactly"
    frame_box = box_to_percent(mask_to_box(fixed), SPEC.height, SPEC.width)
    assert parsed[rid].boxes[target.keyframe] == pytest.approx(frame_box, abs=1e-6)
    # the backend's own track (what overlays and exports are made from) holds it on its frame too
    stored = TaskStateStore(sam3_server["model_dir"]).load(project["id"], tid).object(target.obj_id)
    assert np.array_equal(stored.track.mask(target.keyframe), fixed), "the track lost the exact correction"
    with open_video(project["video"], fps=SPEC.fps) as video:
        want = plugin.correct(video, reference, [Correction(target.obj_id, target.keyframe, fixed)])
    want_by_id = {o.obj_id: o for o in want}
    want_track = want_by_id[target.obj_id].track
    assert stored.track.frames() == want_track.frames()
    for f in want_track.frames():
        assert np.array_equal(stored.track.mask(f), want_track.mask(f)), f"frame {f} differs from the plugin's"
    _assert_boxes(parsed[rid].boxes, _percent_boxes(want_by_id[target.obj_id]), rid)
    old = parse_annotation(pred["result"], INFO)
    for obj in reference:
        other = f"vrshq-{tid}-{obj.obj_id}"
        assert parsed[other].label == obj.label, other
        if obj.obj_id != target.obj_id:
            assert parsed[other].boxes == old[other].boxes, other
            assert np.array_equal(parsed[other].mask, old[other].mask), other
    jobs = requests.get(sam3_server["url"] + "/jobs", timeout=10).json()["jobs"]
    assert all(j["state"] == "done" for j in jobs), jobs
