"""Issue 15, section 2 ("Frame rates"): each defect reproduced, on real files written with PyAV.

- A variable-frame-rate file is refused (one line naming the problem and the ffmpeg command to
  convert it), decided from the container's timestamps before any frame is decoded; constant-rate
  files from a real encoder (25 fps, 30000/1001 fps, millisecond time bases) pass, at their exact
  rate.
- ``/predict`` with a task ``fps`` that is not the file's rate is a 4xx naming both rates, or, with
  ``VRSHQ_FPS_MISMATCH=use-file``, the file's rate is written into the task and predicted with.
- ``vrshq track --fps`` on a video file must agree with the file's rate.
- Small valid videos (16x16 H.264) decode to the same frames as PyAV's own decode.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from vrshq.errors import VideoError
from vrshq.synthetic import SyntheticSpec, write_video
from vrshq.video import open_video
from vrshq.video.timing import (
    CFR_TOLERANCE,
    VariableFrameRateError,
    probe_timing,
    same_rate,
    timing_from_pts,
)

pytestmark = pytest.mark.timeout(300)


def write_with_pts(path: Path, pts_ms: list[int], size: tuple[int, int] = (64, 48),
                   codec: str = "libx264") -> Path:
    """An H.264 file whose frame k is shown at pts_ms[k] milliseconds (irregular: a VFR file)."""
    width, height = size
    tb = Fraction(1, 1000)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = tb
        for k, pts in enumerate(pts_ms):
            image = np.full((height, width, 3), (37 * k) % 256, np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = pts, tb
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def pyav_frames(path: Path) -> np.ndarray:
    """Every frame of PyAV's own in-order decode, RGB: the reference."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


# 25 fps for 12 frames, then 12 frames at 12.5 fps (a phone that slowed down in low light).
VFR_PTS = [40 * k for k in range(12)] + [440 + 80 * k for k in range(1, 13)]


# --- small videos ---------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(16, 16), (8, 8), (48, 48), (24, 16), (16, 32)])
def test_a_small_h264_video_decodes_to_pyavs_frames(tmp_path, size):
    # decord 0.6 hands narrow frames back with their row padding as extra "channels":
    # (16, 16, 6) for a 16x16 video, which the reader called a corrupt file.
    path = write_with_pts(tmp_path / f"small{size[0]}x{size[1]}.mp4", [40 * k for k in range(6)], size)
    reference = pyav_frames(path)
    with open_video(path) as reader:
        assert (reader.width, reader.height, len(reader)) == (*size, 6)
        # tolerance 0: both decode with the same ffmpeg, so the frames are equal bit for bit
        for i in (5, 0, 3, 1, 4, 2):
            np.testing.assert_array_equal(reader.frame(i), reference[i], err_msg=f"frame {i}")
        np.testing.assert_array_equal(reader.frames(range(6)), reference)


# --- constant and variable frame rates --------------------------------------------------------

@pytest.mark.parametrize("ext,fps,exact", [
    ("mp4", 25.0, Fraction(25)),
    ("mp4", 30000 / 1001, Fraction(30000, 1001)),
    ("mkv", 30000 / 1001, Fraction(30000, 1001)),  # a 1 ms time base: frames last 33 or 34 ms
    ("webm", 30000 / 1001, Fraction(30000, 1001)),
    ("mov", 24000 / 1001, Fraction(24000, 1001)),
    ("avi", 25.0, Fraction(25)),
])
def test_constant_rate_files_from_a_real_encoder_pass_at_their_exact_rate(make_video, ext, fps, exact):
    options = {"bf": "3", "g": "12"} if ext in ("mp4", "mkv", "mov") else None
    path = make_video(ext, num_frames=60, width=64, height=48, fps=fps, options=options)
    timing = probe_timing(path)
    assert timing is not None and timing.constant and timing.frames == 60
    assert timing.fps == exact
    with open_video(path) as reader:
        assert reader.fps == float(exact) and reader.file_fps == float(exact)


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_a_variable_frame_rate_file_is_refused_naming_the_problem_and_the_fix(tmp_path, ext):
    path = write_with_pts(tmp_path / f"vfr.{ext}", VFR_PTS)
    with pytest.raises(VariableFrameRateError) as err:
        open_video(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(path))
    assert "variable frame rate" in message
    assert f"ffmpeg -i vfr.{ext} " in message and "fps=" in message and "vfr_cfr.mp4" in message
    assert isinstance(err.value, VideoError)  # a 422 in the backend, exit 2 in the CLI


def test_the_rate_is_checked_before_any_frame_is_decoded(tmp_path, monkeypatch):
    import vrshq.video.decord_reader as decord_reader

    def no_decoder(self):
        raise AssertionError("the decoder was opened before the frame rate was checked")

    monkeypatch.setattr(decord_reader.DecordVideoReader, "_open_decord", no_decoder)
    with pytest.raises(VariableFrameRateError):
        open_video(write_with_pts(tmp_path / "vfr.mp4", VFR_PTS))


def test_one_dropped_frame_makes_a_file_variable_rate(tmp_path):
    # 40 frames at 25 fps with frame 20's slot left empty: from there on every frame is one late
    pts = [40 * k for k in range(20)] + [40 * k for k in range(21, 41)]
    with pytest.raises(VariableFrameRateError, match="variable frame rate"):
        open_video(write_with_pts(tmp_path / "dropped.mp4", pts))


# --- the rule, on timestamps alone (ticks of the stream's time base) ---------------------------

def test_the_constant_rate_rule_allows_time_base_rounding_and_jitter_within_the_tolerance():
    ms = Fraction(1, 1000)
    ntsc = [round(k * 1001 / 30) for k in range(3000)]  # 29.97 fps in milliseconds: 33/34 ms
    timing = timing_from_pts(ntsc, ms, declared=[Fraction(30000, 1001)])
    assert timing.constant and timing.fps == Fraction(30000, 1001)
    # every frame up to just under a quarter frame early or late: still constant
    jitter = [40 * k + (9 if k % 3 == 1 else -9 if k % 3 == 2 else 0) for k in range(100)]
    assert timing_from_pts(jitter, ms).constant
    assert CFR_TOLERANCE == Fraction(1, 4)
    # one frame a third of a frame late, a drift to half a frame, a duplicate timestamp: variable
    late = [40 * k + (14 if k == 50 else 0) for k in range(100)]
    assert not timing_from_pts(late, ms).constant
    drift = [40 * k + k // 4 for k in range(200)]  # 40.25 ms frames, then back to 40
    drift += [drift[-1] + 40 * k for k in range(1, 200)]
    assert not timing_from_pts(drift, ms).constant
    duplicate = [40 * k for k in range(50)] + [40 * 49] + [40 * k for k in range(50, 100)]
    assert not timing_from_pts(duplicate, ms).constant
    # out-of-order timestamps (B-frames in decode order) are sorted first
    assert timing_from_pts([0, 80, 40, 160, 120, 200], ms).constant


def test_a_declared_rate_is_used_only_when_the_timestamps_agree_with_it():
    ms = Fraction(1, 1000)
    two = timing_from_pts([0, 40], ms, declared=[Fraction(30)])  # 2 frames 40 ms apart: 25 fps
    assert two.fps == 25
    ten = timing_from_pts([40 * k for k in range(10)], ms, declared=[Fraction(25)])
    assert ten.fps == 25


def test_rates_are_the_same_within_the_stated_tolerance():
    assert same_rate(29.97, 30000 / 1001) and same_rate(23.976, 24000 / 1001)
    assert same_rate(59.94, Fraction(60000, 1001)) and same_rate(25, 25.0)
    assert not same_rate(30, 30000 / 1001) and not same_rate(30, 25) and not same_rate(23.98, 24000 / 1001)


# --- vrshq track --fps -------------------------------------------------------------------------

CLIP = dict(num_frames=8, width=160, height=120, fps=25.0)


@pytest.fixture(scope="module")
def clip25(make_video, tiny_sam2_files, tmp_path_factory):
    """A 25 fps mp4, a frame-0 palette prompt for it, and a tiny SAM-2 model folder."""
    from types import SimpleNamespace

    from vrshq.masks import write_palette_png
    from vrshq.synthetic import ground_truth

    root = tmp_path_factory.mktemp("clip25")
    prompt = root / "prompt0.png"
    write_palette_png(prompt, ground_truth(SyntheticSpec(**CLIP))[0])
    config, _ = tiny_sam2_files
    return SimpleNamespace(video=make_video("mp4", **CLIP), prompt=prompt, model_dir=config.parent.parent)


def track_argv(c, out, *extra, video=None):
    return ["track", video or c.video, "--mask", c.prompt, "--frame", 0, "--out", out,
            "--model-dir", c.model_dir, *extra]


def test_track_fps_that_disagrees_with_a_video_file_is_a_one_line_error(clip25, tmp_path, capfd):
    from tests.cli_helpers import assert_one_line_error, run_cli

    out = tmp_path / "out"
    rc, _, err = run_cli(capfd, *track_argv(clip25, out, "--fps", "30"))
    assert_one_line_error(rc, err, str(clip25.video), "--fps 30", "25 fps")
    assert not out.exists()


def test_track_fps_that_agrees_with_the_file_is_accepted_and_times_the_output(clip25, tmp_path, capfd):
    import json

    from tests.cli_helpers import run_cli

    out = tmp_path / "out"
    rc, _, err = run_cli(capfd, *track_argv(clip25, out, "--fps", "25.0", "--no-progress"))
    assert rc == 0, err
    (task,) = json.loads((out / "labelstudio.json").read_text())  # one importable task
    results = task["predictions"][0]["result"]
    assert results
    for result in results:
        assert all(item["time"] == pytest.approx(item["frame"] / 25) for item in result["value"]["sequence"])


def test_track_refuses_a_variable_frame_rate_video(clip25, tmp_path, capfd):
    from tests.cli_helpers import assert_one_line_error, run_cli

    vfr = write_with_pts(tmp_path / "vfr.mp4", VFR_PTS, size=(160, 120))
    rc, _, err = run_cli(capfd, *track_argv(clip25, tmp_path / "out", video=vfr))
    assert_one_line_error(rc, err, str(vfr), "variable frame rate", "ffmpeg -i vfr.mp4")


def test_track_help_says_what_fps_does_on_a_video_file(capfd):
    from tests.cli_helpers import run_cli

    rc, out, _ = run_cli(capfd, "track", "--help")
    text = " ".join(out.split())
    assert rc == 0 and "frame folder" in text and "must agree with the file's own rate" in text


# --- the backend: /predict over HTTP (Flask's client), real videos -----------------------------

def fps_task(task_id: int, video: str, fps: float) -> dict:
    return {"id": task_id, "project": 1,
            "data": {"video": f"/data/local-files/?d={video}", "fps": fps, "prompt": "the red disc"}}


def post_predict(client, tasks, xml=None):
    from tests.backend_fixtures import TEXT_XML

    return client.post("/predict", json={"tasks": tasks, "project": "1", "label_config": xml or TEXT_XML})


@pytest.fixture(scope="module")
def rate_clips(media_root):
    """clips/rate25.mp4 (25 fps), clips/rate2997.mp4 (30000/1001 fps), clips/vfr.mp4 (variable)."""
    clips = media_root / "clips"
    write_video(SyntheticSpec(**{**CLIP, "num_objects": 1}), clips / "rate25.mp4")
    write_video(SyntheticSpec(**{**CLIP, "fps": 30000 / 1001, "num_objects": 1}), clips / "rate2997.mp4")
    write_with_pts(clips / "vfr.mp4", VFR_PTS, size=(160, 120))
    return clips


@pytest.fixture()
def no_model_work(vrshq_backend, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model ran on a task that had to be refused")

    monkeypatch.setattr(vrshq_backend.plugin, "predict", refuse)


def test_predict_with_a_task_fps_that_is_not_the_files_is_a_422_naming_both(client, rate_clips,
                                                                             no_model_work):
    from tests.backend_fixtures import next_task_id

    tid = next_task_id()
    r = post_predict(client, [fps_task(tid, "clips/rate25.mp4", 30)])
    assert r.status_code == 422, r.json
    error = r.json["error"]
    assert f"task {tid}" in error and "fps 30" in error and "25 fps" in error, error
    assert "VRSHQ_FPS_MISMATCH" in error and "\n" not in error


def test_predict_with_the_files_rate_within_the_tolerance_is_answered(client, rate_clips):
    from tests.backend_fixtures import next_task_id

    for video, fps in (("clips/rate2997.mp4", 29.97), ("clips/rate25.mp4", 25)):
        r = post_predict(client, [fps_task(next_task_id(), video, fps)])
        assert r.status_code == 200, r.json
        (track,) = [x for x in r.json["results"][0]["result"] if x["type"] == "videorectangle"]
        assert track["value"]["duration"] == pytest.approx(CLIP["num_frames"] / fps)


def test_predict_of_a_variable_frame_rate_video_is_a_422_before_model_work(client, rate_clips, no_model_work):
    from tests.backend_fixtures import next_task_id

    r = post_predict(client, [fps_task(next_task_id(), "clips/vfr.mp4", 25)])
    assert r.status_code == 422, r.json
    assert "variable frame rate" in r.json["error"] and "ffmpeg -i vfr.mp4" in r.json["error"]


def test_an_interactive_prompt_on_a_task_with_a_wrong_fps_is_a_422_before_model_work(client, rate_clips,
                                                                                   no_model_work):
    from tests.backend_fixtures import TEXT_XML, next_task_id

    typed = {"from_name": "prompt", "to_name": "video", "type": "textarea",
             "value": {"text": ["the red disc"]}}
    r = client.post("/predict", json={"tasks": [fps_task(next_task_id(), "clips/rate25.mp4", 30)],
                                      "project": "1", "label_config": TEXT_XML,
                                      "params": {"context": {"result": [typed]}}})
    assert r.status_code == 422 and "fps 30" in r.json["error"] and "25 fps" in r.json["error"], r.json


def test_the_fps_mismatch_policy_comes_from_the_environment():
    from vrshq.backend.config import BackendConfig, ConfigError

    assert BackendConfig().fps_mismatch == "refuse"
    assert BackendConfig.from_env({"VRSHQ_FPS_MISMATCH": "use-file"}).fps_mismatch == "use-file"
    with pytest.raises(ConfigError, match="VRSHQ_FPS_MISMATCH"):
        BackendConfig.from_env({"VRSHQ_FPS_MISMATCH": "guess"})


def _boxes_only(xml: str) -> str:
    """The text config without its keyframe masks: no keyframe write follows the prediction."""
    return xml[:xml.index('  <Header value="Keyframe masks')] + "</View>"


@pytest.mark.parametrize("masks", [True, False])
def test_use_file_writes_the_files_rate_into_the_task_in_label_studio(label_studio, ls_api, tiny_models,
                                                                      tmp_path, masks):
    from vrshq.backend.http.app import create_app
    from tests.backend_fixtures import TEXT_XML, make_backend

    xml = TEXT_XML if masks else _boxes_only(TEXT_XML)
    clips = label_studio.doc_root / "rates"
    clips.mkdir(parents=True, exist_ok=True)
    write_video(SyntheticSpec(**{**CLIP, "num_objects": 1}), clips / "v25.mp4")
    pid = ls_api.create_project(f"vrshq fps use-file {masks}", xml)
    ls_api.add_local_storage(pid, clips)
    (tid,) = ls_api.import_tasks(pid, [{"data": {"video": "/data/local-files/?d=rates/v25.mp4",
                                                  "fps": 30, "prompt": "the red disc"}}])
    backend = make_backend(tiny_models, label_studio.doc_root, tmp_path / "data", fps_mismatch="use-file",
                           label_studio_url=label_studio.url, api_key=label_studio.token)
    try:
        client = create_app(backend=backend).test_client()
        r = client.post("/predict", json={"tasks": [ls_api.get_task(tid)], "project": str(pid),
                                          "label_config": xml})
        assert r.status_code == 200, r.json
        (track,) = [x for x in r.json["results"][0]["result"] if x["type"] == "videorectangle"]
        assert track["value"]["duration"] == pytest.approx(CLIP["num_frames"] / 25)
        assert all(item["time"] == pytest.approx(item["frame"] / 25) for item in track["value"]["sequence"])
        data = ls_api.get_task(tid)["data"]
        assert data["fps"] == 25 and data["prompt"] == "the red disc"
        assert bool(data.get("keyframes")) == masks, data  # the keyframe write kept the new rate
        # Asked again with the task as Label Studio now holds it: the saved prediction, at 25 fps.
        again = client.post("/predict", json={"tasks": [ls_api.get_task(tid)], "project": str(pid),
                                              "label_config": xml})
        assert again.status_code == 200 and again.json["results"][0] == r.json["results"][0]
    finally:
        backend.close()


def test_use_file_cannot_rewrite_a_frame_rate_fixed_in_the_label_config(tiny_models, media_root, rate_clips,
                                                                     tmp_path):
    from vrshq.backend.http.app import create_app
    from tests.backend_fixtures import TEXT_XML, make_backend, next_task_id

    literal = TEXT_XML.replace('frameRate="$fps"', 'frameRate="30"')
    assert literal != TEXT_XML
    backend = make_backend(tiny_models, media_root, tmp_path / "data", fps_mismatch="use-file")
    try:
        r = post_predict(create_app(backend=backend).test_client(),
                         [fps_task(next_task_id(), "clips/rate25.mp4", 30)], xml=literal)
        assert r.status_code == 422, r.json
        assert "frameRate" in r.json["error"] and "25 fps" in r.json["error"], r.json
    finally:
        backend.close()
