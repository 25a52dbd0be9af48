"""``vrshq corrections export --format revos|davis``: the training set the official loaders read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vrshq.backend.corrections import Correction, CorrectionsLog
from vrshq.backend.corrections.training_export import export_training_set, split_videos
from vrshq.backend.labelstudio.media import MediaConfig
from vrshq.backend.tasks.state import TaskState, TaskStateStore
from vrshq.plugins.base import ObjectTrack
from tests.cli_helpers import assert_one_line_error, run_cli, run_script
from vrshq.errors import VrshqError
from vrshq.masks import (
    Track,
    decode_rle,
    encode_rle,
    labels_from_masks,
    read_palette_png,
)
from vrshq.synthetic import SyntheticSpec, ground_truth, write_video
from vrshq.video.reader import open_video

N, W, H = 12, 64, 48
SPECS = {name: SyntheticSpec(num_frames=N, width=W, height=H, fps=10.0, num_objects=2, seed=i)
         for i, name in enumerate(("a", "b", "c"))}
REF = "/data/local-files/?d=clips/{}.mp4"
SECRET = "sEcReT-api-key-123"


def rect(x0, y0, x1, y1) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


# The masks the annotators logged; the expected winners are checked against these.
OLD_A1 = rect(2, 2, 10, 10)  # task 10, object 1, frame 2: first correction ...
NEW_A1 = rect(20, 10, 40, 30)  # ... and the later one, which wins
B1_F0, B1_F5 = rect(0, 0, 8, 8), rect(30, 20, 50, 40)
C1_F1 = rect(5, 5, 25, 25)


def corr(project, task, video, obj_id, frame, mask, *, prompt="", label="thing", boxes=None):
    return Correction(
        project=project, task=task, annotation=1, annotator=7, video_path=REF.format(video),
        video_sha256=None, fps=10.0, prompt=prompt, obj_id=obj_id, label=label, frame=frame,
        predicted_mask=encode_rle(np.zeros((H, W), bool)),
        corrected_mask=None if mask is None else encode_rle(mask),
        predicted_boxes=None, corrected_boxes=boxes, model_version="m1", plugin="vrshq",
        event="ANNOTATION_UPDATED")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Three synthetic videos under a media root, a log of corrections and one task state."""
    base = tmp_path_factory.mktemp("world")
    media_root, model_dir = base / "media", base / "model"
    for name, spec in SPECS.items():
        write_video(spec, media_root / "clips" / f"{name}.mp4")
    box = [{"frame": 3, "x": 10.0, "y": 10.0, "width": 20.0, "height": 20.0}]
    with CorrectionsLog.for_model_dir(model_dir) as log:
        log.append_many([
            corr(1, 10, "a", 1, 2, OLD_A1, prompt="the red disc"),
            corr(1, 10, "a", 2, 3, None, label="box", boxes=box),  # box-only: no mask
            corr(1, 11, "b", 1, 0, B1_F0, prompt="the disc on the left"),
            corr(1, 11, "b", 3, 4, np.zeros((H, W), bool), label="gone"),  # a deleted object
            corr(1, 11, "b", 4, 6, None, label="boxed", boxes=box),  # box-only, no state: left out
            corr(2, 12, "c", 1, 1, C1_F1, prompt="a car"),
            corr(3, 13, "missing", 1, 0, C1_F1, prompt="nothing"),  # its video does not exist
        ])
        log.append(corr(1, 11, "b", 1, 5, B1_F5, prompt="the disc on the left"))
        log.append(corr(1, 10, "a", 1, 2, NEW_A1, prompt="the red disc"))  # the later one wins
    gt = ground_truth(SPECS["a"])
    objects = []
    for k in (1, 2):
        track = Track(k, H, W)
        for f in range(N):
            track.set(f, gt[f] == k, score=1.0)
        objects.append(ObjectTrack(obj_id=k, label="thing", track=track, keyframe=0,
                                   keyframe_mask=gt[0] == k, score=1.0))
    TaskStateStore(model_dir).save(TaskState(
        project="1", task="10", plugin="vrshq", model_version="m1", video=REF.format("a"),
        fps=10.0, frames_count=N, objects=objects))
    return {"base": base, "media": media_root, "model": model_dir, "gt_a": gt}


@pytest.fixture
def log(world):
    with CorrectionsLog.for_model_dir(world["model"], create=False) as lg:
        yield lg


def media(world) -> MediaConfig:
    return MediaConfig(local_roots=(str(world["media"]),), cache_dir=str(world["base"] / "cache"))


def load(path: Path):
    return json.loads(path.read_text())


def test_revos_layout_frames_expressions_and_masks(world, log, tmp_path):
    out = tmp_path / "set"
    m = export_training_set(log, out, media(world), "revos", state_root=world["model"])
    videos = ["p1_t10", "p1_t11", "p2_t12"]
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "train"]
    assert sorted(p.name for p in (out / "train").iterdir()) == ["JPEGImages", "mask_dict.json",
                                                                  "meta_expressions.json",
                                                                  "verified_frames.json"]
    assert sorted(p.name for p in (out / "train" / "JPEGImages").iterdir()) == videos
    names = [f"{i:05d}" for i in range(N)]
    for v in videos:
        assert sorted(p.name for p in (out / "train" / "JPEGImages" / v).iterdir()) == [f"{n}.jpg" for n in names]

    # the JPEGs are the video's frames (within JPEG tolerance)
    with open_video(world["media"] / "clips" / "b.mp4") as reader:
        for f in (0, 7, N - 1):
            jpg = np.asarray(Image.open(out / "train" / "JPEGImages" / "p1_t11" / f"{f:05d}.jpg"), np.int16)
            assert jpg.shape == (H, W, 3)
            assert np.abs(jpg - reader.frame(f).astype(np.int16)).mean() < 3.0

    meta = load(out / "train" / "meta_expressions.json")
    assert list(meta) == ["videos"] and sorted(meta["videos"]) == videos
    assert meta["videos"]["p1_t10"] == {
        "expressions": {"0": {"exp": "the red disc", "obj_id": [1], "anno_id": [0]},
                        "1": {"exp": "box", "obj_id": [2], "anno_id": [1]}},  # empty prompt -> label
        "frames": names}
    assert meta["videos"]["p1_t11"]["expressions"] == {
        "0": {"exp": "the disc on the left", "obj_id": [1], "anno_id": [2]},
        "1": {"exp": "gone", "obj_id": [3], "anno_id": [3]}}  # object 4 (box-only, no state) left out
    assert meta["videos"]["p2_t12"]["expressions"] == {"0": {"exp": "a car", "obj_id": [1], "anno_id": [4]}}

    masks = load(out / "train" / "mask_dict.json")
    assert sorted(masks, key=int) == ["0", "1", "2", "3", "4"]
    assert all(len(v) == N for v in masks.values())
    gt = world["gt_a"]
    for f in range(N):  # task 10: the later correction wins on frame 2; the state fills the rest
        want = NEW_A1 if f == 2 else gt[f] == 1
        assert np.array_equal(decode_rle(masks["0"][f]), want), f
        assert np.array_equal(decode_rle(masks["1"][f]), gt[f] == 2), f  # box-only: state only
    assert [f for f in range(N) if masks["2"][f] is not None] == [0, 5]  # no state: corrected only
    assert np.array_equal(decode_rle(masks["2"][0]), B1_F0)
    assert np.array_equal(decode_rle(masks["2"][5]), B1_F5)
    assert [f for f in range(N) if masks["3"][f] is not None] == [4]
    assert not decode_rle(masks["3"][4]).any()  # deleted: an empty mask, not null
    assert np.array_equal(decode_rle(masks["4"][1]), C1_F1)

    assert m == load(out / "manifest.json")
    assert m["counts"] == {"videos": 3, "expressions": 5, "frames": 3 * N, "corrected_masks": 5,
                           "reviewed_masks": 0, "propagated_masks": 2 * N - 1, "verified_masks": 5,
                           "train": 3, "valid": 0}
    assert m["corrections"] == 9 and m["layout"] == "revos" and m["source"].startswith("sqlite:///")
    o1, o2 = m["videos"]["p1_t10"]["objects"]
    assert o1["corrected_frames"] == [2] and o1["propagated_frames"] == [f for f in range(N) if f != 2]
    assert o2["corrected_frames"] == [] and o2["propagated_frames"] == list(range(N))
    assert m["videos"]["p1_t11"]["corrected_frames"] == [0, 4, 5]
    assert m["videos"]["p1_t10"]["state"] is True and m["videos"]["p1_t11"]["state"] is False
    assert [s["video"] for s in m["skipped"]] == ["p3_t13"]
    assert "missing.mp4" in m["skipped"][0]["reason"]
    assert any("object 4" in w and "left out" in w for w in m["warnings"])


def test_without_state_and_corrected_frames_only(world, log, tmp_path):
    m = export_training_set(log, tmp_path / "set", media(world), "revos", frames="corrected")
    meta = load(tmp_path / "set" / "train" / "meta_expressions.json")["videos"]
    assert meta["p1_t10"]["frames"] == ["00002"]
    assert meta["p1_t11"]["frames"] == ["00000", "00004", "00005"]
    assert sorted(p.name for p in (tmp_path / "set" / "train" / "JPEGImages" / "p1_t11").iterdir()) == \
        ["00000.jpg", "00004.jpg", "00005.jpg"]
    masks = load(tmp_path / "set" / "train" / "mask_dict.json")
    # no state: the box-only object 2 of task 10 has no mask anywhere and is left out
    assert meta["p1_t10"]["expressions"] == {"0": {"exp": "the red disc", "obj_id": [1], "anno_id": [0]}}
    assert np.array_equal(decode_rle(masks["0"][0]), NEW_A1)
    assert masks["1"][1] is None and np.array_equal(decode_rle(masks["1"][2]), B1_F5)
    assert m["counts"]["propagated_masks"] == 0 and m["counts"]["frames"] == 1 + 3 + 1


def test_split_is_deterministic_disjoint_and_stable():
    names = [f"p1_t{i}" for i in range(200)]
    s1, s2 = split_videos(names, 0.25, 3), split_videos(names, 0.25, 3)
    assert s1 == s2 and set(s1.values()) == {"train", "valid"}
    held = [v for v in names if s1[v] == "valid"]
    assert 30 <= len(held) <= 70
    assert split_videos(names, 0.25, 4) != s1  # another seed, another split
    grown = split_videos(names + [f"p2_t{i}" for i in range(50)], 0.25, 3)
    assert all(grown[v] == s1[v] for v in names)  # a video keeps its split as the log grows
    assert set(split_videos(names, 0.0, 3).values()) == {"train"}
    assert sorted(split_videos(["x", "y"], 0.01, 0).values()) == ["train", "valid"]  # never empty


def test_holdout_writes_disjoint_train_and_valid(world, log, tmp_path):
    m1 = export_training_set(log, tmp_path / "one", media(world), "revos", holdout=0.5, seed=1)
    m2 = export_training_set(log, tmp_path / "two", media(world), "revos", holdout=0.5, seed=1)
    assert m1["split"] == m2["split"]
    train, valid = m1["split"]["train"], m1["split"]["valid"]
    assert train and valid and not set(train) & set(valid)
    assert sorted(train + valid) == ["p1_t10", "p1_t11", "p2_t12"]
    for split, vids in (("train", train), ("valid", valid)):
        root = tmp_path / "one" / split
        assert sorted(p.name for p in (root / "JPEGImages").iterdir()) == sorted(vids)
        assert sorted(load(root / "meta_expressions.json")["videos"]) == sorted(vids)
        annos = {str(a) for v in load(root / "meta_expressions.json")["videos"].values()
                 for e in v["expressions"].values() for a in e["anno_id"]}
        assert set(load(root / "mask_dict.json")) == annos


def test_davis_pngs_equal_the_masks(world, log, tmp_path):
    out = tmp_path / "davis"
    m = export_training_set(log, out, media(world), "davis", state_root=world["model"])
    assert sorted(p.name for p in (out / "train").iterdir()) == ["Annotations", "JPEGImages",
                                                                  "verified_frames.json"]
    assert sorted(p.name for p in (out / "train" / "Annotations").iterdir()) == ["p1_t10", "p1_t11", "p2_t12"]
    gt = world["gt_a"]
    for f in range(N):
        labels = read_palette_png(out / "train" / "Annotations" / "p1_t10" / f"{f:05d}.png")
        one = NEW_A1 if f == 2 else gt[f] == 1
        assert np.array_equal(labels, labels_from_masks({1: one, 2: gt[f] == 2}, (H, W))), f
        assert Image.open(out / "train" / "Annotations" / "p1_t10" / f"{f:05d}.png").mode == "P"
    b = read_palette_png(out / "train" / "Annotations" / "p1_t11" / "00005.png")
    assert np.array_equal(b, B1_F5.astype(np.uint8))
    assert not read_palette_png(out / "train" / "Annotations" / "p1_t11" / "00003.png").any()
    assert len(list((out / "train" / "JPEGImages" / "p2_t12").iterdir())) == N
    assert m["layout"] == "davis" and not (out / "train" / "mask_dict.json").exists()


def test_out_folder_rules_and_empty_log(world, log, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(VrshqError, match="not empty"):
        export_training_set(log, foreign, media(world))
    assert (foreign / "keep.txt").read_text() == "mine"
    out = tmp_path / "set"
    export_training_set(log, out, media(world), holdout=0.5, seed=1)
    assert (out / "valid").is_dir()
    export_training_set(log, out, media(world))  # a previous export is replaced, stale splits go
    assert not (out / "valid").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left
    with pytest.raises(VrshqError, match=r"holdout"):
        export_training_set(log, tmp_path / "x", media(world), holdout=1.0)
    with CorrectionsLog.for_model_dir(tmp_path / "empty") as empty, \
            pytest.raises(VrshqError, match="no corrections to export"):
        export_training_set(empty, tmp_path / "y", media(world))
    assert not (tmp_path / "y").exists()


def test_cli_end_to_end(world, tmp_path):
    out = tmp_path / "cli"
    r = run_script("corrections", "export", "--data-dir", world["model"], "--out", out,
                   "--format", "revos", "--holdout", "0.5", "--seed", "1",
                   "--media-root", world["media"], "--api-key", SECRET)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("exported 3 video(s)") and str(out) in r.stdout
    assert "skipped p3_t13" in r.stderr
    assert "%|" not in r.stderr  # stderr is a pipe: no progress bar
    m = load(out / "manifest.json")
    assert m["split"]["seed"] == 1 and m["counts"]["valid"] >= 1
    assert m["videos"]["p1_t10"]["state"] is True  # --data-dir is also the task-state root
    for text in (r.stdout, r.stderr, (out / "manifest.json").read_text()):
        assert SECRET not in text

    r = run_script("corrections", "export", "--data-dir", world["model"], "--out", tmp_path / "z",
                   "--format", "revos", "--holdout", "1")
    assert_one_line_error(r.returncode, r.stderr, "--holdout", "[0, 1)")


def test_cli_progress_bar_when_asked(world, tmp_path, capfd):
    rc, _, err = run_cli(capfd, "corrections", "export", "--data-dir", world["model"], "--out",
                         tmp_path / "d", "--format", "davis", "--media-root", world["media"], "--progress")
    assert rc == 0, err
    assert err.startswith("\rexporting:   0%|") and "exporting: 100%|" in err, err  # no bar before the total


def test_cli_errors(world, tmp_path, capfd):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    base = ("corrections", "export", "--data-dir", world["model"])
    rc, _, err = run_cli(capfd, *base, "--out", a_file, "--format", "davis")
    assert_one_line_error(rc, err, "not a folder")
    rc, _, err = run_cli(capfd, *base, "--out", tmp_path / "j", "--holdout", "0.2")
    assert_one_line_error(rc, err, "--holdout", "revos or davis")
    rc, _, err = run_cli(capfd, *base, "--out", tmp_path / "j", "--format", "revos",
                         "--media-root", tmp_path / "nope")
    assert_one_line_error(rc, err, "--media-root", "not a folder")
    rc, _, err = run_cli(capfd, *base, "--out", tmp_path / "j", "--format", "coco")
    assert_one_line_error(rc, err, "--format")
    rc, _, err = run_cli(capfd, *base, "--out", tmp_path / "j", "--format", "revos", "--holdout", "x")
    assert_one_line_error(rc, err, "--holdout", "not a number")
    assert not (tmp_path / "j").exists()


def test_cli_export_that_skips_every_video_fails_and_names_media_root(world, tmp_path, capfd,
                                                                        monkeypatch):
    for name in ("LOCAL_FILES_DOCUMENT_ROOT", "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "set"
    base = ("corrections", "export", "--data-dir", world["model"], "--out", out, "--format", "revos")
    rc, _, err = run_cli(capfd, *base, "--media-root", world["media"])
    assert rc == 0, err
    before = (out / "manifest.json").read_text()
    # No --media-root: not one task video can be read.
    rc, stdout, err = run_cli(capfd, *base)
    assert_one_line_error(rc, err, "--media-root", "all 4 video(s) skipped")
    assert "exported" not in stdout
    assert (out / "manifest.json").read_text() == before  # the earlier export is kept
    assert [p.name for p in tmp_path.iterdir()] == ["set"]
