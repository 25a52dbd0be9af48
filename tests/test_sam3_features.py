"""A sam3 correction reads the tracker features its prediction's concept pass computed (issue 16):
the stored features are the tracker's own bit for bit, masks are bit-identical with and without
them, the tracker's vision encoder does not run, and a stale folder is refused."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests import backend_fixtures, sam3_fixtures
from tests.backend_fixtures import SPEC, TEXT_XML, make_backend, next_task_id
from tests.sam3_fixtures import load_sam3_plugin
from vrshq.engine.persist import FeatureSlot, use_slot
from vrshq.plugins.base import Correction, ObjectPrompt
from vrshq.plugins.sam3_features import FeatureRecorder
from vrshq.synthetic import SyntheticSpec, write_video
from vrshq.video.reader import open_video

# the shared fixtures this module uses
media_root = backend_fixtures.media_root
tiny_sam3_dir = sam3_fixtures.tiny_sam3_dir

FRAME_BYTES = (1024 * 16 + 256 * 32 + 64 * 128) * 4  # the tiny model's three levels, float32


class EncoderRuns:
    """Counts forward calls of the tracker's real vision encoder (a forward hook; it still runs)."""

    def __init__(self, tracker_model) -> None:
        self.n = 0
        self._hook = tracker_model.vision_encoder.register_forward_hook(self._count)

    def _count(self, *_) -> None:
        self.n += 1

    def remove(self) -> None:
        self._hook.remove()


def square(y0: int, x0: int, size: int = 30) -> np.ndarray:
    m = np.zeros((SPEC.height, SPEC.width), bool)
    m[y0:y0 + size, x0:x0 + size] = True
    return m


@pytest.fixture(scope="module")
def plugin(tiny_sam3_dir):
    return load_sam3_plugin(tiny_sam3_dir)


@pytest.fixture(scope="module")
def predicted(plugin, media_root, tmp_path_factory):
    """The plugin's prediction of clips/a.mp4 with its features written to a slot folder."""
    root = tmp_path_factory.mktemp("sam3_features")
    video = open_video(media_root / "clips" / "a.mp4", fps=SPEC.fps)
    slot = FeatureSlot(root, "1-1", {"video": "a"}, "write", 1 << 30)
    with use_slot(slot):
        tracks = plugin.predict(video, [ObjectPrompt(obj_id=1, text="car", label="Car")])
        assert slot.commit()
    assert tracks, "the tiny model found nothing: no object to correct"
    yield root, video, tracks
    video.close()


def fix_of(tracks) -> list[Correction]:
    t = tracks[0]
    return [Correction(t.obj_id, 7 if t.keyframe != 7 else 6, square(40, 60))]


def assert_same_tracks(got, ref) -> None:
    assert [t.obj_id for t in got] == [t.obj_id for t in ref]
    for a, b in zip(got, ref):
        assert a.track.frames() == b.track.frames()
        for f in a.track.frames():
            assert np.array_equal(a.track.mask(f), b.track.mask(f)), f"object {a.obj_id}, frame {f}"


def test_stored_features_are_the_trackers_own_bit_for_bit(plugin, predicted):
    from vrshq.engine.persist import StoredFeatures

    root, video, _ = predicted
    model, processor = plugin._tracker()
    folder = root / "1-1"
    stored = StoredFeatures(folder, json.loads((folder / "index.json").read_text()))
    try:
        assert sorted(stored._frames) == list(range(len(video)))
        for frame in (0, 5, len(video) - 1):
            pixels = processor.video_processor(videos=[video.frame(frame)], device="cpu",
                                               return_tensors="pt").pixel_values_videos[0]
            with torch.inference_mode():
                own = model.get_image_features(pixels, return_dict=True)
            got = stored.get(frame)
            assert len(got) == len(own.fpn_hidden_states) == 3
            for a, b in zip(got, own.fpn_hidden_states):
                assert torch.equal(a, b), f"frame {frame}: stored features differ from the tracker's"
            for a, b in zip(stored.pos_enc, own.fpn_position_encoding):
                assert torch.equal(a, b)
    finally:
        stored.close()


def test_a_correction_from_stored_features_is_bit_identical_and_skips_the_encoder(plugin, predicted):
    root, video, tracks = predicted
    fix = fix_of(tracks)
    runs = EncoderRuns(plugin._tracker()[0])
    try:
        reference = plugin.correct(video, tracks, fix)  # no slot: the encoder runs on every frame
        assert runs.n == len(video)
        runs.n = 0
        with use_slot(FeatureSlot(root, "1-1", {"video": "a"}, "read", 1 << 30)):
            cached = plugin.correct(video, tracks, fix)
        assert runs.n == 0, "the vision encoder ran although every frame's features were stored"
    finally:
        runs.remove()
    assert_same_tracks(cached, reference)
    assert np.array_equal(cached[0].track.mask(fix[0].frame), fix[0].mask)  # the fix is in


def test_features_of_other_weights_are_refused(plugin, predicted, tmp_path):
    from vrshq.model.sam3_tiny import write_tiny_sam3

    root, video, tracks = predicted
    write_tiny_sam3(tmp_path / "other" / "sam3", seed=1)
    other = load_sam3_plugin(tmp_path / "other")
    fix = fix_of(tracks)
    reference = other.correct(video, tracks, fix)
    runs = EncoderRuns(other._tracker()[0])
    try:
        # same task and identity, other weights: the folder of seed 0 must not feed seed 1
        with use_slot(FeatureSlot(root, "1-1", {"video": "a"}, "read", 1 << 30)):
            got = other.correct(video, tracks, fix)
    finally:
        runs.remove()
    assert runs.n == len(video)
    assert_same_tracks(got, reference)


def test_a_task_larger_than_the_cache_keeps_its_first_frames(plugin, media_root, tmp_path):
    video = open_video(media_root / "clips" / "a.mp4", fps=SPEC.fps)
    try:
        budget = 3 * FRAME_BYTES + 100  # three frames fit
        slot = FeatureSlot(tmp_path, "1-2", {"video": "a"}, "write", budget)
        with use_slot(slot):
            tracks = plugin.predict(video, [ObjectPrompt(obj_id=1, text="car", label="Car")])
            assert slot.commit()
        index = json.loads((tmp_path / "1-2" / "index.json").read_text())
        assert index["frame_bytes"] == FRAME_BYTES and sorted(map(int, index["frames"])) == [0, 1, 2]
        fix = fix_of(tracks)
        reference = plugin.correct(video, tracks, fix)
        runs = EncoderRuns(plugin._tracker()[0])
        try:
            with use_slot(FeatureSlot(tmp_path, "1-2", {"video": "a"}, "read", budget)):
                got = plugin.correct(video, tracks, fix)
        finally:
            runs.remove()
    finally:
        video.close()
    assert runs.n == len(video) - 3  # only the frames not kept are encoded
    assert_same_tracks(got, reference)


def test_frames_with_other_positional_encodings_store_nothing():
    feats = [torch.zeros(4, 1, 2)]
    recorder = FeatureRecorder(1 << 20)
    recorder.record(0, {"vision_feats": feats, "vision_pos_embeds": [torch.zeros(4, 1, 2)]})
    assert recorder.snapshot_size()[0] == 1
    recorder.record(1, {"vision_feats": feats, "vision_pos_embeds": [torch.ones(4, 1, 2)]})
    assert recorder.snapshot_size()[0] == 0
    recorder.close()


def test_the_recorder_keeps_only_the_frames_the_budget_holds():
    pos = [torch.zeros(4, 1, 2)]
    recorder = FeatureRecorder(2 * 32 + 5)  # two 32-byte frames fit
    for frame in range(4):
        recorder.record(frame, {"vision_feats": [torch.full((4, 1, 2), float(frame))],
                                "vision_pos_embeds": pos})
    assert recorder.snapshot_size()[:2] == (2, 32)
    assert [(f, float(t[0].max())) for f, t in recorder.iter_cached()] == [(0, 0.0), (1, 1.0)]
    recorder.close()


# ---------------------------------------------------------------- the backend (server and RQ jobs)
def task(tid: int, video: str) -> dict:
    return {"id": tid, "project": 1,
            "data": {"video": f"/data/local-files/?d={video}", "fps": SPEC.fps, "prompt": "car"}}


@pytest.fixture(scope="module")
def backends(tiny_sam3_dir, media_root, tmp_path_factory):
    """sam3 backends with the feature cache on and off."""
    on = make_backend(tiny_sam3_dir, media_root, tmp_path_factory.mktemp("sam3_on"), plugin="sam3")
    off = make_backend(tiny_sam3_dir, media_root, tmp_path_factory.mktemp("sam3_off"), plugin="sam3",
                       feature_cache_mb=0)
    yield on, off
    on.close()
    off.close()


def predict(backend, tid: int, video: str) -> None:
    from vrshq.backend.http.app import create_app

    r = create_app(backend=backend).test_client().post(
        "/predict", json={"tasks": [task(tid, video)], "project": "1", "label_config": TEXT_XML})
    assert r.status_code == 200, r.get_data(as_text=True)[:500]


def fix_task(backend, tid: int) -> list:
    """Fix the task's first object on a non-keyframe frame; the state's objects."""
    obj = backend.states.load("1", tid).objects[0]
    backend.correct_task("1", tid, [Correction(obj.obj_id, 7 if obj.keyframe != 7 else 6, square(40, 60))])
    return backend.states.load("1", tid).objects


def test_the_backend_corrects_a_sam3_task_from_its_stored_features(backends):
    on, off = backends
    tid = next_task_id()
    predict(off, tid, "clips/a.mp4")
    reference = fix_task(off, tid)
    assert not (off.config.data_path / "features").exists()
    predict(on, tid, "clips/a.mp4")
    key = json.loads((on.config.data_path / "features" / f"1-{tid}" / "key.json").read_text())
    assert key["session"]["kind"] == "sam3-tracker" and key["session"]["frames"] == SPEC.num_frames
    runs = EncoderRuns(on.plugin._tracker()[0])
    try:
        got = fix_task(on, tid)
    finally:
        runs.remove()
    assert runs.n == 0
    assert_same_tracks(got, reference)


def draw_box(backend, tid: int) -> list:
    """An annotator's box drawn on LS frame 4 of the task, added through the interactive call."""
    from vrshq.backend.http.app import create_app

    drawn = {"id": "DrawnBox", "from_name": "box", "to_name": "video", "type": "videorectangle",
             "origin": "manual", "value": {"framesCount": SPEC.num_frames, "labels": ["Animal"],
                                           "sequence": [{"frame": 4, "enabled": True, "rotation": 0,
                                                         "time": 0.4, "x": 25.0, "y": 20.0,
                                                         "width": 40.0, "height": 50.0}]}}
    body = {"tasks": [task(tid, "clips/a.mp4")], "project": "1", "label_config": TEXT_XML,
            "params": {"context": {"result": [drawn]}}}
    r = create_app(backend=backend).test_client().post("/predict", json=body)
    assert r.status_code == 200, r.get_data(as_text=True)[:500]
    return backend.states.load("1", tid).objects


def test_a_box_drawn_on_a_predicted_task_is_tracked_from_its_stored_features(backends):
    on, off = backends
    tid = next_task_id()
    predict(off, tid, "clips/a.mp4")
    reference = draw_box(off, tid)
    predict(on, tid, "clips/a.mp4")
    runs = EncoderRuns(on.plugin._tracker()[0])
    try:
        got = draw_box(on, tid)
    finally:
        runs.remove()
    assert got[-1].details["region_id"] == "DrawnBox" and len(got) == len(reference)
    assert runs.n == 0  # the drawn object's tracker read the concept pass's features
    assert_same_tracks(got, reference)


def test_the_backend_refuses_a_stale_sam3_folder(backends, media_root):
    on, off = backends
    tid = next_task_id()
    predict(on, tid, "clips/a.mp4")
    folder = on.config.data_path / "features" / f"1-{tid}"
    stale = on.config.data_path / "stale-sam3"
    shutil.copytree(folder, stale)
    other = SyntheticSpec(num_frames=SPEC.num_frames, width=SPEC.width, height=SPEC.height,
                          fps=SPEC.fps, num_objects=2, seed=11)
    write_video(other, media_root / "clips" / "sam3-b.mp4")
    predict(off, tid, "clips/sam3-b.mp4")
    reference = fix_task(off, tid)
    predict(on, tid, "clips/sam3-b.mp4")
    # the new prediction replaced the folder; a crash could leave a's back: it must not be read
    shutil.rmtree(folder)
    shutil.copytree(stale, folder)
    runs = EncoderRuns(on.plugin._tracker()[0])
    try:
        got = fix_task(on, tid)
    finally:
        runs.remove()
    assert runs.n == SPEC.num_frames
    assert_same_tracks(got, reference)


WORKER = """
import json, sys
import numpy as np
from vrshq.backend.config import BackendConfig
from vrshq.backend.service import Backend
from vrshq.plugins.base import Correction

model_dir, media, data, tid, obj, frame = sys.argv[1:7]
backend = Backend(BackendConfig(plugin="sam3", model_dir=model_dir, device="cpu", data_dir=data,
                                local_roots=(media,)))
runs = [0]
backend.plugin._tracker()[0].vision_encoder.register_forward_hook(
    lambda *_: runs.__setitem__(0, runs[0] + 1))
fix = np.zeros((int(sys.argv[7]), int(sys.argv[8])), bool)
fix[40:70, 60:90] = True
backend.correct_task("1", int(tid), [Correction(int(obj), int(frame), fix)])
backend.close()
print(json.dumps({"encoder_runs": runs[0]}))
"""


def test_a_fresh_process_corrects_from_the_features_the_server_stored(backends, media_root,
                                                                       tiny_sam3_dir, tmp_path):
    """An RQ worker is another process with its own model load: the key must match there too."""
    on, off = backends
    tid = next_task_id()
    predict(off, tid, "clips/a.mp4")
    reference = fix_task(off, tid)
    predict(on, tid, "clips/a.mp4")
    obj = on.states.load("1", tid).objects[0]
    frame = 7 if obj.keyframe != 7 else 6
    done = subprocess.run([sys.executable, "-c", WORKER, str(tiny_sam3_dir), str(media_root),
                           str(on.config.data_path), str(tid), str(obj.obj_id), str(frame),
                           str(SPEC.height), str(SPEC.width)],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"encoder_runs": 0}
    assert_same_tracks(on.states.load("1", tid).objects, reference)


# ------------------------------------------- nothing stored: the first session records for the rest
def test_two_objects_of_one_correction_encode_each_frame_once(plugin, predicted, tmp_path):
    _, video, tracks = predicted
    assert len(tracks) >= 2, "the tiny model found one instance: no second object to correct"
    fixes = fix_of(tracks) + [Correction(tracks[1].obj_id, 3 if tracks[1].keyframe != 3 else 4,
                                         square(20, 30))]
    reference = plugin.correct(video, tracks, fixes)  # no slot: each object encodes every frame
    runs = EncoderRuns(plugin._tracker()[0])
    try:
        # an empty folder root: nothing stored for this task
        slot = FeatureSlot(tmp_path, "1-9", {"video": "a"}, "read", 1 << 30)
        with use_slot(slot):
            got = plugin.correct(video, tracks, fixes)
            assert slot.keep_filled()
    finally:
        runs.remove()
    assert runs.n == len(video)  # the first object's session encoded; the second read its recording
    assert_same_tracks(got, reference)
    index = json.loads((tmp_path / "1-9" / "index.json").read_text())
    assert sorted(map(int, index["frames"])) == list(range(len(video)))


def test_drawn_objects_of_a_prediction_share_one_encoding_and_store_it(plugin, media_root, tmp_path):
    from vrshq.plugins.base import ObjectPrompt as P

    prompts = [P(obj_id=1, frame=2, box=(30, 20, 90, 70), label="Car"),
               P(obj_id=2, frame=5, box=(80, 40, 150, 110), label="Car")]
    video = open_video(media_root / "clips" / "a.mp4", fps=SPEC.fps)
    try:
        reference = plugin.predict(video, prompts)
        runs = EncoderRuns(plugin._tracker()[0])
        try:
            slot = FeatureSlot(tmp_path, "1-8", {"video": "a"}, "write", 1 << 30)
            with use_slot(slot):
                got = plugin.predict(video, prompts)
                assert slot.commit()
            assert runs.n == len(video)  # the second drawn object read the first one's recording
            assert_same_tracks(got, reference)
            fix = [Correction(1, 9, square(30, 50))]
            ref_fix = plugin.correct(video, got, fix)
            runs.n = 0
            with use_slot(FeatureSlot(tmp_path, "1-8", {"video": "a"}, "read", 1 << 30)):
                got_fix = plugin.correct(video, got, fix)
            assert runs.n == 0
        finally:
            runs.remove()
    finally:
        video.close()
    assert_same_tracks(got_fix, ref_fix)


def test_a_task_without_stored_features_has_them_after_its_first_correction(backends):
    on, off = backends
    tid = next_task_id()
    predict(off, tid, "clips/a.mp4")
    reference = fix_task(off, tid)
    obj = off.states.load("1", tid).objects[-1]
    second = [Correction(obj.obj_id, 2 if obj.keyframe != 2 else 3, square(10, 10))]
    off.correct_task("1", tid, second)
    reference_second = off.states.load("1", tid).objects
    predict(on, tid, "clips/a.mp4")
    folder = on.config.data_path / "features" / f"1-{tid}"
    shutil.rmtree(folder)  # as a task predicted before features were kept (or with the cache off)
    runs = EncoderRuns(on.plugin._tracker()[0])
    try:
        got = fix_task(on, tid)
        assert runs.n == SPEC.num_frames and (folder / "key.json").is_file()
        runs.n = 0
        on.correct_task("1", tid, second)
        assert runs.n == 0
    finally:
        runs.remove()
    assert_same_tracks(got, reference)
    assert_same_tracks(on.states.load("1", tid).objects, reference_second)


@pytest.mark.cuda
def test_on_the_cuda_test_device_a_stored_fix_equals_the_encoder_fix(tiny_sam3_dir, media_root, tmp_path):
    """scripts/gpu_check.sh: on CUDA in the plugin's plan (bf16 where the GPU has it), the concept
    pass's tracker features must still be the tracker's own: identical masks, no encoder run."""
    from tests.conftest import cuda_test_device
    from vrshq.plugins.base import PluginConfig
    from vrshq.plugins.sam3_plugin import Sam3Plugin

    device = cuda_test_device()
    gpu = Sam3Plugin()
    gpu.load(PluginConfig(model_dir=str(tiny_sam3_dir), device=str(device), precision="auto"))
    video = open_video(media_root / "clips" / "a.mp4", fps=SPEC.fps)
    try:
        slot = FeatureSlot(tmp_path, "1-1", {"video": "a"}, "write", 1 << 30)
        with use_slot(slot):
            tracks = gpu.predict(video, [ObjectPrompt(obj_id=1, text="car", label="Car")])
            assert slot.commit()
        assert tracks
        fix = fix_of(tracks)
        reference = gpu.correct(video, tracks, fix)
        runs = EncoderRuns(gpu._tracker()[0])
        try:
            with use_slot(FeatureSlot(tmp_path, "1-1", {"video": "a"}, "read", 1 << 30)):
                got = gpu.correct(video, tracks, fix)
        finally:
            runs.remove()
    finally:
        video.close()
    assert runs.n == 0
    assert_same_tracks(got, reference)
