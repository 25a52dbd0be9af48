"""A correction reads the prediction's stored image features (issue 14 §2 timing): masks are
bit-identical to a correction that runs the encoder, and a stale folder (other video, other
model version) is never read."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.backend_fixtures import SPEC, TEXT_XML, make_backend, next_task_id
from tests.test_backend_corrections import square
from vrshq.engine.persist import FeatureSlot, evict_oldest, use_slot, write_features
from vrshq.plugins.base import Correction
from vrshq.synthetic import SyntheticSpec, write_video


def task(tid: int, video: str) -> dict:
    return {"id": tid, "project": 1,
            "data": {"video": f"/data/local-files/?d={video}", "fps": SPEC.fps,
                     "prompt": "the red disc\nthe car"}}


class EncoderCalls:
    """Counts the SAM-2 image-encoder runs of a backend's model (the real method still runs)."""

    def __init__(self, backend, monkeypatch) -> None:
        sam2 = backend.plugin.model.sam2
        self.n = 0
        real = sam2.forward_image

        def counted(*a, **k):
            self.n += 1
            return real(*a, **k)

        monkeypatch.setattr(sam2, "forward_image", counted)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("feature_media")
    (root / "clips").mkdir()
    write_video(SPEC, root / "clips" / "a.mp4")
    return root


@pytest.fixture(scope="module")
def backends(tiny_models, media, tmp_path_factory):
    """The same backend with the feature cache on and off."""
    on = make_backend(tiny_models, media, tmp_path_factory.mktemp("with_cache"))
    off = make_backend(tiny_models, media, tmp_path_factory.mktemp("no_cache"), feature_cache_mb=0)
    yield on, off
    on.close()
    off.close()


def predict_and_fix(backend, tid: int, video: str = "clips/a.mp4", fix_frame: int = 7):
    """Predict the task, then fix object 1 on a non-keyframe frame; every frame's masks."""
    from vrshq.backend.http.app import create_app

    r = create_app(backend=backend).test_client().post(
        "/predict", json={"tasks": [task(tid, video)], "project": "1", "label_config": TEXT_XML})
    assert r.status_code == 200, r.json
    keyframe = backend.states.load("1", tid).object(1).keyframe
    frame = fix_frame if fix_frame != keyframe else fix_frame - 1
    backend.correct_task("1", tid, [Correction(1, frame, square(40, 60))])
    state = backend.states.load("1", tid)
    return [np.stack([o.track.mask(f) if o.track.has(f) else np.zeros((SPEC.height, SPEC.width), bool)
                      for f in range(SPEC.num_frames)]) for o in state.objects]


def test_correction_from_stored_features_is_bit_identical(backends, monkeypatch):
    on, off = backends
    tid = next_task_id()
    reference = predict_and_fix(off, tid)
    assert not (off.config.data_path / "features").exists()
    calls = EncoderCalls(on, monkeypatch)
    cached = predict_and_fix(on, tid)
    folder = on.config.data_path / "features" / f"1-{tid}"
    assert (folder / "key.json").is_file()
    # the prediction encodes every frame once; the correction none
    assert calls.n == SPEC.num_frames
    assert len(cached) == len(reference) == 2
    for a, b in zip(cached, reference):
        for f in range(SPEC.num_frames):
            assert np.array_equal(a[f], b[f]), f"frame {f} differs from the uncached correction"


def test_stale_features_are_not_used(backends, media, monkeypatch):
    on, off = backends
    tid = next_task_id()
    predict_and_fix(on, tid, "clips/a.mp4")
    folder = on.config.data_path / "features" / f"1-{tid}"
    stored = on.config.data_path / "features" / "stale"
    shutil.copytree(folder, stored)
    # Another video under the same task: a new prediction replaces the folder; planting the old
    # folder back (as a crash between the two could leave it) must not feed the correction.
    other = SyntheticSpec(num_frames=SPEC.num_frames, width=SPEC.width, height=SPEC.height,
                          fps=SPEC.fps, num_objects=2, seed=11)
    write_video(other, media / "clips" / "b.mp4")
    reference = predict_and_fix(off, tid, "clips/b.mp4")
    # the cached backend: predict b, then put a's folder back before the fix
    from vrshq.backend.http.app import create_app

    resp = create_app(backend=on).test_client().post(
        "/predict", json={"tasks": [task(tid, "clips/b.mp4")], "project": "1", "label_config": TEXT_XML})
    assert resp.status_code == 200
    # the new prediction replaced the task's folder with the new video's features
    assert json.loads((folder / "key.json").read_text())["identity"]["video"].endswith("b.mp4")
    shutil.rmtree(folder)
    shutil.copytree(stored, folder)
    calls = EncoderCalls(on, monkeypatch)
    keyframe = on.states.load("1", tid).object(1).keyframe
    on.correct_task("1", tid, [Correction(1, 7 if keyframe != 7 else 6, square(40, 60))])
    assert calls.n > 0  # the stale folder was refused: the encoder ran
    state = on.states.load("1", tid)
    for o, ref in zip(state.objects, reference):
        for f in range(SPEC.num_frames):
            assert np.array_equal(o.track.mask(f), ref[f]), f"frame {f}: stale features were used"


def test_other_model_version_reads_nothing(tmp_path):
    import torch

    key = {"frames": 1}
    frames = {0: (torch.arange(6, dtype=torch.float32).reshape(1, 1, 2, 3),)}
    slot = FeatureSlot(tmp_path, "1-1", {"model_version": "v1"}, "read", 1 << 20)
    write_features(slot.directory, slot.full_key(key), frames.items(), [torch.zeros(1)])
    with use_slot(slot):
        got = slot.open(key)
        assert got is not None and torch.equal(got.get(0)[0], frames[0][0])
    other = FeatureSlot(tmp_path, "1-1", {"model_version": "v2"}, "read", 1 << 20)
    assert other.open(key) is None


def test_oldest_tasks_are_evicted(tmp_path):
    import os

    import torch

    frames = {i: (torch.zeros(1, 64, 16, 16),) for i in range(4)}  # 256 KiB a task
    for n, name in enumerate(["1-1", "1-2", "1-3"]):
        write_features(tmp_path / name, {"n": n}, frames.items(), [torch.zeros(1)])
        os.utime(tmp_path / name, ns=(n * 10**9, n * 10**9))
    removed = evict_oldest(tmp_path, 600 * 1024, keep=tmp_path / "1-3")
    assert [p.name for p in removed] == ["1-1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1-2", "1-3"]


def test_a_task_larger_than_the_cache_keeps_what_fits_and_stays_identical(
        tiny_models, media, tmp_path, monkeypatch, backends):
    _, off = backends
    tid = next_task_id()
    reference = predict_and_fix(off, tid)
    # a cache of about 5 tiny-model frames (VRSHQ_FEATURE_CACHE_MB counts whole MiB)
    monkeypatch.setattr("vrshq.backend.tasks.features.MiB", 5 * 32768 + 1000)
    small = make_backend(tiny_models, media, tmp_path / "small", feature_cache_mb=1)
    try:
        calls = EncoderCalls(small, monkeypatch)
        got = predict_and_fix(small, tid)
        index = json.loads((tmp_path / "small" / "features" / f"1-{tid}" / "index.json").read_text())
        kept = len(index["frames"])
        assert kept == (5 * 32768 + 1000) // index["frame_bytes"] and 0 < kept < SPEC.num_frames
        # the correction encodes only the frames not kept
        assert calls.n == SPEC.num_frames + (SPEC.num_frames - kept)
    finally:
        small.close()
    for a, b in zip(got, reference):
        for f in range(SPEC.num_frames):
            assert np.array_equal(a[f], b[f]), f"frame {f} differs from the uncached correction"


@pytest.mark.parametrize("raw", ["-1", "lots"])
def test_a_bad_cache_size_is_a_one_line_config_error(raw):
    from vrshq.backend.config import BackendConfig, ConfigError

    with pytest.raises(ConfigError, match="VRSHQ_FEATURE_CACHE_MB must be an integer"):
        BackendConfig.from_env({"VRSHQ_FEATURE_CACHE_MB": raw})


def test_the_sam2_plugin_corrects_from_stored_features_bit_identically(tiny_models, media, tmp_path,
                                                                       monkeypatch):
    from vrshq.plugins.base import ObjectPrompt
    from vrshq.video.reader import open_video

    backend = make_backend(tiny_models, media, tmp_path / "d", plugin="sam2")
    try:
        plugin = backend.plugin
        video = open_video(media / "clips" / "a.mp4", fps=SPEC.fps)
        prompts = [ObjectPrompt(obj_id=1, frame=2, mask=square(30, 40))]
        write = FeatureSlot(tmp_path / "features", "2-1", {"video": "a"}, "write", 1 << 30)
        with use_slot(write):
            previous = plugin.predict(video, prompts)
            assert write.commit()
        fix = [Correction(1, 8, square(50, 70))]
        reference = plugin.correct(video, previous, fix)  # no slot: the encoder runs
        calls = [0]
        real = plugin.model.forward_image
        monkeypatch.setattr(plugin.model, "forward_image",
                            lambda *a, **k: calls.__setitem__(0, calls[0] + 1) or real(*a, **k))
        with use_slot(FeatureSlot(tmp_path / "features", "2-1", {"video": "a"}, "read", 1 << 30)):
            cached = plugin.correct(video, previous, fix)
        video.close()
    finally:
        backend.close()
    assert calls[0] == 0
    for a, b in zip(cached, reference):
        for f in range(SPEC.num_frames):
            assert np.array_equal(a.track.mask(f), b.track.mask(f)), f"frame {f}"
