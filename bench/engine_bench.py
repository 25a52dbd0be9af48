"""Engine benchmarks (issue 2 §7): parity and speed vs sam2's predictor, corrections, memory.

    python -m bench.engine_bench [--frames 60] [--preset hiera-t-256] [--size 320x240]
    python -m bench.engine_bench --device cuda --precision official --preset hiera-l \
        --size 1280x720 --parts reference,correction      # scripts/gpu_check.sh on a GPU

1. engine vs ``SAM2VideoPredictor`` on one mp4 (the reference dumps it to a JPEG folder first,
   its only input, and that cost is counted to it): wall-time ratio and mask agreement;
2. a correction's re-propagation vs a from-scratch run with the same prompts: wall-time ratio,
   mask agreement, image-encoder calls;
3. peak RSS at 200 and 2,000 frames (tiny model), engine (feature budget smaller than the long
   video's features) vs reference, each in a fresh process.
Part 1 runs the engine without hole filling (``NO_FILL``): sam2's predictor cannot fill without
its CUDA extension. Parts 2 and 3 run the engine as shipped (filling on, fill_hole_area=8).
``--device`` and ``--precision`` (``official``: the release's bf16 weights and arithmetic;
``fp32``) apply to parts 1 and 2: the model is cast to the plan and the reference runs the same
cast model; each of them also reports the peak GPU memory on CUDA.
Prints tables and writes bench/results/engine.json.
"""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bench import common
from vrshq.engine import EngineConfig, TrackingSession, apply_precision, build_model
from vrshq.engine.tiny import write_tiny_sam2
from vrshq.synthetic import SyntheticSpec, ground_truth, write_video
from vrshq.video.reader import open_video



def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def _engine_masks(session: TrackingSession) -> dict[int, np.ndarray]:
    return {r.frame_idx: r.objects[1].mask() for r in session.propagate()}


def _reference_masks(predictor, frame_dir: str, prompts) -> dict[int, np.ndarray]:
    out = {}
    state = predictor.init_state(frame_dir)
    for frame_idx, mask in prompts:
        predictor.add_new_mask(state, frame_idx, 1, mask)
    for f, _, m in predictor.propagate_in_video(state):
        out[f] = (m[0, 0] > 0).cpu().numpy()
    for f, _, m in predictor.propagate_in_video(state, reverse=True):
        out.setdefault(f, (m[0, 0] > 0).cpu().numpy())
    return out


def _dump_jpegs(video: Path, out_dir: Path) -> None:
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    with open_video(video) as reader:
        for i, frame in reader.iter_frames():
            Image.fromarray(frame).save(out_dir / f"{i:05d}.jpg", quality=95)


def bench_vs_reference(model, video: Path, gt: np.ndarray, work: Path,
                       config: EngineConfig = common.NO_FILL) -> dict:
    """Engine vs sam2's predictor on the same video and prompt (middle frame, both directions).

    ``config`` is the engine's (device, precision; hole filling off, see bench.common.NO_FILL); the
    reference runs the same model, cast to the same precision plan.
    """
    k = len(gt) // 2
    prompt = gt[k] == 1
    t: dict[str, float] = {}
    device = config.resolved_device()
    common.reset_gpu_peak(device)
    with common.timed(t, "reference"):
        _dump_jpegs(video, work / "jpeg")
        ref = _reference_masks(model, str(work / "jpeg"), [(k, prompt)])
        common.sync(device)
    ref_peak = common.gpu_peak_mib(device)
    common.reset_gpu_peak(device)
    with common.timed(t, "engine"):
        with TrackingSession(model, open_video(video), config=config) as session:
            session.add_mask(1, k, prompt)
            ours = _engine_masks(session)
            calls = session.features.stats.encoder_calls
        common.sync(device)
    engine_peak = common.gpu_peak_mib(device)
    # Exactness on identical frames: the engine on the reference's own JPEG folder.
    with TrackingSession(model, open_video(work / "jpeg"), config=config) as session:
        session.add_mask(1, k, prompt)
        same_input = _engine_masks(session)
    return {
        "frames": len(gt),
        "engine_s": t["engine"], "reference_s": t["reference"],
        "engine_gpu_peak_mib": engine_peak, "reference_gpu_peak_mib": ref_peak,
        "time_ratio": t["engine"] / t["reference"],
        "mean_iou_vs_reference": float(np.mean([_iou(ours[f], ref[f]) for f in ref])),
        "min_iou_same_frames": float(min(_iou(same_input[f], ref[f]) for f in ref)),
        "engine_encoder_calls": calls,
    }


def bench_correction(model, video: Path, gt: np.ndarray, budget_mib: int | None = None,
                     base: EngineConfig | None = None) -> dict:
    """Re-propagation after a correction vs a from-scratch run with the same two prompts.

    With ``budget_mib`` the feature budget is smaller than the video's features (on CUDA both
    the GPU tier and the CPU tier behind it), so the correction reads spilled features back
    from the disk cache. ``base`` sets the device and precision (default: EngineConfig()).
    """
    a, k = 2, (2 * len(gt)) // 3
    prompts = [(a, gt[a] == 1), (k, gt[k] == 1)]
    base = base or EngineConfig()
    config = base if budget_mib is None else replace(
        base, feature_budget_bytes=budget_mib * common.MiB, cpu_feature_budget_bytes=budget_mib * common.MiB,
        state_budget_bytes=budget_mib * common.MiB // 4)
    device = config.resolved_device()
    t: dict[str, float] = {}
    common.reset_gpu_peak(device)
    with TrackingSession(model, open_video(video), config=config) as session:
        session.add_mask(1, *prompts[0])
        _engine_masks(session)
        calls = session.features.stats.encoder_calls
        with common.timed(t, "correction"):
            session.add_mask(1, *prompts[1])
            corrected = _engine_masks(session)
            common.sync(device)
        correction_calls = session.features.stats.encoder_calls - calls
        spilled = session.features.store.spilled_bytes
    with common.timed(t, "scratch"):
        with TrackingSession(model, open_video(video), config=config) as session:
            for p in prompts:
                session.add_mask(1, *p)
            scratch = _engine_masks(session)
        common.sync(device)
    return {
        "frames": len(gt),
        "feature_budget_mib": budget_mib if budget_mib is not None else "default",
        "gpu_peak_mib": common.gpu_peak_mib(device),
        "features_spilled_mib": spilled / common.MiB,
        "correction_s": t["correction"], "scratch_s": t["scratch"],
        "time_ratio": t["correction"] / t["scratch"],
        "identical_masks": all(np.array_equal(corrected[f], scratch[f]) for f in scratch),
        "encoder_calls_in_correction": correction_calls,
    }


def rss_child(kind: str, frames: int, config: str, checkpoint: str, budget_mib: int) -> dict:
    """Runs in a fresh process: track one object through a ``frames``-long video, report peak RSS."""
    work = Path(tempfile.mkdtemp(prefix="vrshq-rss-"))
    atexit.register(shutil.rmtree, work, True)
    spec = SyntheticSpec(num_frames=frames, width=256, height=192, fps=25.0, num_objects=1, seed=1)
    video = write_video(spec, work / "clip.mp4")
    first = ground_truth(SyntheticSpec(num_frames=1, width=256, height=192, num_objects=1, seed=1))[0] == 1
    model = build_model(config, checkpoint, predictor=(kind == "reference"))
    base = common.peak_rss_mib()
    start = time.perf_counter()
    if kind == "reference":
        _dump_jpegs(video, work / "jpeg")
        state = model.init_state(str(work / "jpeg"))
        model.add_new_mask(state, 0, 1, first)
        for _ in model.propagate_in_video(state):
            pass
    else:
        # Host memory is what this part measures: always on the CPU, whatever else is there.
        config_ = EngineConfig(device="cpu", feature_budget_bytes=budget_mib * common.MiB,
                               state_budget_bytes=budget_mib * common.MiB // 4)
        with TrackingSession(model, open_video(video), config=config_) as session:
            session.add_mask(1, 0, first)
            for _ in session.propagate("forward"):
                pass
    return {"kind": kind, "frames": frames, "peak_rss_mib": common.peak_rss_mib(),
            "rss_after_model_load_mib": base, "seconds": time.perf_counter() - start}


def bench_rss(config: Path, checkpoint: Path, budget_mib: int, lengths=(200, 2000)) -> list[dict]:
    """Peak RSS per video length, each run in a fresh process."""
    rows = []
    for kind in ("engine", "reference"):
        for frames in lengths:
            rows.append(common.run_child("bench.engine_bench", "--rss-child", kind, str(frames),
                                         str(config), str(checkpoint), str(budget_mib)))
    for kind in ("engine", "reference"):
        runs = [r for r in rows if r["kind"] == kind]
        for r in runs:
            r[f"ratio_vs_{lengths[0]}"] = r["peak_rss_mib"] / runs[0]["peak_rss_mib"]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--preset", default="hiera-t-256",
                        help="a random SAM-2 of vrshq.engine.tiny (tiny, hiera-t-128, hiera-t-256, "
                             "hiera-l: the release's 2.0 hiera-L at 1024 px)")
    parser.add_argument("--size", default="320x240", help="video frame size WxH")
    parser.add_argument("--device", default="auto", help="parts 1-2: auto, cpu, cuda, cuda:N")
    parser.add_argument("--precision", choices=common.PRECISIONS, default="auto",
                        help="parts 1-2: official (the release's bf16 weights), fp32, or auto "
                             "(official on CUDA, fp32 on the CPU)")
    parser.add_argument("--rss-budget-mib", type=int, default=16)
    parser.add_argument("--parts", default="reference,correction,rss",
                        help="comma-separated subset of reference,correction,rss")
    parser.add_argument("--rss-child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        kind, frames, config, checkpoint, budget = args.rss_child
        print(json.dumps(rss_child(kind, int(frames), config, checkpoint, int(budget))))
        return 0
    torch.manual_seed(0)
    width, height = (int(v) for v in args.size.lower().split("x"))
    base = common.engine_config(args.device, args.precision)
    device = base.resolved_device()
    work = Path(tempfile.mkdtemp(prefix="vrshq-bench-"))
    atexit.register(shutil.rmtree, work, True)  # models and videos: hundreds of MB per run
    config, checkpoint = write_tiny_sam2(work / "sam2", preset=args.preset)
    model = apply_precision(build_model(config, checkpoint, predictor=True), base)
    spec = SyntheticSpec(num_frames=args.frames, width=width, height=height, fps=25.0,
                         num_objects=2, seed=2)
    video = write_video(spec, work / "clip.mp4")
    gt = ground_truth(spec)
    parts = set(args.parts.split(","))
    results: dict = {"preset": args.preset, "size": f"{width}x{height}", "device": str(device),
                     "precision": args.precision, "model_size": int(model.image_size)}
    if "reference" in parts:
        results["vs_reference"] = bench_vs_reference(model, video, gt, work,
                                                     replace(base, fill_hole_area=0))
        common.print_table(f"1. engine vs SAM2VideoPredictor ({args.preset}, {args.frames} frames of "
                           f"{width}x{height}, {device}, {args.precision})", [results["vs_reference"]])
    if "correction" in parts:
        results["correction"] = [bench_correction(model, video, gt, base=base),
                                 bench_correction(model, video, gt, args.rss_budget_mib, base)]
        common.print_table("2. correction re-propagation vs from scratch", results["correction"])
    if "rss" in parts:
        tiny_config, tiny_ckpt = write_tiny_sam2(work / "tiny", preset="tiny")
        results["rss"] = bench_rss(tiny_config, tiny_ckpt, args.rss_budget_mib)
        common.print_table(f"3. peak RSS (tiny model, engine feature budget {args.rss_budget_mib} MiB)",
                           results["rss"])
    print(f"\nwrote {common.write_json('engine', results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
