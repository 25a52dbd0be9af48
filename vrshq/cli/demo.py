"""``vrshq demo``: make a sample video and a first-frame mask, then track it like ``vrshq track``."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from vrshq.cli import segment, track
from vrshq.cli.folders import add_model_option, model_folder
from vrshq.cli.progress import add_progress_option
from vrshq.errors import VrshqError
from vrshq.masks import TrackSet, write_palette_png


def register(sub: argparse._SubParsersAction) -> None:
    """Add the subcommand."""
    p = sub.add_parser("demo", help="track objects in a generated sample video",
                       description="Generate a synthetic video with exact ground truth, prompt its "
                       "objects with their frame-0 masks and run `vrshq track` on it, then `vrshq "
                       "segment` with two text prompts. Without --model (or $VRSHQ_MODEL) the tiny random models "
                       "are used: the pipeline is real, the weights are untrained, so the masks "
                       "are not meant to be good.")
    p.add_argument("--out", default="demo-out", help="output folder (default demo-out)")
    p.add_argument("--frames", type=int, default=60)
    add_model_option(p, "model folder with sam2/ (and vrshq/, clip/ for the text prompts)", old_flag=True)
    add_progress_option(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the subcommand."""
    from vrshq.model.tiny import write_tiny_vrshq
    from vrshq.synthetic import SyntheticSpec, ground_truth, write_video

    if args.frames < 1:
        raise VrshqError(f"--frames {args.frames}: a demo video needs at least 1 frame")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise VrshqError(f"--out {out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    spec = SyntheticSpec(num_frames=args.frames, width=320, height=240, fps=25.0, num_objects=2)
    video = write_video(spec, out / "sample.mp4")
    gt = ground_truth(spec)
    write_palette_png(out / "prompt.png", gt[0])
    given = model_folder(args)
    model_dir = given
    if model_dir is None:
        model_dir = str(out / "models")
        write_tiny_vrshq(Path(model_dir))
    print(f"sample video: {video} ({spec.num_frames} frames, {spec.width}x{spec.height})")
    # track and segment decide their bars as the demo does
    bars = [] if args.progress is None else ["--progress" if args.progress else "--no-progress"]
    argv = [str(video), "--mask", str(out / "prompt.png"), "--frame", "0",
            "--out", str(out / "track"), "--model", model_dir, *bars]
    code = track.run(_track_args(argv))
    tracks = TrackSet.load(out / "track" / "track.json")
    for t in tracks:
        ious = [_iou(t.mask(f), gt[f] == t.obj_id) for f in t.frames()]
        print(f"object {t.obj_id}: mean IoU vs ground truth {np.mean(ious):.3f}"
              + ("" if given else " (tiny random weights: untrained)"))
    print(f"outputs: {out / 'track'}/masks/*.png, track.json, labelstudio.json")
    if code == 0 and (Path(model_dir) / "vrshq" / "config.json").is_file():
        print("\nVRS-HQ from text prompts:")
        code = segment.run(_parse(["segment", str(video), "--prompt", "the red disc",
                                   "--prompt", "which shape leaves the frame?",
                                   "--out", str(out / "segment"), "--model", model_dir, *bars]))
        print(f"outputs: {out / 'segment'}/masks/*.png, track.json, labelstudio.json, "
              "keyframes.json")
    return code


def _track_args(argv: list[str]) -> argparse.Namespace:
    return _parse(["track", *argv])


def _parse(argv: list[str]) -> argparse.Namespace:
    from vrshq.cli import build_parser

    return build_parser().parse_args(argv)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)
