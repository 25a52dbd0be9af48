"""The overlay video in a real Label Studio 1.23.2 and headless Chromium: it stays on the main
video's frame when seeking, stepping and playing, at 24, 25, 29.97 and 30 fps.

Each task's video burns its frame index into its picture as bits (five blocks, white = 1); the
overlay is encoded from it by ``encode_overlay`` (with a mask drawn away from the blocks), so
both pictures say which decoded frame they show. Typing Label Studio frame N into the main
video's frame counter must show decoded frame N - 1 in both, and both currentTimes must agree
within half a frame. LS's "Step backward"/"Step forward" buttons (which moved 10 frames here)
must leave both on the same frame. Playing, the two times must stay within one frame; after
pausing, within half a frame, and the pictures read back within one frame (one early run read
the two one frame apart after a pause, with both times in the same frame; not investigated).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from vrshq.backend.labelstudio.labelconfig import parse_label_config, shipped_config
from vrshq.backend.labelstudio.overlay import encode_overlay, label_color
from vrshq.backend.labelstudio.served_media import MediaStore
from vrshq.backend.labelstudio.strips import GAP, frames_to_check, object_anchors, strip_image
from vrshq.backend.tasks.state import TaskStateStore
from vrshq.masks import Track
from vrshq.plugins.base import ObjectTrack
from vrshq.video.reader import open_video
from tests.test_serve import free_port, start, stop, wait_up

pytestmark = pytest.mark.timeout(900)
SCRIPT = Path(__file__).resolve().parent / "browser" / "overlay_sync.mjs"
W, H, FRAMES = 160, 120, 30
BITS = {"y": 30, "x0": 10, "dx": 24, "n": 5}  # block k: 16x16 around (x0 + k dx, y)
RATES = {"24": (Fraction(24), 24), "25": (Fraction(25), 25), "29.97": (Fraction(30000, 1001), 29.97),
         "30": (Fraction(30), 30)}
# Typed into the main video's frame counter. Not the last frame: LS 1.23.2's counter clamps a
# typed number to frames - 1 (typing 30 of 30 shows 29: seen in this test's first run).
SEEK = [1, 2, 3, 15, 16, 28, 29]


def _write_bits_video(path: Path, rate: Fraction) -> None:
    """A CFR H.264 MP4 whose frame i shows i in binary blocks (and a grey ramp elsewhere)."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=rate)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.options = {"crf": "12", "preset": "veryfast"}
        for i in range(FRAMES):
            img = np.full((H, W, 3), 40, np.uint8)
            img[:, :, 2] = np.linspace(40, 120, W, dtype=np.uint8)[None, :]
            for k in range(BITS["n"]):
                if i >> k & 1:
                    x = BITS["x0"] + k * BITS["dx"]
                    img[BITS["y"] - 8:BITS["y"] + 8, x - 8:x + 8] = 255
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def test_the_overlay_follows_the_video_in_the_editor(label_studio, ls_api, tmp_path):
    if not shutil.which("node") or not (SCRIPT.parent / "node_modules" / "playwright-core").is_dir():
        pytest.fail("node and playwright-core are needed: run scripts/setup_labelstudio.sh --with-browser")
    clips = label_studio.doc_root / "overlay_sync"
    clips.mkdir(parents=True, exist_ok=True)
    mask = np.zeros((FRAMES, H, W), bool)
    mask[:, 70:110, 40:120] = True  # below the bit blocks
    track = Track(1, H, W)
    for f in range(FRAMES):
        track.set(f, mask[f])
    objs = [ObjectTrack(1, "Car", track, 0, mask[0], 1.0)]
    tasks = []
    for name, (rate, fps) in RATES.items():
        src = clips / f"v{name}.mp4"
        _write_bits_video(src, rate)
        with open_video(src, fps=fps) as video:
            encode_overlay(video, objs, [(60, 180, 75)], fps, clips / f"o{name}.mp4")
        tasks.append({"data": {"video": f"/data/local-files/?d=overlay_sync/v{name}.mp4", "fps": fps,
                               "prompt": "the car",
                               "overlay": f"/data/local-files/?d=overlay_sync/o{name}.mp4"}})
    pid = ls_api.create_project("vrshq overlay sync", shipped_config("video_text_prompt_overlay"))
    ls_api.add_local_storage(pid, clips)
    ids = ls_api.import_tasks(pid, tasks)

    seen = _run_sync(label_studio, pid, ids, "overlay_sync/v", "overlay_sync/o")
    (Path(label_studio.doc_root) / "overlay_sync" / "seen.json").write_text(json.dumps(seen, indent=1))
    for tid, (name, (rate, _)) in zip(ids, RATES.items()):
        _check_in_step(seen[str(tid)], name, rate)


def _objects() -> list[ObjectTrack]:
    """One object whose mask sits below the bit blocks on every frame."""
    mask = np.zeros((FRAMES, H, W), bool)
    mask[:, 70:110, 40:120] = True
    track = Track(1, H, W)
    for f in range(FRAMES):
        track.set(f, mask[f])
    return [ObjectTrack(1, "Car", track, 0, mask[0], 1.0)]


def _run_sync(label_studio, pid: int, ids: list[int], main: str, overlay: str,
              allow_origins: list[str] | None = None) -> dict:
    """Run overlay_sync.mjs on the tasks; what it saw, per task id."""
    args = {"url": label_studio.url, "email": label_studio.username, "password": label_studio.password,
            "project": pid, "tasks": ids, "frames": SEEK, "bits": BITS, "main": main, "overlay": overlay,
            "allow_origins": allow_origins or [], "timeout_ms": 120000}
    proc = subprocess.run(["node", str(SCRIPT), json.dumps(args)], cwd=str(SCRIPT.parent),
                          capture_output=True, text=True, timeout=600, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    out = json.loads(lines[-1])
    return {**out["tasks"], "media": out["media"]}


def _check_in_step(got: dict, name: str, rate: Fraction) -> None:
    """Both videos on the same frame (and LS frame N on decoded frame N - 1), per sample."""
    period = 1 / float(rate)
    assert got["videos"] == 2, name
    for s in got["samples"]:
        if s.get("skipped"):
            continue
        main, over = s["main"], s["overlay"]
        where = f"{name} fps, {s['how']} {s.get('frame')}: {s}"
        if s["how"] == "playing":
            assert abs(main["t"] - over["t"]) < period, where
            continue
        assert abs(main["t"] - over["t"]) < period / 2, where
        if s["how"] == "paused":
            assert abs(main["bits"] - over["bits"]) <= 1, where
            continue
        assert main["bits"] == over["bits"], where  # the same decoded frame in both
        if s["how"] == "seek":
            assert main["bits"] == s["frame"] - 1, where  # LS frame N is decoded frame N - 1


def test_an_overlay_served_by_the_backend_plays_and_seeks_in_the_editor(label_studio, ls_api, tiny_models,
                                                                        tmp_path):
    """A remote video's overlay, from `vrshq serve`'s /media route (another origin than Label
    Studio's, under LS 1.23.2's default content security policy), in step like a local one; and
    a task the backend predicted (its video downloaded from Label Studio: no media root here, so
    its media are served too) shows its thumbnail strip, the frames strips.py picks."""
    if not shutil.which("node") or not (SCRIPT.parent / "node_modules" / "playwright-core").is_dir():
        pytest.fail("node and playwright-core are needed: run scripts/setup_labelstudio.sh --with-browser")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = tmp_path / "model-dir"
    env = {**os.environ, "VRSHQ_MODEL": str(tiny_models), "MODEL_DIR": str(data), "VRSHQ_DEVICE": "cpu",
           "OMP_NUM_THREADS": "1", "VRSHQ_MEDIA_URL": url, "VRSHQ_STRIP_FRAMES": "4",
           "LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": label_studio.token}
    for name in ("LOCAL_FILES_DOCUMENT_ROOT", "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", "VRSHQ_MEDIA_ROOTS"):
        env.pop(name, None)
    clips = label_studio.doc_root / "overlay_served"
    clips.mkdir(parents=True, exist_ok=True)
    rate, fps = RATES["29.97"]
    _write_bits_video(clips / "v.mp4", rate)
    with open_video(clips / "v.mp4", fps=fps) as video:
        encode_overlay(video, _objects(), [(60, 180, 75)], fps, tmp_path / "o.mp4")
    # Stored as the backend stores a remote video's overlay (the same folder the server reads).
    served = MediaStore(data, url).put("1", 1, "overlay", tmp_path / "o.mp4", ".mp4")
    proc = start(["--port", str(port), "--threads", "2"], env, tmp_path / "serve.log")
    try:
        wait_up(url, proc, tmp_path / "serve.log")
        # The real server stack (gunicorn, vrshq's request reader) answers a Range request.
        r = requests.get(served, headers={"Range": "bytes=100-299"}, timeout=30)
        whole = (tmp_path / "o.mp4").read_bytes()
        assert (r.status_code, r.headers["Content-Type"], r.content) == (206, "video/mp4", whole[100:300])
        assert r.headers["Content-Range"] == f"bytes 100-299/{len(whole)}"
        pid = ls_api.create_project("vrshq served overlay", shipped_config("video_text_prompt_overlay"))
        ls_api.add_local_storage(pid, clips)
        video_url = "/data/local-files/?d=overlay_served/v.mp4"
        ids = ls_api.import_tasks(pid, [
            {"data": {"video": video_url, "fps": fps, "prompt": "the car", "overlay": served}},
            {"data": {"video": video_url, "fps": fps, "prompt": "the car", "overlay": ""}}])
        # Label Studio's request for the second task, sent as it sends it (synchronously here).
        r = requests.post(url + "/predict", timeout=600, json={
            "tasks": [{"id": ids[1], "project": pid, "data": ls_api.get_task(ids[1])["data"]}],
            "project": str(pid), "label_config": shipped_config("video_text_prompt_overlay")})
        assert r.status_code == 200 and r.json()["results"][0], r.text[:2000]
        predicted = ls_api.get_task(ids[1])["data"]
        seen = _run_sync(label_studio, pid, ids, "overlay_served/v", "/media/1-1/overlay-", [url])
        strip = requests.get(predicted["strips"][0], timeout=30)
    finally:
        stop(proc)
    assert any(s["how"] == "seek" for s in seen[str(ids[0])]["samples"])
    _check_in_step(seen[str(ids[0])], "29.97 (served)", rate)

    # The predicted task: its strip (one object) shown from the backend's /media, loaded, and
    # showing the frames strips.py picks from the saved track (re-drawn here from the video).
    assert predicted["overlay"].startswith(f"{url}/media/{pid}-{ids[1]}/overlay-"), predicted
    assert len(predicted["strips"]) == 1 and predicted["strips"][0].startswith(f"{url}/media/"), predicted
    # The browser fetched it from the backend; LS shows it as a blob: URL, the strips' <Image>
    # first (the config's order), then the keyframes'.
    assert {"url": predicted["strips"][0], "status": 200} in seen["media"], seen["media"]
    shown = seen[str(ids[1])]["images"]
    assert len(shown) == 2 and shown[0]["width"] > 0, shown
    obj = TaskStateStore(data).load(str(pid), ids[1]).objects[0]
    frames = frames_to_check(obj.track, FRAMES, object_anchors(obj), 4)
    assert len(frames) == 4
    color = label_color(obj.label, obj.obj_id,
                        parse_label_config(shipped_config("video_text_prompt_overlay")).label_colors)
    with Image.open(io.BytesIO(strip.content)) as im:
        got = np.asarray(im.convert("RGB"), dtype=np.float32)
    with open_video(clips / "v.mp4", fps=fps) as video:
        want = strip_image(video, obj, frames, color)
        # Each thumbnail is its frame: of every frame's own thumbnail (its bits, its F<n>), the
        # nearest to the one shown is the frame strips.py picked (JPEG: nearest, not equal).
        singles = [strip_image(video, obj, [f], color).astype(np.float32) for f in range(FRAMES)]
    assert (shown[0]["height"], shown[0]["width"]) == want.shape[:2]  # 4 thumbnails and 3 gaps
    assert got.shape == want.shape and np.abs(got - want).mean() < 4, np.abs(got - want).mean()
    tw = singles[0].shape[1]
    for k, f in enumerate(frames):
        thumb = got[:, k * (tw + GAP):k * (tw + GAP) + tw]
        assert int(np.argmin([np.abs(thumb - one).mean() for one in singles])) == f, (k, f)
