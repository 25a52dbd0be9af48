"""``vrshq segment``: text prompts -> VRS-HQ (or another text plugin, such as sam3) -> masks on every frame."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from vrshq.cli.common import (FPS_HELP, MiB, add_precision_option, checked_precision, open_video_quietly,
                              resolve_device)
from vrshq.cli.folders import add_model_option, model_folder
from vrshq.cli.out_folder import check_out_folder, staged_out_folder
from vrshq.cli.labelstudio_file import add_labelstudio_options, labelstudio_file
from vrshq.cli.progress import add_progress_option, progress_bar
from vrshq.engine import EngineConfig
from vrshq.errors import PromptError, VrshqError
from vrshq.model.anchor import DEFAULT_MODEL
from vrshq.plugins.registry import plugin_name


def register(sub: argparse._SubParsersAction) -> None:
    """Add the subcommand."""
    p = sub.add_parser("segment", help="segment the objects text prompts describe",
                       description="Segment, on every frame, the object each --prompt describes "
                       "(a referring or reasoning expression), with VRS-HQ. One object id per "
                       "prompt, in order. With --plugin sam3 each prompt line is a concept and "
                       "every instance SAM 3 finds becomes its own object.")
    p.add_argument("video", help="a video file or a folder of JPEG/PNG frames")
    p.add_argument("--prompt", action="append", required=True,
                   help="text prompt (repeatable); with --plugin sam3, a concept per line")
    p.add_argument("--plugin", help="model plugin that takes text: vrshq (one object per prompt) or "
                   "sam3 (every instance of each concept); default $VRSHQ_PLUGIN, else vrshq")
    p.add_argument("--out", required=True,
                   help="output folder: new, empty or an earlier output, which the run replaces "
                   "whole at its end (any other folder is refused)")
    add_model_option(p, "model folder with vrshq/ (and sam2/, clip/), or sam3/ for --plugin sam3")
    p.add_argument("--fps", type=float, help=FPS_HELP)
    p.add_argument("--direction", choices=["both", "forward", "backward"], default="both")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    add_precision_option(p, default=os.environ.get("VRSHQ_PRECISION") or "auto")
    p.add_argument("--feature-budget-mib", type=int, default=1024,
                   help="SAM-2 image features kept in memory; the rest spill to disk")
    p.add_argument("--clip-model", default=DEFAULT_MODEL,
                   help=f"open_clip architecture of --clip-pretrained (default {DEFAULT_MODEL})")
    p.add_argument("--clip-pretrained",
                   help="a CLIP checkpoint file for the anchor (default: the model folder's clip/)")
    add_progress_option(p)
    add_labelstudio_options(p, default_config="video_text_prompt",
                            default_note="video_text_prompt, or video_concepts with --plugin sam3")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the subcommand."""
    from vrshq.model.loading import load_vrshq
    from vrshq.model.pipeline import VrshqConfig, results_to_trackset
    from vrshq.tracking import write_outputs

    args.model = model_folder(args)
    if not args.model:
        raise VrshqError("no model: pass --model DIR (made by `vrshq tiny-models` or "
                         "`vrshq download`) or set VRSHQ_MODEL")
    for prompt in args.prompt:
        if not prompt.strip():
            raise PromptError(f"--prompt {prompt!r}: a prompt must be non-empty text")
    out = Path(args.out)
    check_out_folder(out)
    args.precision = checked_precision(args.precision)
    args.plugin = plugin_name(configured=args.plugin)
    if args.ls_config is None:  # concepts need no prompt tags: the labels are the concepts
        args.ls_config = "video_concepts" if args.plugin == "sam3" else "video_text_prompt"
    if args.plugin != "vrshq":
        from vrshq.cli.segment_plugin import run_plugin

        return run_plugin(args, out)
    if args.feature_budget_mib < 0:
        raise VrshqError("--feature-budget-mib must be >= 0")
    ls_file = labelstudio_file(args, list(range(1, len(args.prompt) + 1)),
                               prompts=dict(enumerate(args.prompt, 1)))
    engine = EngineConfig(device=args.device, precision=checked_precision(args.precision),
                          feature_budget_bytes=args.feature_budget_mib * MiB)
    resolve_device(args, engine)
    reader = open_video_quietly(args.video, fps=args.fps)
    model = load_vrshq(args.model, VrshqConfig(engine=engine), clip_model=args.clip_model,
                       clip_pretrained=args.clip_pretrained)
    bars: dict[str, Any] = {}  # one bar per stage, made when the stage starts

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in bars:
            bars[stage] = progress_bar(args, stage, "step", total)
        bars[stage].update(done - bars[stage].n)

    try:
        results = model.segment(reader, args.prompt, direction=args.direction, progress=progress)
    finally:
        for stage_bar in bars.values():
            stage_bar.close()
    tracks = results_to_trackset(results, reader)
    try:
        with staged_out_folder(out) as staging:
            write_outputs(tracks, staging, ls_file.task(tracks, model.version))
            (staging / "keyframes.json").write_text(json.dumps(
                {"model_version": model.version, "prompts": [r.keyframe_json() for r in results]},
                indent=1))
    except OSError as exc:
        raise VrshqError(f"--out {out}: cannot write the outputs ({exc.strerror or exc})") from None
    for r in results:
        print(f"object {r.obj_id} {r.prompt!r}: keyframe {r.keyframe} (anchor {r.anchor})")
    print(f"segmented {len(results)} prompt(s) over {len(reader)} frames -> {out}")
    return 0
