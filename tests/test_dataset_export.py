"""``vrshq export``: the final masks of a project with their provenance, in four formats, read back.

Provenance is recorded the real way (a webhook on the tiny-model backend) in the first tests;
the format tests build task states directly from synthetic ground truth, so every expected mask
and provenance is known exactly.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from PIL import Image

from vrshq.backend.export.final import final_task
from vrshq.backend.export.run import export_dataset
from vrshq.backend.labelstudio.labelconfig import parse_label_config
from vrshq.backend.labelstudio.media import MediaConfig
from vrshq.backend.labelstudio.predictions import parse_annotation
from vrshq.backend.tasks.projects import ProjectInfo, ProjectRegistry
from vrshq.backend.tasks.provenance import CORRECTED, DELETED, REVIEWED, Review
from vrshq.backend.tasks.state import TaskState, TaskStateStore
from vrshq.cli import main
from vrshq.errors import VrshqError
from vrshq.masks import Track, encode_brush, read_palette_png
from vrshq.plugins.base import Correction, ObjectTrack
from vrshq.synthetic import SyntheticSpec, ground_truth, write_video
from tests.backend_fixtures import TEXT_XML, next_task_id, text_task

SMALL = SyntheticSpec(num_frames=8, width=64, height=48, fps=10.0, num_objects=2, seed=3,
                      leave_frame=False)
URL = "/data/local-files/?d=clips/v.mp4"


# --- provenance recorded by the webhook -------------------------------------------------------

def _predict(client, tid):
    r = client.post("/predict", json={"tasks": [text_task(tid)], "project": "1", "label_config": TEXT_XML})
    assert r.status_code == 200, r.json
    return r.json["results"][0]


def _webhook(client, tid, result, annotation_id, cancelled=False):
    return client.post("/webhook", json={
        "action": "ANNOTATION_CREATED", "project": {"id": 1, "label_config": TEXT_XML},
        "task": {"id": tid, "data": text_task(tid)["data"]},
        "annotation": {"id": annotation_id, "task": tid, "completed_by": 9, "result": result,
                       "was_cancelled": cancelled, "updated_at": "2026-12-01T10:00:00+00:00"}})


def test_a_submitted_annotation_records_what_was_corrected_and_reviewed(client, vrshq_backend, tmp_path):
    tid = next_task_id()
    pred = _predict(client, tid)
    state = vrshq_backend.states.load(1, tid)
    assert (state.submissions, state.reviews) == ([], [])
    # A cancelled (skipped) annotation is no submission.
    assert _webhook(client, tid, pred["result"], 70, cancelled=True).status_code == 201
    assert vrshq_backend.states.load(1, tid).submissions == []

    fixed = np.zeros((state.objects[0].track.height, state.objects[0].track.width), bool)
    fixed[40:70, 60:90] = True
    result = copy.deepcopy(pred["result"])
    for r in result:
        if r["type"] == "brushlabels" and r["id"] == f"vrshq-{tid}-2-mask":
            r["value"]["rle"] = encode_brush(fixed)
    assert _webhook(client, tid, result, 71).status_code == 201
    state = vrshq_backend.states.load(1, tid)
    assert state.submissions == ["71"]
    by_obj = {r.obj_id: r for r in state.reviews if r.frame == state.object(r.obj_id).keyframe}
    assert (by_obj[1].status, by_obj[1].frame) == (REVIEWED, state.object(1).keyframe)
    assert (by_obj[2].status, by_obj[2].frame) == (CORRECTED, state.object(2).keyframe)
    assert np.array_equal(by_obj[2].mask, fixed)
    # Every shown page is a verdict: the keyframe page and the extra mask pages (issue 14 §2).
    shown = {o.obj_id: sorted([o.keyframe] + [p.frame for p in state.pages if p.obj_id == o.obj_id])
             for o in state.objects}
    assert sorted((r.obj_id, r.frame) for r in state.reviews) == [(i, f) for i in shown for f in shown[i]]

    final = final_task(state)
    o1, o2 = final.objects
    assert [f for f, p in enumerate(o1.provenance) if p != "propagated"] == shown[1]
    assert o1.provenance[state.object(1).keyframe] == REVIEWED
    assert [f for f, p in enumerate(o2.provenance) if p != "propagated"] == shown[2]
    assert o2.provenance[state.object(2).keyframe] == CORRECTED
    # The drawn mask is the final mask on its frame, though nothing re-propagated it (no LS here).
    hw = (final.height, final.width)
    assert np.array_equal(o2.mask(state.object(2).keyframe, hw), fixed)


def test_a_submission_is_recorded_while_a_job_holds_the_task(client, vrshq_backend):
    """A re-propagation holds the task's lock for minutes: the webhook must not wait for it, and
    the job's save of the state it loaded before must not erase the submission."""
    import threading

    tid = next_task_id()
    pred = _predict(client, tid)
    states = vrshq_backend.states
    held, release = threading.Event(), threading.Event()

    def job():
        with states.lock(1, tid):
            stale = states.load(1, tid)
            held.set()
            release.wait(30)
            states.save(stale)

    worker = threading.Thread(target=job)
    worker.start()
    assert held.wait(10)
    answer = {}
    hook = threading.Thread(target=lambda: answer.update(r=_webhook(client, tid, pred["result"], 80)))
    hook.start()
    hook.join(20)
    finished = not hook.is_alive()
    release.set()
    worker.join(10)
    hook.join(10)
    assert finished, "the webhook waited for the job's lock"
    assert answer["r"].status_code == 201
    state = states.load(1, tid)
    shown = len(state.objects) + len(state.pages)  # keyframe pages and extra mask pages
    assert state.submissions == ["80"] and [r.status for r in state.reviews] == [REVIEWED] * shown


def test_corrections_sync_records_what_the_missed_annotations_submitted(tmp_path):
    """Annotations whose webhook never arrived: ``corrections sync`` records their verdicts too."""
    from vrshq.backend.corrections import CorrectionsLog
    from vrshq.backend.corrections.sync import sync_project
    from vrshq.backend.labelstudio.results import state_results

    store = TaskStateStore(tmp_path)
    store.save(_state("1", "6", submitted=False))
    predicted = state_results(store.load("1", "6"), parse_label_config(TEXT_XML))
    drawn = _square(10, 10)
    corrected = copy.deepcopy(predicted)
    for r in corrected:
        if r["type"] == "brushlabels" and r["id"] == "vrshq-6-1-mask":
            r["value"]["rle"] = encode_brush(drawn)

    class LabelStudio:  # what sync_project reads of Label Studio
        def project_label_config(self, project):
            return TEXT_XML

        def annotations(self, task):
            return [{"id": 31, "result": corrected, "parent_prediction": 5, "updated_at": "2026-12-01"},
                    {"id": 32, "result": [], "parent_prediction": 5, "was_cancelled": True}]

        def prediction_result(self, prediction):
            return predicted

    with CorrectionsLog.for_model_dir(tmp_path) as log:
        report = sync_project(log, store, LabelStudio(), "1")
    assert report.logged == 1
    state = store.load("1", "6")
    assert state.submissions == ["31"]
    by_obj = {r.obj_id: r for r in state.reviews}
    assert (by_obj[1].status, by_obj[2].status) == (CORRECTED, REVIEWED)
    assert np.array_equal(by_obj[1].mask, drawn)
    final = final_task(state)
    assert [o.provenance[0] for o in final.objects] == [CORRECTED, REVIEWED]


def test_a_state_written_before_provenance_still_loads():
    doc = _state("1", "5", submitted=False).to_json()
    del doc["submissions"], doc["reviews"]
    state = TaskState.from_json(doc)
    assert (state.submissions, state.reviews) == ([], [])


# --- a synthetic project: states built from exact ground truth -------------------------------

def _track(obj_id: int, masks: np.ndarray) -> Track:
    track = Track(obj_id, masks.shape[1], masks.shape[2])
    for f, m in enumerate(masks):
        track.set(f, m, score=1.0)
    return track


def _state(project: str, task: str, submitted: bool) -> TaskState:
    gt = ground_truth(SMALL)
    objs = [ObjectTrack(k, label, _track(k, gt == k), 0, gt[0] == k, 2.0, {"prompt": prompt})
            for k, label, prompt in ((1, "Person", "the red disc"), (2, "Car", "the car"))]
    return TaskState(project=project, task=task, plugin="vrshq", model_version="tiny", video=URL,
                     fps=SMALL.fps, frames_count=SMALL.num_frames, objects=objs,
                     submissions=["9"] if submitted else [])


def _square(y0: int, x0: int, size: int = 10) -> np.ndarray:
    m = np.zeros((SMALL.height, SMALL.width), bool)
    m[y0:y0 + size, x0:x0 + size] = True
    return m


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Data folder with project 1: task 1 (corrected + reviewed), task 2 (predicted only),
    task 3 (object 1 deleted, object 2 reviewed); the expected final masks and provenance."""
    data = tmp_path_factory.mktemp("export_data")
    media = tmp_path_factory.mktemp("export_media")
    (media / "clips").mkdir()
    write_video(SMALL, media / "clips" / "v.mp4")
    gt = ground_truth(SMALL)
    store = TaskStateStore(data)
    expected: dict[str, dict[int, tuple[np.ndarray, list[str]]]] = {}

    s1 = _state("1", "1", submitted=True)
    drawn3 = _square(5, 5)  # a re-propagation was given it (the track's correction list)
    s1.object(1).corrections = [Correction(1, 3, _square(0, 0)), Correction(1, 3, drawn3)]
    s1.object(1).track.set(3, drawn3)
    drawn2 = _square(20, 30)  # submitted, not re-propagated yet: only the review has it
    s1.reviews = [Review(1, 0, REVIEWED, gt[0] == 1, 9, "the red disc"),
                  Review(2, 2, CORRECTED, drawn2, 9, "the car"),
                  Review(2, 5, REVIEWED, _square(1, 1), 9, "the car"),  # no longer the track's mask
                  Review(1, 6, REVIEWED, gt[6] == 1, 9, "another prompt")]  # another object then
    store.save(s1)
    m1, m2 = (gt == 1).copy(), (gt == 2).copy()
    m1[3], m2[2] = drawn3, drawn2
    p1, p2 = ["propagated"] * 8, ["propagated"] * 8
    p1[0], p1[3], p2[2] = REVIEWED, CORRECTED, CORRECTED
    expected["p1_t1"] = {1: (m1, p1), 2: (m2, p2)}

    store.save(_state("1", "2", submitted=False))
    expected["p1_t2"] = {1: (gt == 1, ["propagated"] * 8), 2: (gt == 2, ["propagated"] * 8)}

    s3 = _state("1", "3", submitted=True)
    s3.reviews = [Review(1, 0, DELETED, np.zeros_like(gt[0], bool), 10, "the red disc"),
                  Review(2, 0, REVIEWED, gt[0] == 2, 10, "the car")]
    store.save(s3)
    expected["p1_t3"] = {2: (gt == 2, [REVIEWED] + ["propagated"] * 7)}
    ProjectRegistry(data).put(ProjectInfo("1", label_config=TEXT_XML))
    return {"data": data, "media": MediaConfig(local_roots=(str(media),)), "expected": expected,
            "gt": gt}


def _export(project, tmp_path, fmt, **kw):
    out = tmp_path / fmt
    info = parse_label_config(TEXT_XML) if fmt == "labelstudio" else None
    manifest = export_dataset(project["data"], "1", fmt, out, project["media"], label_config=info, **kw)
    return out, manifest


def _submitted(expected, include_unreviewed=False):
    return {k: v for k, v in expected.items() if include_unreviewed or k != "p1_t2"}


def test_youtube_vis_round_trip_and_schema(project, tmp_path):
    out, manifest = _export(project, tmp_path, "youtube-vis")
    doc = json.loads((out / "instances.json").read_text())
    assert {"videos", "annotations", "categories"} <= set(doc)
    assert doc["categories"] == [{"id": 1, "name": "Car", "supercategory": "object"},
                                 {"id": 2, "name": "Person", "supercategory": "object"}]
    expected = _submitted(project["expected"])
    videos = {v["id"]: v for v in doc["videos"]}
    assert sorted(v["file_names"][0].split("/")[0] for v in videos.values()) == sorted(expected)
    for v in videos.values():
        assert {"id", "width", "height", "length", "file_names"} <= set(v)
        assert (v["width"], v["height"], v["length"]) == (SMALL.width, SMALL.height, SMALL.num_frames)
        assert len(v["file_names"]) == v["length"]
        for name in v["file_names"]:  # the frames are there, at the video's size
            with Image.open(out / "JPEGImages" / name) as im:
                assert im.size == (SMALL.width, SMALL.height)
    # What the YouTube-VIS API (ytvos.py) indexes and decodes: unique ids, references that
    # resolve, RLE decoded by pycocotools at the video's size.
    from pycocotools import mask as mask_utils

    for key in ("videos", "annotations", "categories"):
        ids = [x["id"] for x in doc[key]]
        assert len(set(ids)) == len(ids) and all(isinstance(i, int) for i in ids), key
    cat_ids = {c["id"] for c in doc["categories"]}
    assert all(a["video_id"] in videos and a["category_id"] in cat_ids for a in doc["annotations"])
    seen = set()
    for a in doc["annotations"]:
        assert {"id", "video_id", "category_id", "segmentations", "areas", "bboxes", "iscrowd"} <= set(a)
        v = videos[a["video_id"]]
        assert len(a["segmentations"]) == len(a["areas"]) == len(a["bboxes"]) == v["length"]
        masks, provenance = expected[v["file_names"][0].split("/")[0]][a["obj_id"]]
        assert a["provenance"] == provenance
        assert a["category_id"] == {1: 2, 2: 1}[a["obj_id"]]  # Person 2, Car 1
        for f, (seg, area, box) in enumerate(zip(a["segmentations"], a["areas"], a["bboxes"])):
            if not masks[f].any():
                assert seg is None and area is None and box is None
                continue
            assert tuple(seg["size"]) == (v["height"], v["width"])
            assert np.array_equal(mask_utils.decode(seg).astype(bool), masks[f]) and area == masks[f].sum()
            ys, xs = np.nonzero(masks[f])
            assert box == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        seen.add((v["file_names"][0].split("/")[0], a["obj_id"]))
    assert seen == {(v, o) for v, objs in expected.items() for o in objs}
    assert manifest["counts"] == {"tasks": 2, "objects": 3, "corrected": 2, "reviewed": 2,
                                  "propagated": 20}


def test_coco_instances_read_back_with_pycocotools(project, tmp_path):
    from pycocotools.coco import COCO

    out, _ = _export(project, tmp_path, "coco", include_unreviewed=True)
    coco = COCO(str(out / "annotations.json"))
    expected = project["expected"]
    assert len(coco.getImgIds()) == 3 * SMALL.num_frames
    found = 0
    for img in coco.loadImgs(coco.getImgIds()):
        video, frame = img["file_name"].split("/")[0], img["frame_id"]
        assert (out / "JPEGImages" / img["file_name"]).is_file()
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))
        want = {o: (m[frame], p[frame]) for o, (m, p) in expected[video].items() if m[frame].any()}
        assert sorted(a["track_id"] for a in anns) == sorted(want)
        for a in anns:
            mask, provenance = want[a["track_id"]]
            assert np.array_equal(coco.annToMask(a).astype(bool), mask)
            assert a["attributes"]["provenance"] == provenance
            assert coco.loadCats(a["category_id"])[0]["name"] == {1: "Person", 2: "Car"}[a["track_id"]]
            found += 1
    assert found == sum(int(m.any(axis=(1, 2)).sum()) for objs in expected.values() for m, _ in objs.values())


def test_davis_palette_pngs_and_provenance(project, tmp_path):
    out, _ = _export(project, tmp_path, "davis")
    provenance = json.loads((out / "provenance.json").read_text())
    expected = _submitted(project["expected"])
    assert sorted(provenance) == sorted(expected)
    for video, objs in expected.items():
        assert {int(k): v for k, v in provenance[video].items()} == {o: p for o, (_, p) in objs.items()}
        for f in range(SMALL.num_frames):
            labels = read_palette_png(out / "Annotations" / video / f"{f:05d}.png")
            want = np.zeros(labels.shape, np.uint8)
            for o, (m, _) in sorted(objs.items()):
                want[m[f]] = o
            assert np.array_equal(labels, want), (video, f)


def test_labelstudio_json_holds_the_final_keyframe_masks_and_provenance(project, tmp_path):
    out, _ = _export(project, tmp_path, "labelstudio")
    tasks = {t["id"]: t for t in json.loads((out / "tasks.json").read_text())}
    assert sorted(tasks) == [1, 3] and not (out / "JPEGImages").exists()
    info = parse_label_config(TEXT_XML)
    expected = project["expected"]
    for tid, task in tasks.items():
        (ann,) = task["annotations"]
        regions = parse_annotation(ann["result"], info, frame_size=(SMALL.height, SMALL.width),
                                   frames_count=SMALL.num_frames)
        objs = expected[f"p1_t{tid}"]
        assert sorted(regions) == sorted(f"vrshq-{tid}-{o}" for o in objs)
        for o, (masks, provenance) in objs.items():
            assert np.array_equal(regions[f"vrshq-{tid}-{o}"].mask, masks[0])  # keyframe 0
            metas = [r["meta"]["provenance"] for r in ann["result"] if r["id"].startswith(f"vrshq-{tid}-{o}")]
            assert len(metas) == 2 and all(m == provenance for m in metas)


def test_include_unreviewed_and_the_cli(project, tmp_path, capsys):
    out = tmp_path / "ytvis"
    args = ["export", "--project", "1", "--format", "youtube-vis", "--out", str(out),
            "--data-dir", str(project["data"]), "--media-root", project["media"].local_roots[0],
            "--no-progress"]
    assert main(args) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line == (f"exported 2 task(s), 3 object(s); frames: 2 corrected, 2 reviewed, "
                    f"20 propagated -> {out}")
    assert main(args + ["--include-unreviewed", "--no-images"]) == 0  # replaces the previous export
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("exported 3 task(s), 5 object(s); frames: 2 corrected, 2 reviewed, 36 propagated")
    assert len(json.loads((out / "instances.json").read_text())["videos"]) == 3
    assert not (out / "JPEGImages").exists()

    # Errors: one line, exit 2, nothing written.
    stranger = tmp_path / "mine"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("keep me")
    for bad, words in (
        (["--out", str(stranger)], "not empty"),
        (["--project", "7"], "no predicted task of project 7"),
        (["--media-root", str(tmp_path / "nowhere")], "not a folder"),
    ):
        argv = list(args)
        for i in range(0, len(bad), 2):
            argv[argv.index(bad[i]) + 1] = bad[i + 1]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("vrshq: error:") and words in err, err
    assert [p.name for p in stranger.iterdir()] == ["notes.txt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_no_video_means_a_clear_error_unless_no_images(project, tmp_path):
    with pytest.raises(VrshqError, match="--no-images"):
        export_dataset(project["data"], "1", "coco", tmp_path / "c", MediaConfig())
    assert not (tmp_path / "c").exists()
    export_dataset(project["data"], "1", "coco", tmp_path / "c", MediaConfig(), images=False)
    assert (tmp_path / "c" / "annotations.json").is_file()
