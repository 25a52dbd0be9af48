"""``vrshq evaluate``: J, F and J&F of predicted palette PNGs against ground truth (DAVIS-2017)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from vrshq.cli.common import add_precision_option, checked_precision
from vrshq.cli.progress import DoneOfTotal, add_progress_option
from vrshq.errors import VrshqError

SCORES_FILE = "scores.json"


def register(sub: argparse._SubParsersAction) -> None:
    """Add the subcommand."""
    p = sub.add_parser("evaluate", help="J&F of predicted masks against ground truth",
                       description="Score predicted masks with the DAVIS-2017 semi-supervised J&F. "
                       "--gt is a DAVIS-layout folder (one sub-folder per video, one palette PNG "
                       "per frame whose pixel value is the object id) or one video's folder of "
                       "PNGs. --pred is the same layout, a folder of `vrshq track`/`segment` "
                       "outputs (PRED/<video>/masks/), or one such output folder: videos are "
                       "matched by name, and a single video with the same name or the only video "
                       "of the other side. The first and last ground-truth frame of each video "
                       "are not scored; the overall J and F are means over all objects of all "
                       "videos.")
    p.add_argument("--pred", help="predicted masks: PRED/<video>/00000.png ..., PRED/<video>/masks/ "
                   "..., or the --out folder of one `vrshq track` or `segment` run")
    p.add_argument("--gt", help="ground truth: GT/<video>/00000.png ..., or one video's PNG folder")
    p.add_argument("--out", help=f"also write the scores into this folder ({SCORES_FILE}; created "
                   "if missing)")
    p.add_argument("--model", help="model folder to run on --data instead of --pred/--gt")
    p.add_argument("--data", help="a `vrshq corrections export --format revos` folder, for --model")
    p.add_argument("--split", default="valid", help="the split of --data to score (default valid)")
    p.add_argument("--device", default="auto")
    add_precision_option(p, default=os.environ.get("VRSHQ_PRECISION") or "auto")
    add_progress_option(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the subcommand."""
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not out.is_dir():
        raise VrshqError(f"--out {out}: exists and is not a folder (--out is the folder "
                         f"{SCORES_FILE} is written into)")
    if args.model or args.data:
        if not (args.model and args.data) or args.pred or args.gt:
            raise VrshqError("give --model DIR --data DIR, or --pred DIR --gt DIR")
        _check_verified(args)
        result = _run_model(args)
    else:
        if not args.pred or not args.gt:
            raise VrshqError("evaluate needs both --pred DIR and --gt DIR")
        from vrshq.evaluation import evaluate_folders

        with DoneOfTotal(args, "evaluate", "video") as progress:
            result = evaluate_folders(args.pred, args.gt, progress=progress)
    print_table(result)
    if args.model:
        print(_ground_truth_line(result))
        print(f"precision: {result['precision']}")
    if out is not None:
        path = out / SCORES_FILE
        try:
            out.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise VrshqError(f"--out {out}: cannot write {SCORES_FILE} ({exc.strerror or exc})") from None
        print(f"wrote {path}")
    return 0


def _check_verified(args: argparse.Namespace) -> None:
    """Refuse a split without annotator-verified frames before loading a model: its masks are
    the backend's own propagation, and a model scored against them is scored against itself."""
    from vrshq.evaluation.verified import count_verified, read_verified

    verified = read_verified(Path(args.data) / args.split)
    if verified is not None and count_verified(verified) == 0:
        raise VrshqError(f"--data {args.data}: the {args.split} split has no annotator-verified "
                         "frames (corrected or reviewed), only the backend's own propagation: "
                         "nothing to score")


def _run_model(args: argparse.Namespace) -> dict:
    from vrshq.cli.common import resolve_device
    from vrshq.engine.config import EngineConfig
    from vrshq.finetune.evaluate import evaluate_model, split_root
    from vrshq.model.layout import check_model_folder
    from vrshq.model.loading import load_vrshq
    from vrshq.model.pipeline import VrshqConfig

    engine = EngineConfig(device=args.device, precision=checked_precision(args.precision))
    resolve_device(args, engine)
    # Both inputs are checked before the model loads (minutes for the real one).
    check_model_folder(args.model)
    split_root(args.data, args.split)
    model = load_vrshq(args.model, VrshqConfig(engine=engine))
    with DoneOfTotal(args, "evaluate", "video") as progress:
        result = evaluate_model(model, args.data, args.split, progress=progress)
    # the plan as it ran (auto resolved on this device): scores of two plans differ
    result["precision"] = engine.resolved_precision()
    return result


def _ground_truth_line(result: dict) -> str:
    """What the scores were measured against."""
    n = result.get("verified_frames")
    if n is None:
        return ("ground truth: every exported frame (the export records no annotator-verified "
                "frames; export again to score only those)")
    return f"J&F over {n} annotator-verified frame(s)"


def print_table(result: dict) -> None:
    """One row per object of every video, then the overall row."""
    header = ("VIDEO", "OBJ", "J", "F", "J&F")
    rows = [header]
    for video, v in result["videos"].items():
        if not v["objects"]:
            rows.append((video, "-", "-", "-", "-"))
        for obj_id, s in v["objects"].items():
            rows.append((video, obj_id, *_scores(s)))
    overall = f"overall ({result['num_objects']} objects, {result['num_videos']} videos)"
    rows.append((overall, "", *_scores(result)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())


def _scores(s: dict) -> tuple[str, str, str]:
    return tuple(f"{s[k]:.3f}" for k in ("J", "F", "J&F"))
