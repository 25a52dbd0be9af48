"""``vrshq track``: masks on some frames -> a track of every object through the whole video."""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from vrshq.cli.common import FPS_HELP, add_model_options, engine_config, load_sam2, open_video_quietly
from vrshq.cli.out_folder import check_out_folder, staged_out_folder
from vrshq.errors import PromptError, VrshqError
from vrshq.tracking import (
    add_prompts,
    collect_tracks,
    expected_steps,
    open_session,
    read_mask_prompts,
    write_outputs,
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the subcommand."""
    p = sub.add_parser("track", help="track masked objects through a video",
                       description="Track the objects of mask PNGs through a video with SAM-2. "
                       "Each --mask PNG is a palette/label image (pixel value = object id, as in "
                       "DAVIS) or a 0/255 mask (object 1); --frame is its 0-based frame. Several "
                       "pairs add objects or corrections.")
    p.add_argument("video", help="a video file or a folder of JPEG/PNG frames")
    p.add_argument("--mask", action="append", required=True, help="mask PNG (repeatable)")
    p.add_argument("--frame", action="append", type=int, required=True,
                   help="0-based frame of the matching --mask (repeatable)")
    p.add_argument("--out", required=True,
                   help="output folder: new, empty or an earlier output, which the run replaces "
                   "whole at its end (any other folder is refused)")
    p.add_argument("--resize", choices=["sam2", "vrshq"], default="sam2",
                   help="model input: sam2's square resize, or VRS-HQ's longest side + padding")
    p.add_argument("--direction", choices=["both", "forward", "backward"], default="both")
    p.add_argument("--fps", type=float, help=FPS_HELP)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress bar on stderr (default: when stderr is a terminal)")
    add_model_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the subcommand."""
    if len(args.mask) != len(args.frame):
        raise PromptError(f"{len(args.mask)} --mask but {len(args.frame)} --frame: give them in pairs")
    config = engine_config(args)
    out = Path(args.out)
    check_out_folder(out)
    reader = open_video_quietly(args.video, fps=args.fps)
    hw = (reader.height, reader.width)
    prompts = []
    for path, frame_idx in zip(args.mask, args.frame):
        if not 0 <= frame_idx < len(reader):
            raise PromptError(f"--frame {frame_idx} is outside the video (0..{len(reader) - 1})")
        prompts.extend(read_mask_prompts(path, frame_idx, hw))
    model = load_sam2(args, config)
    with open_session(model, reader, args.resize, config) as session:
        add_prompts(session, prompts)
        with tqdm(total=expected_steps(session, args.direction), unit="frame",
                  desc="tracking", disable=None if args.progress is None else not args.progress) as bar:
            tracks = collect_tracks(session, args.direction, progress=bar.update)
    try:
        with staged_out_folder(out) as staging:
            write_outputs(tracks, staging)
    except OSError as exc:
        raise VrshqError(f"--out {out}: cannot write the outputs ({exc.strerror or exc})") from None
    print(f"tracked {len(tracks)} object(s) over {len(reader)} frames -> {out}")
    return 0
