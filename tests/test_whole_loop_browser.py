"""Issue 14 §5: the whole review loop in a real Label Studio 1.23.2 and headless Chromium.

A task of the overlay config (masks on every frame in a second, synced ``<Video>``; mask pages
beyond the keyframe) is predicted by ``vrshq serve`` through Label Studio's "Retrieve
predictions". Then, as an annotator would:

1. fix object 1's mask on its keyframe page and submit (an annotation in Label Studio: its
   webhook logs the fix and a job posts the re-propagated prediction);
2. fix the same object on one of its extra pages (a frame that is not the keyframe) and submit:
   the new prediction carries that mask exactly on that frame's page and keeps the first fix on
   the keyframe's;
3. in the editor, with the mouse: ask for another frame on demand (``frame N #1`` typed into the
   prompt box with Auto-Annotation on): the open editor shows it, without a reload, on the
   pager's last page (the on-demand page: frame N's picture, the object's current mask); paint a
   brush stroke there with the object's label and click Update: the saved stroke is where the
   mouse went, and the re-propagated prediction carries the page's mask exactly on frame N;
4. in the browser, go to each of the three fixed frames in the editor: the overlay video shows
   object 1's mask where the fix put it (its label colour over the object, none away from it),
   in step with the main video; a screenshot at each (the README shows one);
5. ``vrshq export --format youtube-vis`` and read it back with pycocotools: the three fixes on
   their frames, ``corrected``, the other frames ``propagated``.

The fixes are the synthetic video's exact ground truth masks, so "the masks follow the objects"
is checked against the truth on the first two fixed frames (tiny random weights track nothing by
themselves); those two annotations are created through Label Studio's API with the editor's
result format, the third is drawn with the mouse (tests/browser/demand_stroke.mjs).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vrshq.backend.labelstudio.labelconfig import parse_label_config, shipped_config
from vrshq.backend.labelstudio.overlay import ALPHA
from vrshq.backend.labelstudio.predictions import page_region_id, parse_annotation
from vrshq.backend.tasks.state import TaskStateStore
from vrshq.masks import decode_brush, encode_brush
from vrshq.synthetic import SyntheticSpec, ground_truth, write_video
from tests.cli_helpers import VRSHQ
from tests.served_backend import poll, served_backend

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "tests" / "browser" / "frames_view.mjs"
ARTIFACTS = Path(os.environ.get("VRSHQ_TEST_ARTIFACTS") or REPO / ".test-artifacts")
XML = shipped_config("video_text_prompt_overlay")
INFO = parse_label_config(XML)
SPEC = SyntheticSpec(num_frames=24, width=320, height=240, fps=10.0, num_objects=2, seed=21)
OBJECT = 1  # the object fixed; prompt line 1 -> the fallback label "Object"
COLOUR = np.array([0xf5, 0x82, 0x31], float)  # the config's colour of "Object"
pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(scope="module")
def served(label_studio, tiny_models, tmp_path_factory):
    """`vrshq serve` wired to the session's Label Studio, with two extra mask pages per object."""
    with served_backend(label_studio, tiny_models, tmp_path_factory.mktemp("loop_backend"),
                        VRSHQ_MASK_PAGES="2") as served:
        yield served


def newest(ls_api, tid: int) -> dict[str, Any]:
    return max(ls_api.list_predictions(tid), key=lambda p: p["id"])


def with_page_mask(result: list, rid: str, mask: np.ndarray) -> list:
    out = copy.deepcopy(result)
    (brush,) = [r for r in out if r["type"] == "brushlabels" and r["id"] == rid]
    brush["value"]["rle"] = encode_brush(mask)
    return out


def submit_fix(ls_api, tid: int, result: list) -> dict[str, Any]:
    """Submit an annotation; the re-propagated prediction it leads to."""
    before = max(p["id"] for p in ls_api.list_predictions(tid))
    ls_api.create_annotation(tid, result)
    return poll("the re-propagated prediction",
                lambda: next((p for p in ls_api.list_predictions(tid) if p["id"] > before), None))


def page_masks(result: list, tid: int, keyframe: int) -> dict[int, np.ndarray]:
    """Object 1's masks by 0-based frame, from its keyframe page and every extra page of a result."""
    region = parse_annotation(result, INFO)[f"vrshq-{tid}-{OBJECT}"]
    return {**region.pages, keyframe: region.mask}


def test_review_correct_on_any_frame_and_export(label_studio, ls_api, served, tmp_path):
    if not shutil.which("node") or not (SCRIPT.parent / "node_modules" / "playwright-core").is_dir():
        pytest.fail("node and playwright-core are needed: run scripts/setup_labelstudio.sh --with-browser")
    truth = ground_truth(SPEC)  # (frames, H, W) object ids, 0 = background
    clips = label_studio.doc_root / "loop"
    clips.mkdir(parents=True, exist_ok=True)
    write_video(SPEC, clips / "v.mp4")
    pid = ls_api.create_project("vrshq whole loop", XML)
    ls_api.add_local_storage(pid, clips)
    (tid,) = ls_api.import_tasks(pid, [{"data": {
        "video": "/data/local-files/?d=loop/v.mp4", "fps": SPEC.fps, "overlay": "",
        "prompt": "the red disc\nthe green car"}}])
    ls_api.connect_ml_backend(pid, served["url"], is_interactive=True)
    ls_api.retrieve_predictions(pid, [tid])
    first = poll("the prediction", lambda: ls_api.list_predictions(tid))[0]
    data = ls_api.get_task(tid)["data"]
    assert data["overlay"].startswith("/data/local-files/?d=loop/"), data["overlay"]
    pages = list(zip(data["keyframe_objects"], data["keyframe_frames"]))
    keyframe = pages[OBJECT - 1][1] - 1  # page i (< objects) is object i+1's keyframe page
    extra = [f - 1 for o, f in pages[2:] if o == OBJECT]
    assert extra and keyframe not in extra, pages
    gt = lambda f: truth[f] == OBJECT  # noqa: E731
    shots = ARTIFACTS / "whole-loop"
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)

    # 1. the keyframe page fixed
    fix1 = submit_fix(ls_api, tid, with_page_mask(first["result"], f"vrshq-{tid}-{OBJECT}-mask", gt(keyframe)))
    assert np.array_equal(page_masks(fix1["result"], tid, keyframe)[keyframe], gt(keyframe))
    # 2. an extra page (not the keyframe) fixed: both fixes in the next prediction, exactly
    second = next(f for f in extra if f < SPEC.num_frames - 1)  # see the frame counter's clamp below
    fix2 = submit_fix(ls_api, tid, with_page_mask(fix1["result"], page_region_id(f"vrshq-{tid}-{OBJECT}", second),
                                                    gt(second)))
    masks = page_masks(fix2["result"], tid, keyframe)
    assert np.array_equal(masks[second], gt(second)) and np.array_equal(masks[keyframe], gt(keyframe))
    # 3. in the editor, with the mouse: a frame on demand (``frame N #1`` typed into the prompt box
    # with Auto-Annotation on), shown without a reload on the pager's last page (the on-demand
    # page); a brush stroke painted there and the annotation updated with the editor's button.
    # Not the last frame: LS 1.23.2's frame counter clamps a typed number to frames - 1.
    third = next(f for f in range(SPEC.num_frames - 2, -1, -1) if f not in (keyframe, *extra) and gt(f).any())
    ann2 = max(a["id"] for a in ls_api.list_annotations(tid))  # the annotation of fix 2, opened
    loaded = ls_api.get_task(tid)["data"]
    slot = len(loaded["keyframes"]) - 1  # the on-demand page: the list's last, no frame, no object
    assert (loaded["keyframe_frames"][slot], loaded["keyframe_objects"][slot]) == (0, 0), loaded
    state = TaskStateStore(served["model_dir"]).load(str(pid), tid)
    current = state.object(OBJECT).track.mask(third)  # what the page must show
    picture = _decoded_frame(clips / "v.mp4", third)
    probes = _probes(current, gt(third))
    y0 = _stroke_row(current)
    stroke = [[40, y0], [SPEC.width - 60, y0]]
    before = max(p["id"] for p in ls_api.list_predictions(tid))
    view = _demand_stroke(label_studio, pid, tid, ann2, f"frame {third + 1} #{OBJECT}", stroke,
                          [[int(x), int(y)] for y, x in probes], shots)
    rid = page_region_id(f"vrshq-{tid}-{OBJECT}", third)
    # The open editor: as many pages as it loaded (it never re-reads the list), the last one shown,
    # with frame N's picture (not the placeholder) and the object's current mask painted on it.
    assert view["before"]["pages"] == view["after"]["pages"] == slot + 1, view
    assert view["after"]["current"] == slot and view["after"]["last"] == loaded["keyframes"][slot]
    assert [rid, slot] in view["answer"], view["answer"]
    assert view["after"]["naturalSize"] == [SPEC.width, SPEC.height]
    for (y, x), rgb in zip(probes, view["after"]["rgb"]):
        assert np.abs(np.array(rgb, int) - picture[y, x].astype(int)).max() <= 40, \
            ((y, x), rgb, picture[y, x], view["answer"], view["log"])
    painted = view["after"]["painted"]
    cells = np.array(list(painted["painted"])).reshape(painted["height"], painted["width"])
    checked = 0
    for y, x in probes:  # away from the mask's edge: its inside painted, its outside not
        if cells[y, x] == ".":
            continue  # not on screen (the stage may show the picture zoomed and cropped)
        if _eroded(current, 2)[y, x]:
            assert cells[y, x] == "1", (y, x)
        elif not _dilated(current, 2)[y, x]:
            assert cells[y, x] == "0", (y, x)
        checked += 1
    assert checked >= 6, painted["painted"].count(".")
    # Label Studio's data: the page in the on-demand page's place, a fresh one after it.
    data = ls_api.get_task(tid)["data"]
    assert (data["keyframe_frames"][slot], data["keyframe_objects"][slot]) == (third + 1, OBJECT)
    assert len(data["keyframes"]) == slot + 2 and data["keyframe_frames"][-1] == 0
    # The stroke as saved: a brush region of its own on the page, where the mouse went.
    assert view["saved"]["status"] in (200, 201), view["saved"]
    fix3 = poll("the re-propagated prediction",
                lambda: next((p for p in ls_api.list_predictions(tid) if p["id"] > before), None))
    saved = ls_api.get_annotation(view["saved"]["id"])["result"]
    on_page = [r for r in saved if r["type"] == "brushlabels" and r.get("item_index") == slot]
    assert rid in {r["id"] for r in on_page}, on_page
    stroked = [decode_brush(r["value"]["rle"], SPEC.height, SPEC.width) for r in on_page if r["id"] != rid]
    assert len(stroked) == 1, [r["id"] for r in on_page]
    _check_stroke(stroked[0], stroke, view["stroke"]["scale"])
    drawn = np.logical_or.reduce([decode_brush(r["value"]["rle"], SPEC.height, SPEC.width) for r in on_page])
    assert not np.array_equal(drawn, current)
    # ... and it is the correction on frame N, exactly, in the prediction and the state.
    fixes = {keyframe: gt(keyframe), second: gt(second), third: drawn}
    masks = page_masks(fix3["result"], tid, keyframe)
    for f, want in fixes.items():
        assert np.array_equal(masks[f], want), f
    state = TaskStateStore(served["model_dir"]).load(str(pid), tid)
    for f, want in fixes.items():
        assert np.array_equal(state.object(OBJECT).track.mask(f), want), f

    # 4. the editor, at each fixed frame: the overlay shows the fix on the object. A fix's
    # overlay is written by an `overlay` job after its prediction: wait for the three fixes' jobs.
    jobs = poll("the fixes' overlay jobs", lambda: _overlay_jobs_settled(served["url"], tid, 3))
    assert all(j["state"] == "done" for j in jobs), jobs
    wrote = [j["result"]["overlay"] for j in jobs if j["result"].get("overlay")]
    assert wrote and ls_api.get_task(tid)["data"]["overlay"] == wrote[-1], (jobs, wrote)
    fixed = sorted(fixes)
    points, where = [], []
    for f in fixed:
        # Object 1 where no other object's mask is drawn over it; away from every drawn mask.
        others = np.zeros_like(gt(f))
        for o in state.objects:
            if o.obj_id != OBJECT:
                others |= o.track.mask(f)
        inside = np.argwhere(_eroded(fixes[f], 3) & ~_dilated(others, 3))
        outside = np.argwhere(_eroded(~(others | fixes[f]), 6))
        assert len(inside) and len(outside), f
        for kind, cells in (("in", inside), ("out", outside)):
            for y, x in cells[np.linspace(0, len(cells) - 1, 6).astype(int)]:
                points.append([int(x), int(y)])
                where.append((f, kind))
    view = _frames_view(label_studio, pid, tid, [f + 1 for f in fixed], points, shots)
    assert view["videos"] == 2
    for sample in view["samples"]:
        f = sample["frame"] - 1
        assert abs(sample["main"]["t"] - sample["overlay"]["t"]) <= 0.5 / SPEC.fps, sample
        for (pf, kind), main, over in zip(where, sample["main"]["rgb"], sample["overlay"]["rgb"]):
            if pf != f:
                continue
            main, over = np.array(main, float), np.array(over, float)
            blended = main * (1 - ALPHA) + COLOUR * ALPHA
            if kind == "in":  # the label colour blended in: nearer the blend than the plain picture
                assert np.abs(over - blended).max() < np.abs(over - main).max(), (f, main, over)
            else:
                assert np.abs(over - main).max() <= 24, (f, main, over)
        assert Path(sample["shot"]).stat().st_size > 10_000

    # 5. the dataset out, read back with pycocotools
    out = tmp_path / "export"
    env = served["env"]
    run = subprocess.run([str(VRSHQ), "export", "--project", str(pid), "--format",
                          "youtube-vis", "--out", str(out), "--no-images", "--no-progress"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    from pycocotools import mask as mask_utils

    doc = json.loads((out / "instances.json").read_text())
    (ann,) = [a for a in doc["annotations"] if a["obj_id"] == OBJECT]
    for f in fixed:
        rle = dict(ann["segmentations"][f])
        rle["counts"] = rle["counts"].encode() if isinstance(rle["counts"], str) else rle["counts"]
        assert np.array_equal(mask_utils.decode(rle).astype(bool), fixes[f]), f
        assert ann["provenance"][f] == "corrected", (f, ann["provenance"])
    assert {ann["provenance"][f] for f in range(SPEC.num_frames) if f not in fixed} <= {"propagated", "reviewed"}


def _overlay_jobs_settled(url: str, tid: int, count: int) -> list | None:
    """The task's overlay jobs (oldest first) once at least ``count`` exist and none is queued
    or running; else None."""
    import requests

    jobs = [j for j in requests.get(f"{url}/jobs", timeout=10).json()["jobs"]
            if j["kind"] == "overlay" and j.get("task") == tid]
    if len(jobs) < count or any(j["state"] in ("queued", "running") for j in jobs):
        return None
    return sorted(jobs, key=lambda j: j["created"])


def _decoded_frame(path: Path, index: int) -> np.ndarray:
    """Frame ``index`` of the video file as PyAV decodes it (RGB), independent of vrshq's reader."""
    import av

    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == index:
                return frame.to_ndarray(format="rgb24")
    raise AssertionError(f"{path} has no frame {index}")


def _probes(mask: np.ndarray, truth: np.ndarray) -> list[tuple[int, int]]:
    """Points (y, x) to read the page at: inside and outside the mask and the object, off edges
    and off the caption in the top-left corner."""
    out: list[tuple[int, int]] = []
    free = np.ones_like(mask)
    free[:20, :130] = False
    for cells in (np.argwhere(_eroded(mask, 3) & free), np.argwhere(_eroded(~mask, 3) & free),
                  np.argwhere(_eroded(truth, 3) & free), np.argwhere(_eroded(~truth, 3) & free)):
        if len(cells):
            out += [tuple(int(v) for v in cells[i]) for i in np.linspace(0, len(cells) - 1, 6).astype(int)]
    return sorted(set(out))


def _stroke_row(mask: np.ndarray) -> int:
    """A row for the stroke where the mask has the fewest pixels (so the stroke adds some)."""
    rows = range(30, SPEC.height - 30)
    return min(rows, key=lambda y: (int(mask[y - 4:y + 5, 40:SPEC.width - 60].sum()), y))


# Label Studio's brush is 15 screen pixels wide by default: 15 / scale picture pixels.
BRUSH = 15


def _check_stroke(painted: np.ndarray, stroke: list, scale: float) -> None:
    """The stroke's mask is the mouse's path widened by the brush: every pixel within half the
    brush width less 0.5 px of the path painted, none farther than half the width plus 1.5 px
    (rasterized with round caps and edge pixels, seen: 3.6 px for a 5.9 px brush)."""
    (x0, y0), (x1, y1) = stroke
    assert y0 == y1, stroke
    yy, xx = np.mgrid[0:SPEC.height, 0:SPEC.width]
    dist = np.hypot(xx - np.clip(xx, x0, x1), yy - y0)
    half = BRUSH / scale / 2
    assert painted[dist <= half - 0.5].all(), "the stroke misses pixels of its path"
    assert not painted[dist > half + 1.5].any(), "the stroke painted away from its path"


def _demand_stroke(server, project: int, task: int, annotation: int, text: str, stroke: list,
                   points: list, shots: Path) -> dict:
    """Run tests/browser/demand_stroke.mjs (see its header); what it reports."""
    script = SCRIPT.parent / "demand_stroke.mjs"
    args = {"url": server.url, "email": server.username, "password": server.password,
            "project": project, "task": task, "annotation": annotation, "text": text,
            "label": "Object", "stroke": stroke, "points": points, "shots": str(shots),
            "timeout_ms": 120000, "debug": True}
    proc = subprocess.run(["node", str(script), json.dumps(args)], cwd=str(script.parent),
                          capture_output=True, text=True, timeout=500)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    assert proc.returncode == 0 and lines, (proc.stdout[-2000:], proc.stderr[-4000:])
    # the script's log (requests, responses) comes along for the failure messages
    return {**json.loads(lines[-1]), "log": proc.stderr[-3000:]}


def _eroded(mask: np.ndarray, r: int) -> np.ndarray:
    """``mask`` shrunk by ``r`` pixels (a square structuring element): points clear of its edge."""
    from scipy.ndimage import binary_erosion

    return binary_erosion(mask, structure=np.ones((2 * r + 1, 2 * r + 1), bool))


def _dilated(mask: np.ndarray, r: int) -> np.ndarray:
    """``mask`` grown by ``r`` pixels."""
    from scipy.ndimage import binary_dilation

    return binary_dilation(mask, structure=np.ones((2 * r + 1, 2 * r + 1), bool))


def _frames_view(server, project: int, task: int, frames: list[int], points: list, shots: Path) -> dict:
    args = {"url": server.url, "email": server.username, "password": server.password,
            "project": project, "task": task, "frames": frames, "points": points, "shots": str(shots),
            "main": "loop/v.mp4", "overlay": "vrshq-overlays", "timeout_ms": 120000}
    proc = subprocess.run(["node", str(SCRIPT), json.dumps(args)], cwd=str(SCRIPT.parent),
                          capture_output=True, text=True, timeout=400)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    assert proc.returncode == 0 and lines, (proc.stdout[-2000:], proc.stderr[-4000:])
    return json.loads(lines[-1])
