"""``vrshq finetune``: fine-tune VRS-HQ on exported corrections with the official recipe."""

from __future__ import annotations

import argparse
import json


from vrshq.cli.common import resolve_device
from vrshq.cli.folders import add_data_dir_option, data_folder


def register(sub: argparse._SubParsersAction) -> None:
    """Add the subcommand."""
    p = sub.add_parser(
        "finetune", help="fine-tune VRS-HQ on exported corrections",
        description="Train VRS-HQ on a `vrshq corrections export --format revos` folder: LoRA "
        "(r 8, alpha 16, dropout 0.05) on the LLM's q_proj/v_proj, lm_head, embed_tokens, SAM-2's "
        "mask decoder and the projection trainable; loss = CE + 2 BCE + 0.5 DICE on SAM-2's 3 "
        "frames around the keyframe; AdamW 3e-4 (0.9, 0.95), 100 warm-up steps then linear "
        "decay, clipping 1.0. The LoRA is merged and the model saved in the official checkpoint "
        "layout with a model card. Running again on the same --out resumes that run from its "
        "checkpoint when the base, the data and the settings are the same (a larger --steps "
        "extends it) and refuses otherwise; --overwrite starts over.")
    p.add_argument("--data", required=True, help="exported folder (with train/)")
    p.add_argument("--base", required=True, help="the model folder to start from (vrshq/, sam2/, clip/)")
    p.add_argument("--out", required=True,
                   help="the new model folder (new, empty, or an earlier run's to resume)")
    p.add_argument("--overwrite", action="store_true",
                   help="discard an earlier fine-tuning run in --out and start over")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps (default 100)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-frames", type=int, default=8, help="frames per clip, at least (8)")
    p.add_argument("--max-frames", type=int, default=12, help="frames per clip, at most (12)")
    p.add_argument("--device", default="auto")
    p.add_argument("--register", action="store_true",
                   help="register the result as a model version of the backend's --data-dir and "
                   "serve it when its J&F on the held-out split is not below the serving model's")
    add_data_dir_option(p, "the backend's data folder, for --register", old_flag=True)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the subcommand."""
    from tqdm import tqdm

    from vrshq.engine.config import EngineConfig
    from vrshq.errors import VrshqError
    from vrshq.finetune.run import check_inputs, register_if_not_worse, run_finetune
    from vrshq.finetune.trainer import TrainConfig

    data_dir = data_folder(args)
    if args.register and not data_dir:
        raise VrshqError("--register needs --data-dir (the backend's data folder) or MODEL_DIR")
    resolve_device(args, EngineConfig(device=args.device))
    check_inputs(args.data, args.base, args.out, args.min_frames, args.max_frames)
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum,
                         lr=args.lr, warmup_steps=args.warmup_steps, seed=args.seed,
                         checkpoint_every=args.checkpoint_every)
    bars: list[tqdm] = []  # made at the first step: a refused run prints its one line only

    def bar() -> tqdm:
        if not bars:
            bars.append(tqdm(total=config.steps, desc="finetune", unit="step"))
        return bars[0]

    def on_step(log) -> None:
        bar().update(1)
        bar().set_postfix(loss=f"{log.loss:.4f}", ce=f"{log.ce:.3f}", mask=f"{log.bce:.3f}/{log.dice:.3f}")

    def on_resume(step: int) -> None:
        bar().update(step)
        bar().write(f"resuming at step {step} of {config.steps}" + (
            "" if step < config.steps else ": nothing left to train, saving the model again"))

    try:
        card = run_finetune(args.data, args.base, args.out, config, device=args.device,
                            min_frames=args.min_frames, max_frames=args.max_frames,
                            on_step=on_step, on_resume=on_resume, overwrite=args.overwrite)
    finally:
        for b in bars:
            b.close()
    if card["first_loss"] is not None:
        print(f"saved {args.out} (loss {card['first_loss']:.4f} -> {card['last_loss']:.4f})")
    summary = {"out": str(args.out), "steps": card["steps"], "last_loss": card["last_loss"]}
    if args.register:
        from vrshq.versions import VersionRegistry

        serving = VersionRegistry(data_dir).serving()
        summary.update(register_if_not_worse(data_dir, args.out,
                                             serving.path if serving else args.base, args.data,
                                             device=args.device))
        print(f"registered {summary['version']}: " + ("serving it" if summary["served"] else
                                                       "not serving it") + f" ({summary['reason']})")
    print(json.dumps(summary))
    return 0
