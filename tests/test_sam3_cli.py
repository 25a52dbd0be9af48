"""`vrshq segment --plugin sam3`: the installed command against the plugin's own API on the same video."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.cli_helpers import assert_one_line_error, run_cli, run_script
from tests.sam3_fixtures import tiny_sam3_dir  # noqa: F401 - fixture
from vrshq.masks import TrackSet
from vrshq.masks.palette import read_palette_png

pytest.importorskip("transformers")

H, W = 48, 64


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """Four random 64x48 frames (the tiny model finds instances in them)."""
    folder = tmp_path_factory.mktemp("sam3_cli_video")
    rng = np.random.default_rng(1)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def reference(model_dir, frames, concepts, labels):
    """What the plugin's own API returns for these concepts (the backend's path)."""
    from vrshq.plugins.base import ObjectPrompt, PluginConfig
    from vrshq.plugins.sam3_plugin import Sam3Plugin
    from vrshq.video.folder import FrameFolderReader

    plugin = Sam3Plugin()
    plugin.load(PluginConfig(model_dir=str(model_dir), device="cpu"))
    prompts = [ObjectPrompt(obj_id=i, text=c, label=lb) for i, (c, lb) in enumerate(zip(concepts, labels), 1)]
    return plugin.predict(FrameFolderReader(frames), prompts), plugin.version


def test_segment_with_sam3_writes_what_the_plugin_predicts(tiny_sam3_dir, frames, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    # two --prompt values, the second with two concept lines (and a blank line between)
    proc = run_script("segment", frames, "--plugin", "sam3", "--model", tiny_sam3_dir, "--prompt", "cat",
                      "--prompt", "car\n\nperson", "--out", out, "--no-progress",
                      "--ls-label", "Animal", "--ls-label", "Car", "--ls-label", "Person")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # --no-progress: not even transformers' loading bar
    want, version = reference(tiny_sam3_dir, frames, ["cat", "car", "person"], ["Animal", "Car", "Person"])
    assert want, "the tiny model found nothing: the comparison would be empty"
    got = TrackSet.load(out / "track.json")
    assert got.obj_ids() == [o.obj_id for o in want]
    for o in want:
        for f in range(4):
            assert got[o.obj_id].has(f) == o.track.has(f), (o.obj_id, f)
            if o.track.has(f):
                assert np.array_equal(got[o.obj_id].mask(f), o.track.mask(f)), (o.obj_id, f)
    # the palette PNG of frame 0: each object's pixels lie within its mask, and it has some
    png = read_palette_png(out / "masks" / "00000.png")
    for o in want:
        if o.track.has(0):
            assert not (png == o.obj_id)[~o.track.mask(0)].any(), o.obj_id
    assert {int(v) for v in np.unique(png)} - {0} <= {o.obj_id for o in want if o.track.has(0)}
    [task] = json.loads((out / "labelstudio.json").read_text())
    assert task["predictions"][0]["model_version"] == version
    regions = task["predictions"][0]["result"]
    assert [r["value"]["labels"] for r in regions] == [[o.label] for o in want]
    # sam3's default config is video_concepts: no prompt tags (the labels are the concepts)
    assert "prompt" not in task["data"] and {"video", "fps"} <= set(task["data"])
    keyframes = json.loads((out / "keyframes.json").read_text())
    assert keyframes["concepts"] == ["cat", "car", "person"]
    assert [(k["obj_id"], k["keyframe"], k["details"]["concept"]) for k in keyframes["objects"]] == \
        [(o.obj_id, o.keyframe, o.details["concept"]) for o in want]
    for o in want:
        assert f"object {o.obj_id} '{o.details['concept']}' ({o.label}): keyframe {o.keyframe}" in proc.stdout


def test_segment_with_sam3_keeps_the_prompt_under_a_prompt_config(tiny_sam3_dir, frames, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    proc = run_script("segment", frames, "--plugin", "sam3", "--model", tiny_sam3_dir, "--prompt", "cat\ncar",
                      "--out", out, "--no-progress", "--ls-config", "video_text_prompt")
    assert proc.returncode == 0, proc.stderr
    [task] = json.loads((out / "labelstudio.json").read_text())
    assert task["data"]["prompt"] == "cat\ncar"


@pytest.mark.parametrize("argv, needles", [
    (("--plugin", "nope"), ("unknown model plugin 'nope'", "sam3")),
    (("--plugin", "sam2"), ("--plugin sam2", "takes no text prompt")),
    (("--plugin", "sam3", "--direction", "forward"), ("--direction: VRS-HQ's option",)),
    (("--plugin", "sam3", "--prompt", "  \n "), ("must be non-empty text",)),
    (("--plugin", "sam3", "--precision", "fast"), ("invalid choice: 'fast'",)),
    (("--plugin", "sam3", "--device", "cpu", "--precision", "official"), ("precision 'official'", "on a CPU")),
])
def test_bad_sam3_requests_are_one_line_errors(capfd, tiny_sam3_dir, frames, tmp_path, argv, needles):  # noqa: F811
    rc, _, err = run_cli(capfd, "segment", frames, "--model", tiny_sam3_dir, "--prompt", "cat",
                         "--out", tmp_path / "out", "--no-progress", *argv)
    if "invalid choice" in needles[0]:  # argparse's own usage error: two lines, exit 2
        assert rc == 2 and needles[0] in err
        return
    assert_one_line_error(rc, err, *needles)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_model_folder_without_sam3_is_refused_before_loading(capfd, frames, tmp_path):
    (tmp_path / "models").mkdir()
    rc, _, err = run_cli(capfd, "segment", frames, "--plugin", "sam3", "--model", tmp_path / "models",
                         "--prompt", "cat", "--out", tmp_path / "out", "--no-progress")
    assert_one_line_error(rc, err, "sam3", "config.json", "facebook/sam3")
    rc, _, err = run_cli(capfd, "segment", frames, "--plugin", "sam3", "--model", tmp_path / "none",
                         "--prompt", "cat", "--out", tmp_path / "out", "--no-progress")
    assert_one_line_error(rc, err, "--model", "not found")
