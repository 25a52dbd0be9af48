"""A sam3 correction with and without the prediction's stored tracker features (issue 16).

    python -m bench.sam3_fix_bench [--frames 300] [--size 320x240] [--repeat 3] [--threads 1]
                                   [--device auto] [--precision auto]

In one process, on the tiny random SAM 3 (``vrshq tiny-models``' sam3/) and an ffmpeg-encoded
synthetic video: ``Sam3Plugin.predict`` of one concept inside a writing feature slot (as the
backend's ``predict_task``; the concept pass records the tracker features), then the same fix of
its first object on a non-keyframe frame, ``--repeat`` times each way, alternating:

* ``uncached``: no slot: SAM 3's tracker runs its vision encoder on every frame (the behaviour
  before stored features);
* ``stored``: a reading slot on the prediction's folder (as the backend's ``correct_task``);
* ``filling``: a reading slot on an empty folder (a task predicted before features were kept):
  the fix records what it encodes and writes the folder (``keep_filled``), timed with the write.

Prints the median seconds of each, ``stored_ratio`` (stored / uncached), ``filling_ratio``
(filling / uncached: the cost of recording), each fix over the prediction, the encoder runs and
encoder seconds per fix (forward hooks on the real module), the stored folder's MiB, and
``recording_predict_ratio``: the prediction with its recording over the same prediction without
a slot (run second, so it has the warmer caches); writes bench/results/sam3_fix.json. Exit 1
unless all fixes give identical masks and the stored fix runs the encoder on no frame.

At tiny size the vision encoder is a small part of a correction (most of it is the per-frame
memory attention and decoding), so the ratio here is far from what the released model (a ViT at
1008 px, encoder-dominated) should gain; run it on a GPU with the release for that number.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import engine_config, print_table, sync, write_json
from vrshq.engine.persist import FeatureSlot, folder_bytes, use_slot

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tiny model is local; never try the Hub


class EncoderClock:
    """Runs and seconds of the tracker's vision encoder (forward hooks on the real module)."""

    def __init__(self, module: torch.nn.Module, device: torch.device) -> None:
        self.runs, self.seconds, self._t0, self.device = 0, 0.0, 0.0, device
        module.register_forward_pre_hook(self._start)
        module.register_forward_hook(self._stop)

    def _start(self, *_) -> None:
        sync(self.device)
        self._t0 = time.perf_counter()

    def _stop(self, *_) -> None:
        sync(self.device)
        self.runs += 1
        self.seconds += time.perf_counter() - self._t0

    def take(self) -> tuple[int, float]:
        """Runs and seconds since the last take."""
        out = (self.runs, self.seconds)
        self.runs, self.seconds = 0, 0.0
        return out


def digest(tracks) -> str:
    """SHA-256 over every object's frames and packed masks."""
    h = hashlib.sha256()
    for t in tracks:
        for f in t.track.frames():
            h.update(f"{t.obj_id}:{f}:".encode())
            h.update(np.packbits(t.track.mask(f)).tobytes())
    return h.hexdigest()


def fix_runs(plugin, video, tracks, fix, clock: EncoderClock, features: Path, work: Path,
             repeat: int) -> dict[str, list[dict]]:
    """The same fix ``repeat`` times each way, alternating; seconds, encoder use, mask digest."""
    runs: dict[str, list[dict]] = {"uncached": [], "stored": [], "filling": []}
    for n in range(repeat):
        for kind in runs:
            # filling: a task with nothing stored; the fix records and writes its folder
            root = features if kind != "filling" else work / f"empty{n}"
            read = FeatureSlot(root, "1-1", {"video": "clip"}, "read", 1 << 40)
            clock.take()
            start = time.perf_counter()
            with use_slot(read if kind != "uncached" else None):
                out = plugin.correct(video, tracks, fix)
                if kind == "filling" and not read.keep_filled():
                    raise SystemExit("the filling fix kept no features")
            seconds = time.perf_counter() - start
            encoder_runs, encoder_s = clock.take()
            runs[kind].append({"seconds": seconds, "encoder_runs": encoder_runs,
                               "encoder_seconds": encoder_s, "digest": digest(out)})
    return runs


def bench(frames: int, width: int, height: int, repeat: int, device: str, precision: str,
          work: Path) -> dict:
    """Predict once, then fix ``repeat`` times each way; timings, ratios and checks."""
    from vrshq.model.sam3_tiny import write_tiny_sam3
    from vrshq.plugins.base import Correction, ObjectPrompt, PluginConfig
    from vrshq.plugins.sam3_plugin import Sam3Plugin
    from vrshq.synthetic import SyntheticSpec, write_video
    from vrshq.video.reader import open_video

    write_tiny_sam3(work / "models" / "sam3", seed=0)
    spec = SyntheticSpec(num_frames=frames, width=width, height=height, fps=25.0, num_objects=2, seed=1)
    path = write_video(spec, work / "clip.mp4")
    plugin = Sam3Plugin()
    plugin.load(PluginConfig(model_dir=str(work / "models"), device=device, precision=precision))
    dev = engine_config(device, precision).resolved_device()
    features = work / "features"
    with open_video(path) as video:
        slot = FeatureSlot(features, "1-1", {"video": "clip"}, "write", 1 << 40)
        start = time.perf_counter()
        with use_slot(slot):
            tracks = plugin.predict(video, [ObjectPrompt(obj_id=1, text="cat", label="cat")])
            slot.commit()
        predict_s = time.perf_counter() - start
        start = time.perf_counter()
        plugin.predict(video, [ObjectPrompt(obj_id=1, text="cat", label="cat")])  # no slot
        plain_predict_s = time.perf_counter() - start
        if not tracks:
            raise SystemExit("the tiny model found no instance: nothing to correct")
        first = tracks[0]
        mask = np.zeros((height, width), bool)
        mask[height // 4:height // 2, width // 4:width // 2] = True
        frame = frames // 2 if first.keyframe != frames // 2 else frames // 2 + 1
        fix = [Correction(first.obj_id, frame, mask)]
        clock = EncoderClock(plugin._tracker()[0].vision_encoder, dev)
        runs = fix_runs(plugin, video, tracks, fix, clock, features, work, repeat)
    med = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
    return {
        "frames": frames, "size": f"{width}x{height}", "device": str(dev), "repeat": repeat,
        "predict_s": predict_s, "plain_predict_s": plain_predict_s,
        "recording_predict_ratio": predict_s / plain_predict_s,
        "fix_uncached_s": med["uncached"], "fix_stored_s": med["stored"],
        "fix_filling_s": med["filling"], "stored_ratio": med["stored"] / med["uncached"],
        "filling_ratio": med["filling"] / med["uncached"],
        "uncached_fix_over_predict": med["uncached"] / predict_s,
        "stored_fix_over_predict": med["stored"] / predict_s,
        "encoder_runs_uncached": runs["uncached"][0]["encoder_runs"],
        "encoder_runs_stored": max(r["encoder_runs"] for r in runs["stored"]),
        "encoder_runs_filling": runs["filling"][0]["encoder_runs"],
        "encoder_s_uncached": statistics.median(r["encoder_seconds"] for r in runs["uncached"]),
        "stored_mib": folder_bytes(features / "1-1") / 2**20,
        "identical_masks": len({r["digest"] for v in runs.values() for r in v}) == 1,
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", default="320x240", help="video frame size WxH")
    parser.add_argument("--repeat", type=int, default=3, help="fixes each way (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (shared machines: 1)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "official"))
    args = parser.parse_args(argv)
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size {args.size!r}: expected WxH, e.g. 320x240")
    if args.frames < 2 or args.repeat < 1 or args.threads < 1:
        parser.error("--frames must be >= 2, --repeat and --threads >= 1")
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="vrshq-sam3-fix-bench-"))
    atexit.register(shutil.rmtree, work, True)
    result = bench(args.frames, width, height, args.repeat, args.device, args.precision, work)
    cols = ("frames", "size", "device", "predict_s", "recording_predict_ratio", "fix_uncached_s",
            "fix_stored_s", "stored_ratio", "fix_filling_s", "filling_ratio",
            "uncached_fix_over_predict", "stored_fix_over_predict", "encoder_runs_uncached",
            "encoder_runs_stored", "encoder_runs_filling", "encoder_s_uncached", "stored_mib",
            "identical_masks")
    print_table("sam3 fix: stored tracker features vs the encoder run again (tiny model)",
                [{c: result[c] for c in cols}])
    print(f"\nwrote {write_json('sam3_fix', result)}")
    ok = result["identical_masks"] and result["encoder_runs_stored"] == 0
    if not ok:
        print("FAILED: the stored-feature fix differs from the uncached one or ran the encoder")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
