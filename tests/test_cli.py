"""The ``vrshq`` command line: tiny-models, track and demo end to end, and one-line errors.

A few tests run the real console script (``.venv/bin/vrshq``) in a subprocess to prove the
entry point and its exit codes; the rest call ``vrshq.cli.main`` in-process, which is faster.
In-process tests capture file descriptors (capfd), so lines that native code (ffmpeg,
decord) writes straight to stderr count too.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from tests.cli_helpers import assert_one_line_error as _assert_one_line_error
from tests.cli_helpers import iou as _iou
from tests.cli_helpers import run_cli as _cli
from tests.cli_helpers import run_script as _script
from vrshq.masks import (
    TrackSet,
    labels_from_masks,
    videorectangle_to_boxes,
    write_palette_png,
)
from vrshq.masks.labelstudio import BOX_KEYS
from vrshq.synthetic import SyntheticSpec, ground_truth


# The main clip: long enough for object 2 to leave the frame and come back.
LONG = dict(num_frames=24, width=160, height=120, fps=10.0)
# A short clip for the checks that only need the pipeline to run.
SHORT = dict(num_frames=8, width=160, height=120, fps=10.0)
FOLDER_FPS = 30.0  # what a frame folder gets without --fps
OBJ_SCORE_BIAS_KEY = "sam_mask_decoder.pred_obj_score_head.layers.2.bias"


# --- helpers ------------------------------------------------------------------------------


def _check_outputs(out: Path, gt: np.ndarray, fps: float, obj_ids: list[int],
                   first_frame: int = 0) -> TrackSet:
    """Masks, track.json and labelstudio.json of a track run agree with each other and the video.

    ``first_frame``: the earliest frame the run tracks (earlier frames have no masks).
    """
    num_frames, height, width = gt.shape
    tracks = TrackSet.load(out / "track.json")
    assert (tracks.height, tracks.width, tracks.num_frames) == (height, width, num_frames)
    assert tracks.fps == pytest.approx(fps)
    assert tracks.obj_ids() == obj_ids
    tracked = list(range(first_frame, num_frames))
    for t in tracks:
        assert t.frames() == tracked
        assert all(isinstance(t.score(f), float) for f in tracked)
        # The tiny random model cannot tell absence, so only presence is asserted.
        for f in tracked:
            if (gt[f] == t.obj_id).any():
                assert t.is_present(f), (t.obj_id, f)

    # One palette PNG per frame, 0-based and zero-padded; pixel value = object id.
    names = sorted(p.name for p in (out / "masks").iterdir())
    assert names == [f"{f:05d}.png" for f in range(num_frames)]
    for f in range(num_frames):
        with Image.open(out / "masks" / f"{f:05d}.png") as image:
            assert image.mode == "P"
            labels = np.array(image)
        assert labels.shape == (height, width)
        expected = labels_from_masks({t.obj_id: t.mask(f) for t in tracks if t.has(f)}, (height, width))
        np.testing.assert_array_equal(labels, expected)

    # One videorectangle per object: 1-based frames, time = frame / fps, labels present.
    results = _ls_results(out)
    assert isinstance(results, list) and len(results) == len(obj_ids)
    for result, t in zip(results, tracks):
        assert result["type"] == "videorectangle"
        assert result["id"] == f"trk_{t.obj_id}"
        value = result["value"]
        assert value["framesCount"] == num_frames
        assert value["labels"] and all(isinstance(x, str) and x for x in value["labels"])
        sequence = value["sequence"]
        assert sequence, "a tracked object needs keyframes"
        for item in sequence:
            assert item["frame"] in range(1, num_frames + 1)  # 1-based, an int
            assert item["time"] == pytest.approx(item["frame"] / fps)
        present = t.present_frames()
        assert sequence[0]["frame"] == present[0] + 1  # LS frame N = decoded frame N - 1
        # What Label Studio shows on each 0-based frame is that frame's own box.
        shown = videorectangle_to_boxes(value)
        assert sorted(shown) == present
        for f in present:
            box = t.percent_box(f)
            assert max(abs(shown[f][k] - box[k]) for k in BOX_KEYS) <= 0.5 + 1e-6, f
    return tracks


def _ls_results(out: Path) -> list[dict]:
    """The prediction's results of the one Label Studio task in ``out/labelstudio.json``."""
    [task] = json.loads((out / "labelstudio.json").read_text())
    [prediction] = task["predictions"]
    return prediction["result"]


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tiny_sam2_files) -> Path:
    """A folder as `vrshq tiny-models` writes it: <dir>/sam2/config.yaml and model.pt."""
    config, checkpoint = tiny_sam2_files
    assert config.parent.name == "sam2" and checkpoint.parent == config.parent
    return config.parent.parent


@pytest.fixture(scope="module")
def clip(make_video, tmp_path_factory) -> SimpleNamespace:
    """The long mp4, its ground truth and a frame-0 palette prompt."""
    root = tmp_path_factory.mktemp("clip")
    gt = ground_truth(SyntheticSpec(**LONG))
    assert {1, 2} <= set(np.unique(gt[0]).tolist())
    prompt = root / "prompt0.png"
    write_palette_png(prompt, gt[0])
    return SimpleNamespace(video=make_video("mp4", **LONG), gt=gt, prompt=prompt, fps=LONG["fps"])


@pytest.fixture(scope="module")
def short(make_video, tmp_path_factory) -> SimpleNamespace:
    """The short clip as an mp4 and a PNG frame folder, its ground truth and a frame-0 prompt."""
    root = tmp_path_factory.mktemp("short")
    gt = ground_truth(SyntheticSpec(**SHORT))
    prompt = root / "prompt0.png"
    write_palette_png(prompt, gt[0])
    return SimpleNamespace(video=make_video("mp4", **SHORT), folder=make_video("png", **SHORT),
                           gt=gt, prompt=prompt, fps=SHORT["fps"])


@pytest.fixture(scope="module")
def bad(short, model_dir, tmp_path_factory) -> SimpleNamespace:
    """Broken inputs of every kind, next to good ones to combine them with."""
    root = tmp_path_factory.mktemp("bad")
    h, w = SHORT["height"], SHORT["width"]
    data = Path(short.video).read_bytes()

    text = root / "notes.mp4"
    text.write_text("this is not a video\n")
    truncated = root / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 3])
    # Same size, garbage in the middle: the container is fine, the frames are not.
    rng = random.Random(0)
    body = bytearray(data)
    for i in range(len(body) // 4, len(body) * 3 // 4):
        body[i] = rng.randrange(256)
    corrupt = root / "corrupt.mp4"
    corrupt.write_bytes(bytes(body))

    small = root / "small.png"
    write_palette_png(small, np.ones((h // 2, w // 2), np.uint8))
    rgb = root / "rgb.png"
    Image.new("RGB", (w, h), (128, 0, 0)).save(rgb)
    empty = root / "empty.png"
    write_palette_png(empty, np.zeros((h, w), np.uint8))
    a_file = root / "a-file"
    a_file.write_text("x")
    empty_dir = root / "empty-model-dir"
    empty_dir.mkdir()

    config = model_dir / "sam2" / "config.yaml"
    state = torch.load(model_dir / "sam2" / "model.pt", map_location="cpu", weights_only=True)["model"]
    assert OBJ_SCORE_BIAS_KEY in state
    state["renamed_bias"] = state.pop(OBJ_SCORE_BIAS_KEY)
    renamed = root / "renamed-key" / "sam2"
    renamed.mkdir(parents=True)
    shutil.copy(config, renamed / "config.yaml")
    torch.save({"model": state}, renamed / "model.pt")
    broken = root / "broken-ckpt" / "sam2"
    broken.mkdir(parents=True)
    shutil.copy(config, broken / "config.yaml")
    (broken / "model.pt").write_bytes((model_dir / "sam2" / "model.pt").read_bytes()[:4096])

    return SimpleNamespace(root=root, text=text, truncated=truncated, corrupt=corrupt, small=small,
                           rgb=rgb, empty=empty, a_file=a_file, empty_dir=empty_dir,
                           renamed=renamed.parent, broken=broken.parent, config=config,
                           checkpoint=model_dir / "sam2" / "model.pt")


# --- tiny-models --------------------------------------------------------------------------


def test_tiny_models_console_script_sam2_format_and_deterministic(tmp_path, capfd):
    first = _script("tiny-models", tmp_path / "a")
    assert first.returncode == 0, first.stderr
    config, checkpoint = tmp_path / "a" / "sam2" / "config.yaml", tmp_path / "a" / "sam2" / "model.pt"
    assert config.is_file() and checkpoint.is_file()

    # sam2's own way to build a model: OmegaConf + hydra instantiate of cfg.model.
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(config)
    OmegaConf.resolve(cfg)
    model = instantiate(cfg.model, _recursive_=True)
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert list(saved) == ["model"]
    model.load_state_dict(saved["model"], strict=True)
    bias = model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias
    assert torch.equal(bias, torch.full_like(bias, 10.0))

    # A second run (in-process) gives the same tensors, bit for bit; another seed does not.
    rc, out, err = _cli(capfd, "tiny-models", tmp_path / "b")
    assert rc == 0, err
    again = torch.load(tmp_path / "b" / "sam2" / "model.pt", map_location="cpu", weights_only=True)["model"]
    assert list(again) == list(saved["model"])
    for key, tensor in saved["model"].items():
        assert again[key].dtype == tensor.dtype and torch.equal(again[key], tensor), key
    assert (tmp_path / "b" / "sam2" / "config.yaml").read_text() == config.read_text()
    # sam3/ in the Hugging Face release layout (tests/test_sam3_tiny.py loads it), deterministic too
    for name in ("config.json", "model.safetensors", "processor_config.json", "vocab.json"):
        assert (tmp_path / "a" / "sam3" / name).read_bytes() == (tmp_path / "b" / "sam3" / name).read_bytes()

    rc, _, err = _cli(capfd, "tiny-models", tmp_path / "c", "--seed", "1")
    assert rc == 0, err
    other = torch.load(tmp_path / "c" / "sam2" / "model.pt", map_location="cpu", weights_only=True)["model"]
    assert any(not torch.equal(other[k], t) for k, t in saved["model"].items())


def test_tiny_models_out_dir_is_a_file(tmp_path, capfd):
    target = tmp_path / "taken"
    target.write_text("x")
    rc, _, err = _cli(capfd, "tiny-models", target)
    _assert_one_line_error(rc, err, str(target))


# --- track: happy paths -------------------------------------------------------------------


def test_track_console_script_mp4_with_progress(clip, model_dir, tmp_path):
    out = tmp_path / "out"
    proc = _script("track", clip.video, "--mask", clip.prompt, "--frame", "0", "--out", out,
                   "--model", model_dir, "--progress")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "tracking" in proc.stderr and "100%" in proc.stderr  # the tqdm bar
    assert "tracked 2 object(s)" in proc.stdout
    tracks = _check_outputs(out, clip.gt, clip.fps, [1, 2])
    # The prompt frame reproduces the prompt.
    for t in tracks:
        assert _iou(t.mask(0), clip.gt[0] == t.obj_id) > 0.85


def test_track_frame_folder_with_model_dir_from_env(short, model_dir, tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("VRSHQ_MODEL", str(model_dir))
    out = tmp_path / "out"
    rc, stdout, err = _cli(capfd, "track", short.folder, "--mask", short.prompt, "--frame", 0, "--out", out)
    assert rc == 0, err
    assert "tracking" not in err  # no bar when stderr is not a terminal
    assert "tracked 2 object(s) over 8 frames" in stdout
    _check_outputs(out, short.gt, FOLDER_FPS, [1, 2])


def test_track_forward_from_a_middle_frame(clip, model_dir, tmp_path, capfd):
    start = 6
    assert {1, 2} <= set(np.unique(clip.gt[start]).tolist())
    prompt = tmp_path / "prompt.png"
    write_palette_png(prompt, clip.gt[start])
    out = tmp_path / "out"
    rc, _, err = _cli(capfd, "track", clip.video, "--mask", prompt, "--frame", start, "--out", out,
                      "--model", model_dir, "--direction", "forward")
    assert rc == 0, err
    _check_outputs(out, clip.gt, clip.fps, [1, 2], first_frame=start)
    for f in range(start):
        labels = np.array(Image.open(out / "masks" / f"{f:05d}.png"))
        assert not labels.any(), f"frame {f} has object pixels before the prompt"
    results = _ls_results(out)
    assert all(r["value"]["sequence"][0]["frame"] == start + 1 for r in results)


def test_track_correction_on_a_later_frame(clip, model_dir, tmp_path, capfd):
    # A correction of object 1 on frame 20 that the model would never predict: a rectangle.
    h, w = clip.gt.shape[1:]
    correction = np.zeros((h, w), np.uint8)
    correction[15:55, 90:150] = 1
    fix = tmp_path / "fix20.png"
    write_palette_png(fix, correction)
    out = tmp_path / "out"
    rc, _, err = _cli(capfd, "track", clip.video, "--mask", clip.prompt, "--frame", 0,
                      "--mask", fix, "--frame", 20, "--out", out, "--model", model_dir)
    assert rc == 0, err
    tracks = _check_outputs(out, clip.gt, clip.fps, [1, 2])
    assert _iou(tracks[1].mask(20), correction == 1) > 0.85
    assert _iou(tracks[1].mask(0), clip.gt[0] == 1) > 0.85  # the first prompt still holds


def test_track_binary_mask_is_object_1(short, model_dir, tmp_path, capfd):
    mask = short.gt[0] == 2  # deliberately the shape of object 2: the value decides the id
    binary = tmp_path / "binary.png"
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L").save(binary)
    out = tmp_path / "out"
    rc, stdout, err = _cli(capfd, "track", short.video, "--mask", binary, "--frame", 0, "--out", out,
                           "--model", model_dir)
    assert rc == 0, err
    assert "tracked 1 object(s)" in stdout
    gt = np.where(short.gt == 2, 1, 0).astype(np.uint8)
    tracks = _check_outputs(out, gt, short.fps, [1])
    assert _iou(tracks[1].mask(0), mask) > 0.85


def test_track_resize_vrshq_writes_original_size(short, model_dir, tmp_path, capfd):
    out = tmp_path / "out"
    rc, _, err = _cli(capfd, "track", short.video, "--mask", short.prompt, "--frame", 0, "--out", out,
                      "--model", model_dir, "--resize", "vrshq")
    assert rc == 0, err
    tracks = _check_outputs(out, short.gt, short.fps, [1, 2])
    for t in tracks:  # padding removed and scaled back: the prompt frame lines up
        assert _iou(t.mask(0), short.gt[0] == t.obj_id) > 0.85


# --- demo ---------------------------------------------------------------------------------


def test_demo_console_script(tmp_path):
    out = tmp_path / "demo"
    proc = _script("demo", "--frames", "12", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "%|" not in proc.stderr  # stderr is a pipe: neither track nor segment draws a bar
    assert "mean IoU" in proc.stdout
    assert (out / "sample.mp4").is_file()
    assert (out / "models" / "sam2" / "model.pt").is_file()
    assert sorted(p.name for p in (out / "track" / "masks").iterdir()) == [f"{f:05d}.png" for f in range(12)]
    tracks = TrackSet.load(out / "track" / "track.json")
    assert tracks.obj_ids() == [1, 2] and tracks.num_frames == 12
    results = _ls_results(out / "track")
    assert [r["value"]["framesCount"] for r in results] == [12, 12]
    # Then VRS-HQ from two text prompts on the same video, with the tiny VRS-HQ.
    keyframes = json.loads((out / "segment" / "keyframes.json").read_text())
    assert [p["object_id"] for p in keyframes["prompts"]] == [1, 2]
    assert "untrained" in keyframes["model_version"]
    segmented = TrackSet.load(out / "segment" / "track.json")
    assert segmented.obj_ids() == [1, 2]
    assert all(segmented[o].has(f) for o in (1, 2) for f in range(12))
    # The prompts are the task's prompt text; the labels are the config's (neither names one).
    labels = [r["value"]["labels"] for r in _ls_results(out / "segment")]
    assert labels == [["Object"], ["Object"]]
    [task] = json.loads((out / "segment" / "labelstudio.json").read_text())
    assert task["data"]["prompt"] == "the red disc\nwhich shape leaves the frame?"


def test_demo_bad_frames(tmp_path, capfd):
    rc, _, err = _cli(capfd, "demo", "--frames", "0", "--out", tmp_path / "demo")
    _assert_one_line_error(rc, err, "--frames")


# --- bad input ----------------------------------------------------------------------------


def test_bad_inputs_console_script(short, bad, model_dir, tmp_path):
    # decord and ffmpeg print their own lines on a corrupt file: the script must not.
    proc = _script("track", bad.corrupt, "--mask", short.prompt, "--frame", "0",
                   "--out", tmp_path / "out", "--model", model_dir)
    _assert_one_line_error(proc.returncode, proc.stderr, str(bad.corrupt))
    proc = _script("track", short.video, "--mask", short.prompt, "--frame", "0", "--model", model_dir)
    _assert_one_line_error(proc.returncode, proc.stderr, "--out")
    assert not (tmp_path / "out").exists()


def _bad_case(name: str, c: SimpleNamespace) -> tuple[list, list[str]]:
    """(argv, strings the error line must contain) of a bad-input case; ``c`` holds the fixtures."""

    def track(*extra, video=None, mask=None, frame="0", out=True, model=True):
        argv = ["track", video or c.short.video, "--mask", mask or c.short.prompt, "--frame", frame]
        argv += ["--out", c.out] if out is True else ["--out", out] if out else []
        return argv + (["--model", c.model_dir] if model else []) + list(extra)

    b = c.bad
    nope_mp4, nope_png, nope_yaml = b.root / "nope.mp4", b.root / "nope.png", b.root / "nope.yaml"
    nodir = b.root / "nodir"
    renamed_ckpt, broken_ckpt = b.renamed / "sam2" / "model.pt", b.broken / "sam2" / "model.pt"
    cases = {
        "missing-video": (track(video=nope_mp4), [str(nope_mp4), "not found"]),
        "text-named-mp4": (track(video=b.text), [str(b.text), "not a readable video"]),
        "truncated-mp4": (track(video=b.truncated), [str(b.truncated), "truncated"]),
        "corrupt-mp4": (track(video=b.corrupt), [str(b.corrupt)]),
        "mask-wrong-size": (track(mask=b.small), [str(b.small), "80x60", "160x120"]),
        "mask-rgb": (track(mask=b.rgb), [str(b.rgb), "RGB"]),
        "mask-empty": (track(mask=b.empty), [str(b.empty), "no object pixels"]),
        "mask-missing": (track(mask=nope_png), [str(nope_png), "not found"]),
        "mask-not-an-image": (track(mask=b.text), [str(b.text), "mask"]),
        "frame-past-end": (track(frame="8"), ["--frame 8", "0..7"]),
        "frame-negative": (track(frame="-1"), ["--frame -1"]),
        "unpaired-mask-frame": (track("--mask", c.short.prompt), ["2 --mask", "1 --frame"]),
        "missing-out": (track(out=False), ["--out"]),
        "out-is-a-file": (track(out=b.a_file), ["--out", str(b.a_file)]),
        "no-model-in-model-dir": (track("--model", b.empty_dir, model=False),
                                  [str(b.empty_dir), "config.yaml"]),
        "model-dir-missing": (track("--model", nodir, model=False), ["--model", str(nodir)]),
        "checkpoint-renamed-key": (track("--model", b.renamed, model=False),
                                   [str(renamed_ckpt), OBJ_SCORE_BIAS_KEY, "renamed_bias"]),
        "checkpoint-corrupt": (track("--model", b.broken, model=False), [str(broken_ckpt), "checkpoint"]),
        "sam2-config-missing": (track("--sam2-config", nope_yaml, "--sam2-checkpoint", b.checkpoint,
                                      model=False), [str(nope_yaml)]),
        "sam2-config-without-checkpoint": (track("--sam2-config", b.config, model=False),
                                           ["--sam2-checkpoint"]),
        "resize-unknown": (track("--resize", "bilinear"), ["--resize", "bilinear"]),
        "direction-unknown": (track("--direction", "sideways"), ["--direction", "sideways"]),
        "device-invalid": (track("--device", "tpu"), ["--device tpu"]),
    }
    return cases[name]


BAD_CASES = [
    "missing-video", "text-named-mp4", "truncated-mp4", "corrupt-mp4",
    "mask-wrong-size", "mask-rgb", "mask-empty", "mask-missing", "mask-not-an-image",
    "frame-past-end", "frame-negative", "unpaired-mask-frame", "missing-out", "out-is-a-file",
    "no-model-in-model-dir", "model-dir-missing", "checkpoint-renamed-key", "checkpoint-corrupt",
    "sam2-config-missing", "sam2-config-without-checkpoint",
    "resize-unknown", "direction-unknown", "device-invalid",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_track_bad_input(case, short, bad, model_dir, capfd, tmp_path):
    c = SimpleNamespace(short=short, bad=bad, model_dir=model_dir, out=tmp_path / "out")
    argv, needles = _bad_case(case, c)
    rc, _, err = _cli(capfd, *argv)
    _assert_one_line_error(rc, err, *needles)
    assert not c.out.exists()  # nothing written on a failed run


def test_track_without_any_model(short, tmp_path, capfd, monkeypatch):
    monkeypatch.delenv("VRSHQ_MODEL", raising=False)
    rc, _, err = _cli(capfd, "track", short.video, "--mask", short.prompt, "--frame", 0,
                      "--out", tmp_path / "o")
    _assert_one_line_error(rc, err, "no model", "--model", "--sam2-config")


def test_track_cuda_device_that_is_not_there(short, model_dir, tmp_path, capfd):
    # Without CUDA any cuda device is refused; with it, an index past the last GPU is.
    device, needle = ("cuda:99", "CUDA device") if torch.cuda.is_available() else ("cuda", "CUDA")
    rc, _, err = _cli(capfd, "track", short.video, "--mask", short.prompt, "--frame", 0,
                      "--out", tmp_path / "o", "--model", model_dir, "--device", device)
    _assert_one_line_error(rc, err, f"--device {device}", needle)


# --- re-runs into the same --out, and --cache-dir (issue 15 §3) -------------------------------


def test_track_rerun_into_the_same_out_keeps_only_the_new_run(clip, short, model_dir, tmp_path, capfd):
    out = tmp_path / "out"
    out.mkdir()  # an empty folder is fine
    rc, _, err = _cli(capfd, "track", clip.video, "--mask", clip.prompt, "--frame", 0, "--out", out,
                      "--model", model_dir)
    assert rc == 0, err
    assert len(list((out / "masks").iterdir())) == LONG["num_frames"]
    rc, stdout, err = _cli(capfd, "track", short.video, "--mask", short.prompt, "--frame", 0,
                           "--out", out, "--model", model_dir)
    assert rc == 0, err
    _check_outputs(out, short.gt, short.fps, [1, 2])  # the 8 masks of this run, none of the 24
    assert sorted(p.name for p in out.iterdir()) == ["labelstudio.json", "masks", "track.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging folder left behind
    assert str(out) in stdout


def test_track_refuses_an_out_that_holds_other_files(short, tmp_path, capfd, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    # No model at --model: the refusal comes first, before anything loads.
    rc, _, err = _cli(capfd, "track", short.video, "--mask", short.prompt, "--frame", 0, "--out", out,
                      "--model", tmp_path / "no-model")
    _assert_one_line_error(rc, err, f"--out {out}", "not empty")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    # The folder the command runs in is never swapped away, even empty.
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    rc, _, err = _cli(capfd, "track", short.video, "--mask", short.prompt, "--frame", 0, "--out", ".",
                      "--model", tmp_path / "no-model")
    _assert_one_line_error(rc, err, "--out .", "current folder")


def test_track_cache_dir_is_checked_or_made_before_the_model_loads(short, bad, model_dir, tmp_path, capfd):
    blocked = bad.a_file / "cache"  # its parent is a file: it can never be made
    rc, _, err = _cli(capfd, "track", short.video, "--mask", short.prompt, "--frame", 0,
                      "--out", tmp_path / "o", "--model", tmp_path / "no-model", "--cache-dir", blocked)
    _assert_one_line_error(rc, err, f"--cache-dir {blocked}")
    assert not (tmp_path / "o").exists()
    cache = tmp_path / "new" / "cache"
    rc, _, err = _cli(capfd, "track", short.video, "--mask", short.prompt, "--frame", 0,
                      "--out", tmp_path / "o", "--model", model_dir, "--cache-dir", cache,
                      "--feature-budget-mib", 0)
    assert rc == 0, err
    assert cache.is_dir()
