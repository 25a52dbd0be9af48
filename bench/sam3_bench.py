"""SAM 3 plugin benchmark (issue 16): peak RSS and frames per second vs transformers' loop.

    python -m bench.sam3_bench [--lengths 200,2000] [--size 64x48] [--concept cat] [--threads 1]

Each run is a fresh process on the tiny random SAM 3 (``vrshq tiny-models``' sam3/) and the same
ffmpeg-encoded synthetic video:

* ``plugin``: ``Sam3Plugin.predict`` (frames decoded on demand, spent tracker outputs dropped,
  masks kept as RLE tracks);
* ``reference``: transformers' documented ``Sam3VideoModel`` loop with its default inference
  state: the whole video decoded and given to ``init_video_session``, then
  ``propagate_in_video_iterator`` + ``postprocess_outputs``. Its decode and preprocessing count
  to its time, as the plugin's decode counts to the plugin's.

Both sides digest every (frame, instance, mask) they produce; equal digests mean identical masks.
Prints peak RSS per length, its growth from the shortest length, plugin/reference ratios of peak
RSS and of frames per second, and writes bench/results/sam3.json.

There is no ``--full-size``: the released SAM 3 (about 850 M parameters at 1008 px) with random
weights takes seconds per frame on a CPU, far too long for 2,000 frames here; the memory bound
does not depend on the model size (the kept window is ``num_maskmem`` / object-pointer frames).
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.common import peak_rss_mib, print_table, run_child, write_json

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tiny model is local; never try the Hub


def _digest(items: dict[tuple[int, int], bytes]) -> str:
    """One SHA-256 over (frame, SAM 3 instance id, packed mask) in sorted order."""
    h = hashlib.sha256()
    for key in sorted(items):
        h.update(f"{key[0]}:{key[1]}:".encode())
        h.update(items[key])
    return h.hexdigest()


def _mask_key(mask) -> bytes:
    """A small stand-in for a mask in the digest (its SHA-256), so long runs keep little."""
    import numpy as np

    return hashlib.sha256(np.packbits(np.asarray(mask, dtype=bool)).tobytes()).digest()


def run_plugin(model_dir: Path, video_path: Path, concept: str) -> dict:
    """Sam3Plugin.predict on the video; the digest of its masks."""
    from vrshq.plugins.base import ObjectPrompt, PluginConfig
    from vrshq.plugins.sam3_plugin import Sam3Plugin
    from vrshq.video.reader import open_video

    plugin = Sam3Plugin()
    plugin.load(PluginConfig(model_dir=str(model_dir), device="cpu"))
    loaded = peak_rss_mib()
    start = time.perf_counter()
    with open_video(video_path) as video:
        tracks = plugin.predict(video, [ObjectPrompt(obj_id=1, text=concept, label=concept)])
        frames = len(video)
    seconds = time.perf_counter() - start
    items = {(f, t.details["sam3_instance"]): _mask_key(t.track.mask(f))
             for t in tracks for f in t.track.frames()}
    return {"frames": frames, "seconds": seconds, "rss_after_model_load_mib": loaded,
            "instances": len(tracks), "masks": len(items), "masks_sha256": _digest(items)}


def run_reference(model_dir: Path, video_path: Path, concept: str) -> dict:
    """transformers' documented Sam3VideoModel loop, the whole video in its inference state."""
    from transformers import Sam3VideoModel, Sam3VideoProcessor

    from vrshq.plugins import sam3_kernels
    from vrshq.video.reader import open_video

    sam3_kernels.install()  # the same NMS and hole filling as the plugin (no Hub kernel here)
    model = Sam3VideoModel.from_pretrained(model_dir / "sam3").eval()
    processor = Sam3VideoProcessor.from_pretrained(model_dir / "sam3")
    loaded = peak_rss_mib()
    start = time.perf_counter()
    with open_video(video_path) as reader:
        frames = [reader.frame(i) for i in range(len(reader))]
    session = processor.init_video_session(video=frames, inference_device="cpu",
                                           processing_device="cpu", video_storage_device="cpu")
    session = processor.add_text_prompt(inference_session=session, text=concept)
    items = {}
    with torch.no_grad():
        for out in model.propagate_in_video_iterator(inference_session=session):
            processed = processor.postprocess_outputs(session, out)
            for i, m in zip(processed["object_ids"].tolist(), processed["masks"]):
                items[(int(out.frame_idx), int(i))] = _mask_key(m.numpy())
    seconds = time.perf_counter() - start
    return {"frames": len(frames), "seconds": seconds, "rss_after_model_load_mib": loaded,
            "instances": len({k[1] for k in items}), "masks": len(items),
            "masks_sha256": _digest(items)}


def child(kind: str, model_dir: str, video: str, concept: str, threads: str) -> dict:
    """Runs in a fresh process: one kind on one video; its peak RSS."""
    torch.set_num_threads(int(threads))
    torch.manual_seed(0)
    run = run_plugin if kind == "plugin" else run_reference
    result = run(Path(model_dir), Path(video), concept)
    return {"kind": kind, **result, "peak_rss_mib": peak_rss_mib(),
            "fps": result["frames"] / result["seconds"]}


def bench(lengths: list[int], width: int, height: int, concept: str, work: Path,
          threads: int = 1) -> dict:
    """Every kind at every length, each in its own process; rows and plugin/reference ratios."""
    from vrshq.model.sam3_tiny import write_tiny_sam3
    from vrshq.synthetic import SyntheticSpec, write_video

    write_tiny_sam3(work / "models" / "sam3", seed=0)
    rows, ratios = [], []
    for frames in lengths:
        spec = SyntheticSpec(num_frames=frames, width=width, height=height, fps=25.0,
                             num_objects=2, seed=1)
        video = write_video(spec, work / f"clip{frames}.mp4")
        pair = {kind: run_child("bench.sam3_bench", "--child", kind, str(work / "models"),
                                str(video), concept, str(threads))
                for kind in ("plugin", "reference")}
        rows += pair.values()
        ours, ref = pair["plugin"], pair["reference"]
        ratios.append({"frames": frames, "peak_rss_plugin_mib": ours["peak_rss_mib"],
                       "peak_rss_reference_mib": ref["peak_rss_mib"],
                       "rss_ratio": ours["peak_rss_mib"] / ref["peak_rss_mib"],
                       "fps_plugin": ours["fps"], "fps_reference": ref["fps"],
                       "fps_ratio": ours["fps"] / ref["fps"],
                       "identical_masks": ours["masks_sha256"] == ref["masks_sha256"],
                       "masks": ref["masks"]})
    for kind in ("plugin", "reference"):
        runs = [r for r in rows if r["kind"] == kind]
        for r in runs:
            r[f"rss_growth_vs_{lengths[0]}"] = r["peak_rss_mib"] / runs[0]["peak_rss_mib"]
    return {"rows": rows, "ratios": ratios}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="200,2000", help="comma-separated video lengths")
    parser.add_argument("--size", default="64x48", help="video frame size WxH")
    parser.add_argument("--concept", default="cat")
    # one thread by default: on a shared machine more threads than free cores spin and the
    # timings swing tenfold; both sides run with the same count
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each run")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0
    try:
        lengths = [int(v) for v in args.lengths.split(",")]
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--lengths {args.lengths!r} / --size {args.size!r}: expected 200,2000 / 64x48")
    if not lengths or min(lengths) < 1:
        parser.error("--lengths: every length must be >= 1")
    work = Path(tempfile.mkdtemp(prefix="vrshq-sam3-bench-"))
    atexit.register(shutil.rmtree, work, True)
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    results = bench(lengths, width, height, args.concept, work, args.threads)
    cols = ("kind", "frames", "seconds", "fps", "peak_rss_mib", "rss_after_model_load_mib",
            f"rss_growth_vs_{lengths[0]}", "instances", "masks")
    print_table(f"SAM 3 tiny model, {width}x{height} video, concept {args.concept!r}",
                [{c: r[c] for c in cols} for r in results["rows"]])
    print_table("plugin / reference (peak RSS and frames per second)", results["ratios"])
    payload = {"size": f"{width}x{height}", "threads": args.threads, **results}
    print(f"\nwrote {write_json('sam3', payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
