"""``vrshq tiny-models`` and ``vrshq segment`` end to end on the tiny VRS-HQ, and their errors.

The console script runs in a subprocess twice (tiny-models, and segment with --progress); the
other runs call ``vrshq.cli.main`` in-process with capfd.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.cli_helpers import assert_one_line_error as _assert_one_line_error
from tests.cli_helpers import run_cli as _cli
from tests.cli_helpers import run_script as _script
from vrshq.cli import main
from vrshq.masks import TrackSet, labels_from_masks
from vrshq.model.frames import sample_frames

CLIP = dict(num_frames=24, width=160, height=120, fps=10.0)
PROMPTS = ["the red ball", "which one is moving left?"]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """``vrshq tiny-models DIR`` through the console script: (DIR, completed process)."""
    root = tmp_path_factory.mktemp("cli_models") / "models"
    proc = _script("tiny-models", root)
    return root, proc


@pytest.fixture(scope="module")
def model_dir(tiny_models) -> Path:
    root, proc = tiny_models
    assert proc.returncode == 0, proc.stderr
    return root


@pytest.fixture(scope="module")
def video(make_video) -> Path:
    return make_video("mp4", **CLIP)


@pytest.fixture(scope="module")
def segmented(model_dir, video, tmp_path_factory):
    """One in-process ``vrshq segment`` run with two prompts: (out dir, rc, stdout, stderr)."""
    out = tmp_path_factory.mktemp("cli_segment") / "out"
    argv = ["segment", str(video), "--prompt", PROMPTS[0], "--prompt", PROMPTS[1], "--out", str(out),
            "--model", str(model_dir), "--device", "cpu", "--no-progress"]
    rc = main(argv)
    return out, rc


# --- tiny-models --------------------------------------------------------------------------


def test_tiny_models_writes_sam2_vrshq_and_clip(tiny_models):
    root, proc = tiny_models
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert (root / "sam2" / "config.yaml").is_file() and (root / "sam2" / "model.pt").is_file()
    folder = root / "vrshq"
    for name in ("config.json", "tokenizer.model", "added_tokens.json",
                 "pytorch_model.bin.index.json", "pytorch_model-00001-of-00002.bin",
                 "pytorch_model-00002-of-00002.bin"):
        assert (folder / name).is_file(), name
    assert sorted(p.suffix for p in (root / "clip").iterdir()) == [".json", ".pt"]
    assert str(folder) in proc.stdout and "random" in proc.stdout


# --- segment ------------------------------------------------------------------------------


def test_segment_writes_masks_track_labelstudio_and_keyframes(segmented, capfd):
    out, rc = segmented
    assert rc == 0
    n = CLIP["num_frames"]
    hw = (CLIP["height"], CLIP["width"])

    tracks = TrackSet.load(out / "track.json")
    assert (tracks.height, tracks.width, tracks.num_frames) == (*hw, n)
    assert tracks.fps == pytest.approx(CLIP["fps"])
    assert tracks.obj_ids() == [1, 2]
    for t in tracks:
        assert t.frames() == list(range(n))

    names = sorted(p.name for p in (out / "masks").iterdir())
    assert names == [f"{f:05d}.png" for f in range(n)]
    seen: set[int] = set()
    for f in range(n):
        with Image.open(out / "masks" / f"{f:05d}.png") as image:
            assert image.mode == "P"
            labels = np.array(image)
        assert labels.shape == hw
        assert set(np.unique(labels).tolist()) <= {0, 1, 2}
        seen |= set(np.unique(labels).tolist())
        expected = labels_from_masks({t.obj_id: t.mask(f) for t in tracks}, hw)
        np.testing.assert_array_equal(labels, expected)
    assert 2 in seen  # the tiny SAM-2 says "present": masks are not all empty

    results = json.loads((out / "labelstudio.json").read_text())
    assert isinstance(results, list) and len(results) == 2
    for result, prompt in zip(results, PROMPTS):
        assert result["type"] == "videorectangle"
        assert result["value"]["labels"] == [prompt]
        assert result["value"]["framesCount"] == n
        assert result["value"]["sequence"]

    doc = json.loads((out / "keyframes.json").read_text())
    assert "untrained" in doc["model_version"]
    assert [p["prompt"] for p in doc["prompts"]] == PROMPTS
    assert [p["object_id"] for p in doc["prompts"]] == [1, 2]
    for entry in doc["prompts"]:
        frames = [c["frame"] for c in entry["candidates"]]
        assert frames == sample_frames(entry["anchor"], n)
        assert entry["keyframe"] in frames
        for c in entry["candidates"]:
            assert {"frame", "object_score", "lam"} <= set(c)
            assert isinstance(c["object_score"], float) and 0 < c["lam"] < 1
        assert sum(c["lam"] for c in entry["candidates"]) == pytest.approx(1.0, abs=1e-5)
        assert tracks[entry["object_id"]].is_present(entry["keyframe"])


def test_segment_console_script_with_progress(segmented, model_dir, video, tmp_path):
    out = tmp_path / "out"
    proc = _script("segment", video, "--prompt", PROMPTS[0], "--prompt", PROMPTS[1],
                   "--out", out, "--model", model_dir, "--device", "cpu", "--progress")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for stage in ("anchor", "keyframe", "propagate"):
        assert stage in proc.stderr, (stage, proc.stderr)
    assert "object 1 'the red ball': keyframe" in proc.stdout
    # same model, same video, same thread count: the same outputs as the in-process run
    first = segmented[0]
    for name in ("keyframes.json", "track.json", "labelstudio.json"):
        assert json.loads((out / name).read_text()) == json.loads((first / name).read_text()), name


def test_segment_reads_vrshq_model_from_env(model_dir, make_video, tmp_path, monkeypatch, capfd):
    short = make_video("mp4", num_frames=6, width=160, height=120, fps=10.0)
    monkeypatch.setenv("VRSHQ_MODEL", str(model_dir))
    rc, out, err = _cli(capfd, "segment", short, "--prompt", "a dog", "--out", tmp_path / "o",
                        "--device", "cpu", "--direction", "forward")
    assert rc == 0, err
    assert err == ""  # no progress bars off a terminal, no library warnings
    assert "segmented 1 prompt(s) over 6 frames" in out
    tracks = TrackSet.load(tmp_path / "o" / "track.json")
    assert tracks.obj_ids() == [1]
    keyframe = json.loads((tmp_path / "o" / "keyframes.json").read_text())["prompts"][0]["keyframe"]
    assert tracks[1].frames() == list(range(keyframe, 6))


# --- errors -------------------------------------------------------------------------------


@pytest.fixture
def run_error(capfd, video, model_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("VRSHQ_MODEL", raising=False)

    def run(*argv, model=model_dir, vid=video, out=None):
        args = ["segment", vid, *argv, "--out", out or tmp_path / "out"]
        if model is not None:
            args += ["--model", model]
        return _cli(capfd, *args)

    return run


def test_error_no_model(run_error):
    rc, _, err = run_error("--prompt", "a dog", model=None)
    _assert_one_line_error(rc, err, "--model", "VRSHQ_MODEL")


def test_error_model_folder_missing(run_error, tmp_path):
    rc, _, err = run_error("--prompt", "a dog", model=tmp_path / "nowhere")
    _assert_one_line_error(rc, err, "nowhere", "not found")


@pytest.mark.parametrize("with_vrshq", [True, False])
def test_error_model_folder_without_config(run_error, tmp_path, with_vrshq):
    empty = tmp_path / "models"
    (empty / "vrshq" if with_vrshq else empty).mkdir(parents=True)
    rc, _, err = run_error("--prompt", "a dog", model=empty)
    _assert_one_line_error(rc, err, "config.json")


def test_error_missing_video(run_error, tmp_path):
    rc, _, err = run_error("--prompt", "a dog", vid=tmp_path / "missing.mp4")
    _assert_one_line_error(rc, err, "missing.mp4")


def test_error_no_prompt(run_error):
    rc, _, err = run_error()
    _assert_one_line_error(rc, err, "--prompt")


@pytest.mark.parametrize("text", ["", "   "])
def test_error_empty_prompt(run_error, text):
    rc, _, err = run_error("--prompt", "a dog", "--prompt", text)
    _assert_one_line_error(rc, err, "--prompt", "non-empty")


def test_error_out_is_a_file(run_error, tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    rc, _, err = run_error("--prompt", "a dog", out=target)
    _assert_one_line_error(rc, err, "--out", "not a folder")
    assert target.read_text() == "x"


def test_error_bad_device(run_error):
    rc, _, err = run_error("--prompt", "a dog", "--device", "tpu")
    _assert_one_line_error(rc, err, "--device tpu")


def test_segment_rerun_into_an_earlier_longer_run_keeps_only_its_own(segmented, model_dir, make_video,
                                                                       tmp_path, capfd):
    import shutil

    earlier, rc = segmented
    assert rc == 0
    out = tmp_path / "out"
    shutil.copytree(earlier, out)  # 24 frames of masks
    short = make_video("mp4", num_frames=6, width=160, height=120, fps=10.0)
    rc, _, err = _cli(capfd, "segment", short, "--prompt", "a dog", "--out", out, "--model", model_dir,
                      "--device", "cpu", "--direction", "forward")
    assert rc == 0, err
    assert sorted(p.name for p in (out / "masks").iterdir()) == [f"{f:05d}.png" for f in range(6)]
    assert TrackSet.load(out / "track.json").num_frames == 6
    assert [p["prompt"] for p in json.loads((out / "keyframes.json").read_text())["prompts"]] == ["a dog"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
