"""Model plugins: entry-point discovery, the sam2 and vrshq plugins, corrections, a third-party plugin."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from vrshq.plugins import (
    Correction,
    ModelPlugin,
    ObjectPrompt,
    ObjectTrack,
    PluginConfig,
    available_plugins,
    load_plugin,
    plugin_name,
)
from vrshq.plugins.registry import plugin_class
from vrshq.plugins.sam2_plugin import Sam2Plugin
from vrshq.plugins.vrshq_plugin import VrshqPlugin
from vrshq.engine import EngineConfig
from vrshq.errors import ModelError, PromptError
from vrshq.model.tiny import write_tiny_vrshq
from vrshq.synthetic import SyntheticSpec, ground_truth
from vrshq.video.reader import open_video

FIXTURE = Path(__file__).parent / "fixtures" / "thirdparty_plugin"
THIRD_PARTY_DIST = "vrshq-constbox-plugin"
SPEC = {"num_frames": 12, "width": 160, "height": 120, "fps": 10.0, "num_objects": 2, "seed": 3}
CPU = EngineConfig(device="cpu")


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny models folder: vrshq/, clip/ and sam2/ (config.yaml + model.pt)."""
    root = tmp_path_factory.mktemp("plugin_models")
    write_tiny_vrshq(root, seed=0)
    return root


@pytest.fixture(scope="module")
def config(model_dir) -> PluginConfig:
    return PluginConfig(model_dir=str(model_dir), device="cpu", engine=CPU)


@pytest.fixture(scope="module")
def video(make_video):
    return open_video(make_video("png", **SPEC))


@pytest.fixture(scope="module")
def truth() -> np.ndarray:
    return ground_truth(SyntheticSpec(**SPEC))


@pytest.fixture(scope="module")
def sam2(config) -> ModelPlugin:
    return load_plugin("sam2", config)


def mask_prompts(truth, frame=0) -> list[ObjectPrompt]:
    return [ObjectPrompt(1, label="disc", frame=frame, mask=truth[frame] == 1),
            ObjectPrompt(2, label="box", frame=frame, mask=truth[frame] == 2)]


@pytest.fixture(scope="module")
def sam2_tracks(sam2, video, truth) -> list[ObjectTrack]:
    return sam2.predict(video, mask_prompts(truth))


# --- discovery ------------------------------------------------------------------------------

def test_builtin_plugins_are_discovered_through_entry_points(config):
    from importlib.metadata import entry_points

    declared = {ep.name: ep.value for ep in entry_points(group="vrshq.plugins")}
    assert declared["sam2"] == "vrshq.plugins.sam2_plugin:Sam2Plugin"
    assert declared["vrshq"] == "vrshq.plugins.vrshq_plugin:VrshqPlugin"
    found = available_plugins()
    assert {"vrshq", "sam2"} <= set(found)
    assert found["sam2"].value == "vrshq.plugins.sam2_plugin:Sam2Plugin"
    assert found["vrshq"].value == "vrshq.plugins.vrshq_plugin:VrshqPlugin"
    assert plugin_class("sam2") is Sam2Plugin and plugin_class("vrshq") is VrshqPlugin


def test_builtin_plugins_load_from_a_source_tree_without_entry_points(monkeypatch):
    # vrshq on PYTHONPATH, not pip-installed (scripts/gpu_check.sh on a GPU machine)
    monkeypatch.setattr("vrshq.plugins.registry.entry_points", lambda group: [])
    assert set(available_plugins()) == {"vrshq", "sam2", "sam3"}
    assert plugin_class("sam2") is Sam2Plugin and plugin_class("vrshq") is VrshqPlugin


def test_unknown_plugin_lists_available_names(config):
    with pytest.raises(ModelError) as err:
        load_plugin("nope", config)
    assert "'nope'" in str(err.value) and "sam2" in str(err.value) and "vrshq" in str(err.value)


def test_plugin_name_from_config_or_env():
    assert plugin_name(env={}) == "vrshq"
    assert plugin_name(env={"VRSHQ_PLUGIN": "sam2"}) == "sam2"
    assert plugin_name(env={"VRSHQ_PLUGIN": "sam2"}, configured="constbox") == "constbox"


def test_sam2_plugin_needs_a_model(tmp_path):
    with pytest.raises(ModelError, match="sam2"):
        load_plugin("sam2", PluginConfig(model_dir=str(tmp_path), engine=CPU))
    with pytest.raises(ModelError, match="sam2_checkpoint"):
        load_plugin("sam2", PluginConfig(sam2_config="configs/sam2/sam2_hiera_t.yaml", engine=CPU))
    with pytest.raises(ModelError, match="not loaded"):
        Sam2Plugin().version  # noqa: B018


def test_info_reports_name_version_capabilities(sam2):
    info = sam2.info()
    assert info["name"] == "sam2" and info["version"].startswith("sam2-")
    assert info["capabilities"] == ["box", "mask", "points"]
    assert info["corrections"] == ["box", "mask", "points"]  # the Correction kinds correct() takes


# --- sam2 plugin ----------------------------------------------------------------------------

def test_sam2_plugin_fills_holes_as_sam2s_builder(sam2, config):
    # sam2's build_sam2_video_predictor sets fill_hole_area=8; 0 in the config turns it off
    assert sam2.engine.fill_hole_area == 8
    off = load_plugin("sam2", replace(config, engine=replace(CPU, fill_hole_area=0)))
    assert off.engine.fill_hole_area == 0


def check_covers_video(tracks: list[ObjectTrack], truth: np.ndarray, ids=(1, 2)) -> None:
    assert [t.obj_id for t in tracks] == list(ids)
    for t in tracks:
        assert t.track.frames() == list(range(len(truth)))
        visible = [f for f in range(len(truth)) if (truth[f] == t.obj_id).any()]
        assert visible
        assert all(t.track.is_present(f) for f in visible), t.obj_id


def test_sam2_predict_from_mask_prompts(sam2_tracks, truth):
    check_covers_video(sam2_tracks, truth)
    disc, box = sam2_tracks
    assert (disc.label, box.label) == ("disc", "box")
    assert disc.keyframe == 0 and np.array_equal(disc.keyframe_mask, truth[0] == 1)
    assert iou(disc.track.mask(0), truth[0] == 1) > 0.85
    assert disc.details["prompt_kinds"] == ["mask"] and disc.corrections == []


def test_sam2_predict_from_box_and_points(sam2, video, truth):
    ys, xs = np.nonzero(truth[3] == 1)
    box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
    ys2, xs2 = np.nonzero(truth[3] == 2)
    click = [(float(xs2.mean()), float(ys2.mean()))]
    tracks = sam2.predict(video, [ObjectPrompt(1, frame=3, box=box),
                                  ObjectPrompt(2, frame=3, points=click, point_labels=[1])])
    check_covers_video(tracks, truth)
    assert tracks[0].keyframe == 3
    assert np.array_equal(tracks[0].keyframe_mask, tracks[0].track.mask(3))
    assert tracks[0].keyframe_mask.any()


def test_sam2_rejects_wrong_prompts(sam2, video, truth):
    with pytest.raises(PromptError, match="does not accept text"):
        sam2.predict(video, [ObjectPrompt(1, text="the red disc")])
    with pytest.raises(PromptError, match="frame"):
        sam2.predict(video, [ObjectPrompt(1, box=(1, 2, 30, 40))])
    with pytest.raises(PromptError, match="outside the video"):
        sam2.predict(video, [ObjectPrompt(1, frame=99, box=(1, 2, 30, 40))])
    with pytest.raises(PromptError, match="mask"):
        sam2.predict(video, [ObjectPrompt(1, frame=0, mask=np.ones((5, 5), bool))])
    with pytest.raises(PromptError, match="no area"):
        sam2.predict(video, [ObjectPrompt(1, frame=0, box=(30, 2, 10, 40))])
    with pytest.raises(PromptError, match="point labels"):
        sam2.predict(video, [ObjectPrompt(1, frame=0, points=[(3, 4)], point_labels=[1, 0])])
    with pytest.raises(PromptError, match="finite"):
        sam2.predict(video, [ObjectPrompt(1, frame=0, points=[(float("nan"), 4)], point_labels=[1])])
    with pytest.raises(PromptError, match="empty"):
        sam2.predict(video, [ObjectPrompt(1, frame=0)])


def test_sam2_correct_repropagates_only_the_corrected_object(sam2, sam2_tracks, video, truth):
    frame = 8
    fix = truth[frame] == 1
    corrected = sam2.correct(video, sam2_tracks, [Correction(1, frame, fix)])
    disc, box = corrected
    assert [t.obj_id for t in corrected] == [1, 2] and (disc.label, box.label) == ("disc", "box")
    assert iou(disc.track.mask(frame), fix) > 0.85
    assert box is sam2_tracks[1] and box.track == sam2_tracks[1].track
    assert disc.track != sam2_tracks[0].track and disc.keyframe == 0
    assert [c.frame for c in disc.corrections] == [frame]

    # the same as tracking from scratch with the original prompt and the correction
    scratch = sam2.predict(video, mask_prompts(truth) + [ObjectPrompt(1, frame=frame, mask=fix)])
    for a, b in zip(corrected, scratch):
        assert a.obj_id == b.obj_id and a.track == b.track
        assert all(np.array_equal(a.track.mask(f), b.track.mask(f)) for f in range(len(truth)))

    # a second correction keeps the first
    again = sam2.correct(video, corrected, [Correction(1, 11, truth[11] == 1)])
    assert [c.frame for c in again[0].corrections] == [frame, 11]
    assert iou(again[0].track.mask(frame), fix) > 0.85
    assert sam2.correct(video, sam2_tracks, []) == sam2_tracks


def test_correct_rejects_bad_corrections(sam2, sam2_tracks, video, truth):
    with pytest.raises(PromptError, match="object 7"):
        sam2.correct(video, sam2_tracks, [Correction(7, 0, truth[0] == 1)])
    with pytest.raises(PromptError, match="outside the video"):
        sam2.correct(video, sam2_tracks, [Correction(1, 50, truth[0] == 1)])
    with pytest.raises(PromptError, match="mask"):
        sam2.correct(video, sam2_tracks, [Correction(1, 3, np.zeros((4, 4), bool))])


# --- vrshq plugin ---------------------------------------------------------------------------

def test_vrshq_plugin_predicts_and_corrects(config, video, truth):
    plugin = load_plugin("vrshq", config)
    assert plugin.version.startswith("vrshq-") and plugin.info()["capabilities"] == ["text"]
    stages = []
    tracks = plugin.predict(video, [ObjectPrompt(5, label="disc", text="the red disc"),
                                    ObjectPrompt(9, text="the blue box")],
                            progress=lambda stage, done, total: stages.append(stage))
    assert {"anchor", "keyframe", "propagate"} <= set(stages)
    assert [t.obj_id for t in tracks] == [5, 9] and [t.label for t in tracks] == ["disc", None]
    for t in tracks:
        assert t.track.obj_id == t.obj_id and t.track.frames() == list(range(len(truth)))
        assert 0 <= t.keyframe < len(truth)
        assert np.array_equal(t.keyframe_mask, t.track.mask(t.keyframe))
        assert t.details["prompt"] and t.details["candidates"]
        assert isinstance(t.details["anchor"], int)
    with pytest.raises(PromptError, match="does not accept box"):
        plugin.predict(video, [ObjectPrompt(1, frame=0, box=(1, 2, 30, 40))])
    with pytest.raises(PromptError, match="one text prompt per object"):
        plugin.predict(video, [ObjectPrompt(1, text="a"), ObjectPrompt(1, text="b")])

    fix = truth[6] == 1
    corrected = plugin.correct(video, tracks, [Correction(5, 6, fix)])
    assert iou(corrected[0].track.mask(6), fix) > 0.85
    assert corrected[1] is tracks[1]
    assert corrected[0].details == tracks[0].details and corrected[0].label == "disc"


# --- a third-party plugin package -----------------------------------------------------------

def _pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args, "-q", "--disable-pip-version-check"],
                          check=False, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def thirdparty(tmp_path_factory):
    """pip-install tests/fixtures/thirdparty_plugin into this venv; uninstall it afterwards."""
    source = tmp_path_factory.mktemp("thirdparty") / "pkg"
    shutil.copytree(FIXTURE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    done = _pip("install", "--no-deps", "--no-build-isolation", "--no-index", str(source))
    assert done.returncode == 0, done.stderr
    importlib.invalidate_caches()
    try:
        yield "constbox"
    finally:
        _pip("uninstall", "-y", THIRD_PARTY_DIST)
        sys.modules.pop("vrshq_constbox", None)
        importlib.invalidate_caches()


def test_thirdparty_plugin_is_discovered_and_runs(thirdparty, video, truth):
    assert thirdparty in available_plugins()
    plugin = load_plugin(thirdparty, PluginConfig(options=(("score", "2.5"),)))
    assert plugin.info() == {"name": "constbox", "version": "constbox-0.0.1",
                             "capabilities": ["box", "mask"], "corrections": ["mask"]}
    tracks = plugin.predict(video, [ObjectPrompt(3, label="thing", frame=2, box=(10, 20, 50, 60))])
    (t,) = tracks
    assert (t.obj_id, t.label, t.keyframe, t.score) == (3, "thing", 2, 2.5)
    assert t.track.frames() == list(range(len(truth)))
    assert t.track.mask(7)[20:60, 10:50].all() and t.track.mask(7).sum() == 40 * 40
    with pytest.raises(PromptError, match="does not accept text"):
        plugin.predict(video, [ObjectPrompt(3, text="a thing")])
    fixed = plugin.correct(video, tracks, [Correction(3, 5, truth[5] == 1)])
    assert np.array_equal(fixed[0].track.mask(5), truth[5] == 1)


def test_broken_plugin_is_named(monkeypatch):
    from importlib.metadata import EntryPoint

    broken = EntryPoint("broken", "no_such_module_xyz:Plugin", "vrshq.plugins")
    monkeypatch.setattr("vrshq.plugins.registry.available_plugins", lambda: {"broken": broken})
    with pytest.raises(ModelError, match="'broken'.*cannot be imported.*ModuleNotFoundError"):
        load_plugin("broken", PluginConfig())
