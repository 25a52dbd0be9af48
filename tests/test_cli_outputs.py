"""What `vrshq track` writes is read by the next tool as it is.

* `vrshq evaluate --pred OUT` scores a track output (one, or a folder of them) against ground
  truth, with the J&F computed independently from track.json's masks.
* `labelstudio.json` is one Label Studio task ({"data", "predictions"}) named after the project's
  label config (--ls-config, --ls-video-url, --ls-label), and it imports as it is into a real
  Label Studio 1.23.2: the task and its prediction read back through the API equal the file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests.cli_helpers import assert_one_line_error, run_cli
from vrshq.backend.labelstudio.labelconfig import parse_label_config, shipped_config
from vrshq.cli import main
from vrshq.evaluation import evaluate_video
from vrshq.masks import TrackSet, labels_from_masks, track_to_videorectangle, write_palette_folder
from vrshq.synthetic import SyntheticSpec, ground_truth

SPEC = dict(num_frames=8, width=160, height=120, fps=10.0)
VIDEO_URL = "/data/local-files/?d=imported/clip.mp4"  # where the Label Studio test serves it
CUSTOM_XML = """<View>
  <Labels name="kind" toName="movie">
    <Label value="Ball"/><Label value="Crate"/>
  </Labels>
  <Video name="movie" value="$clip_url" frameRate="$rate"/>
  <VideoRectangle name="rect" toName="movie"/>
</View>"""


@pytest.fixture(scope="module")
def model_dir(tiny_sam2_files) -> Path:
    config, _ = tiny_sam2_files
    return config.parent.parent


@pytest.fixture(scope="module")
def clip(make_video, tmp_path_factory) -> SimpleNamespace:
    """The video, its ground truth (as arrays and as a DAVIS folder GT/clip) and a frame-0 prompt."""
    root = tmp_path_factory.mktemp("outputs")
    gt = ground_truth(SyntheticSpec(**SPEC))
    write_palette_folder(root / "gt" / "clip", list(enumerate(gt)))
    write_palette_folder(root / "prompt", [(0, gt[0])])
    return SimpleNamespace(video=make_video("mp4", **SPEC), gt=gt, gt_dir=root / "gt",
                           prompt=root / "prompt" / "00000.png", root=root)


def _track(clip: SimpleNamespace, model_dir: Path, out: Path, *extra: str) -> Path:
    argv = ["track", str(clip.video), "--mask", str(clip.prompt), "--frame", "0", "--out", str(out),
            "--model", str(model_dir), "--ls-video-url", VIDEO_URL, *extra]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def outputs(clip, model_dir) -> dict[str, Path]:
    """Track runs writing labelstudio.json for the shipped box config (default), the shipped text
    config with a label per object, and a config with other tag names, data keys and labels."""
    custom = clip.root / "custom.xml"
    custom.write_text(CUSTOM_XML)
    return {
        "box": _track(clip, model_dir, clip.root / "out-box"),
        "text": _track(clip, model_dir, clip.root / "out-text", "--ls-config", "video_text_prompt",
                       "--ls-label", "Car", "--ls-label", "Animal"),
        "custom": _track(clip, model_dir, clip.root / "out-custom", "--ls-config", str(custom),
                         "--ls-label", "Crate"),
    }


def _expected_jf(out: Path, gt: np.ndarray) -> dict[str, float]:
    """J, F, J&F per object straight from track.json's masks and the ground-truth arrays."""
    tracks = TrackSet.load(out / "track.json")
    hw = gt.shape[1:]
    pred = [labels_from_masks({t.obj_id: t.mask(f) for t in tracks if t.has(f)}, hw)
            for f in range(len(gt))]
    scores = evaluate_video(pred, list(gt))
    return {str(i): s.JF for i, s in scores.items()}


# --- evaluate reads what track writes ---------------------------------------------------------


@pytest.mark.parametrize("gt_form", ["davis", "one-video"])
def test_evaluate_scores_a_track_output(outputs, clip, tmp_path, capfd, gt_form):
    out = outputs["box"]
    gt = clip.gt_dir if gt_form == "davis" else clip.gt_dir / "clip"
    rc, stdout, err = run_cli(capfd, "evaluate", "--pred", out, "--gt", gt, "--out", tmp_path / "s")
    assert rc == 0, err
    scores = json.loads((tmp_path / "s" / "scores.json").read_text())
    expected = _expected_jf(out, clip.gt)
    assert sorted(expected) == ["1", "2"]
    [(name, video)] = scores["videos"].items()
    assert name == "clip" and video["frames"] == list(range(1, SPEC["num_frames"] - 1))
    for obj, jf in expected.items():
        assert video["objects"][obj]["J&F"] == pytest.approx(jf, abs=1e-12), obj
    assert scores["J&F"] == pytest.approx(np.mean(list(expected.values())), abs=1e-12)
    assert "overall (2 objects, 1 videos)" in stdout


def test_evaluate_a_folder_of_track_outputs_matched_by_name(outputs, clip, tmp_path, capfd):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    for name in ("a", "b"):
        shutil.copytree(outputs["box"], pred / name)
        shutil.copytree(clip.gt_dir / "clip", gt / name)
    # b's ground truth is object 1 only: its object 2 is a wrong prediction, so b must fail
    # to score if it were read against a's ground truth (and the reverse)
    write_palette_folder(gt / "b", [(f, np.where(g == 1, 1, 0).astype(np.uint8)) for f, g in enumerate(clip.gt)])
    rc, _, err = run_cli(capfd, "evaluate", "--pred", pred, "--gt", gt)
    assert_one_line_error(rc, err, str(pred / "b" / "masks"), "predicted object id(s) [2]",
                          "not in the ground truth")

    shutil.rmtree(gt / "b")
    shutil.copytree(clip.gt_dir / "clip", gt / "b")
    rc, _, err = run_cli(capfd, "evaluate", "--pred", pred, "--gt", gt, "--out", tmp_path / "s")
    assert rc == 0, err
    scores = json.loads((tmp_path / "s" / "scores.json").read_text())
    expected = _expected_jf(outputs["box"], clip.gt)
    assert sorted(scores["videos"]) == ["a", "b"] and scores["num_objects"] == 4
    for v in ("a", "b"):
        for obj, jf in expected.items():
            assert scores["videos"][v]["objects"][obj]["J&F"] == pytest.approx(jf, abs=1e-12)

    # One track output among several GT videos: the GT video of the same name.
    shutil.copytree(outputs["box"], tmp_path / "b")
    write_palette_folder(gt / "a", [(f, np.zeros_like(g)) for f, g in enumerate(clip.gt)])
    rc, _, err = run_cli(capfd, "evaluate", "--pred", tmp_path / "b", "--gt", gt, "--out", tmp_path / "s2")
    assert rc == 0, err
    assert list(json.loads((tmp_path / "s2" / "scores.json").read_text())["videos"]) == ["b"]


def test_evaluate_mismatches_are_one_line(outputs, clip, tmp_path, capfd):
    out = outputs["box"]
    gt = tmp_path / "gt"
    for name in ("x", "y"):
        shutil.copytree(clip.gt_dir / "clip", gt / name)
    rc, _, err = run_cli(capfd, "evaluate", "--pred", out, "--gt", gt)
    assert_one_line_error(rc, err, f"--pred {out} is one video's masks", "holds 2 videos (x, y)",
                          "none named 'out-box'")

    longer = tmp_path / "longer"  # ground truth of 10 frames for an 8-frame track
    write_palette_folder(longer, [(f, clip.gt[min(f, 7)]) for f in range(10)])
    rc, _, err = run_cli(capfd, "evaluate", "--pred", out, "--gt", longer)
    assert_one_line_error(rc, err, "8 predicted frame(s) for 10 ground-truth frame(s)", "missing frame(s) 8")

    rc, _, err = run_cli(capfd, "evaluate", "--pred", tmp_path / "nope", "--gt", clip.gt_dir)
    assert_one_line_error(rc, err, "prediction folder does not exist")


# --- labelstudio.json -----------------------------------------------------------------------


def _task(out: Path) -> dict:
    tasks = json.loads((out / "labelstudio.json").read_text())
    assert isinstance(tasks, list) and len(tasks) == 1  # Label Studio imports a list of tasks
    assert set(tasks[0]) == {"data", "predictions"}
    return tasks[0]


@pytest.mark.parametrize("kind, data, names, labels", [
    ("box", {"video": VIDEO_URL, "fps": 10.0}, ("box", "video"), ["Object", "Object"]),
    ("text", {"video": VIDEO_URL, "fps": 10.0, "prompt": ""}, ("box", "video"), ["Car", "Animal"]),
    ("custom", {"clip_url": VIDEO_URL, "rate": 10.0}, ("rect", "movie"), ["Crate", "Crate"]),
])
def test_labelstudio_json_is_one_task_named_after_the_config(outputs, model_dir, kind, data, names, labels):
    out = outputs[kind]
    task = _task(out)
    assert task["data"] == data
    [prediction] = task["predictions"]
    assert prediction["model_version"] == f"sam2-{model_dir.name}-model"  # as the sam2 plugin names it
    assert 0 < prediction["score"] <= 1
    tracks = TrackSet.load(out / "track.json")
    results = prediction["result"]
    assert [r["id"] for r in results] == ["trk_1", "trk_2"]
    assert [r["value"]["labels"] for r in results] == [[x] for x in labels]
    for result, track in zip(results, tracks):
        assert (result["from_name"], result["to_name"], result["type"]) == (*names, "videorectangle")
        assert 0 < result["score"] <= 1
        # the boxes of track.json's masks, in Label Studio's frames and times
        expected = track_to_videorectangle(track, 10.0, SPEC["num_frames"], labels=result["value"]["labels"])
        assert result["value"] == expected["value"]


def test_labelstudio_options_are_checked_before_the_model_runs(clip, tmp_path, capfd):
    base = ["track", clip.video, "--mask", clip.prompt, "--frame", 0, "--out", tmp_path / "o",
            "--model", tmp_path / "no-model"]  # never loaded: every error comes before it
    rc, _, err = run_cli(capfd, *base, "--ls-label", "Zebra")
    assert_one_line_error(rc, err, "--ls-label", "'Zebra' is not in", "Person")
    rc, _, err = run_cli(capfd, *base, "--ls-label", "Car", "--ls-label", "Car", "--ls-label", "Car")
    assert_one_line_error(rc, err, "--ls-label", "3 labels for 2 objects")
    rc, _, err = run_cli(capfd, *base, "--ls-config", tmp_path / "nope.xml")
    assert_one_line_error(rc, err, "--ls-config", "no such file, nor a shipped config")
    bad = tmp_path / "bad.xml"
    bad.write_text("<View><Image name='i' value='$image'/></View>")
    rc, _, err = run_cli(capfd, *base, "--ls-config", bad)
    assert_one_line_error(rc, err, f"--ls-config {bad}", "no <Video>")
    assert not (tmp_path / "o").exists()


def test_labelstudio_json_imports_into_label_studio_as_it_is(outputs, clip, label_studio, ls_api):
    """Each file imported into a project with its config: the stored task and prediction are the file's."""
    served = label_studio.doc_root / "imported"
    served.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(clip.video, served / "clip.mp4")
    configs = {"box": shipped_config("video_box_prompt"), "text": shipped_config("video_text_prompt"),
               "custom": CUSTOM_XML}
    for kind, xml in configs.items():
        out = outputs[kind]
        project = ls_api.create_project(f"labelstudio.json {kind}", xml)
        ls_api.add_local_storage(project, served)
        # as a user uploads it in the import dialog: the file itself
        with open(out / "labelstudio.json", "rb") as f:
            body = ls_api.request("POST", f"/api/projects/{project}/import",
                                  params={"commit_to_project": "true", "return_task_ids": "true"},
                                  files={"file": ("labelstudio.json", f, "application/json")}).json()
        [task_id] = body["task_ids"]
        task = ls_api.get_task(task_id)
        written = _task(out)
        assert task["data"] == written["data"], kind
        [stored] = ls_api.list_predictions(task_id)
        [prediction] = written["predictions"]
        assert stored["model_version"] == prediction["model_version"]
        assert stored["score"] == pytest.approx(prediction["score"])
        assert stored["result"] == prediction["result"], kind
        # ids, frames and boxes, spelled out
        info = parse_label_config(xml)
        for got, want in zip(stored["result"], prediction["result"]):
            assert got["id"] == want["id"] and got["from_name"] == info.box_name
            # Label Studio 1.23.2 stores a label its config lacks (its prediction validation is
            # off by default), and the editor then shows a track no label button matches
            assert set(got["value"]["labels"]) <= set(info.labels), got["value"]["labels"]
            assert [k["frame"] for k in got["value"]["sequence"]] == [k["frame"] for k in want["value"]["sequence"]]
            assert got["value"]["sequence"] == want["value"]["sequence"]
        # the video is served at the task's URL
        assert ls_api.request("GET", VIDEO_URL).content == (served / "clip.mp4").read_bytes()
