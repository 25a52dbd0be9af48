"""``vrshq finetune``: fine-tune VRS-HQ on exported corrections with the official recipe."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vrshq.cli.common import resolve_device
from vrshq.errors import VrshqError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the subcommand."""
    p = sub.add_parser(
        "finetune", help="fine-tune VRS-HQ on exported corrections",
        description="Train VRS-HQ on a `vrshq corrections export --format revos` folder: LoRA "
        "(r 8, alpha 16, dropout 0.05) on the LLM's q_proj/v_proj, lm_head, embed_tokens, SAM-2's "
        "mask decoder and the projection trainable; loss = CE + 2 BCE + 0.5 DICE on SAM-2's 3 "
        "frames around the keyframe; AdamW 3e-4 (0.9, 0.95), 100 warm-up steps then linear "
        "decay, clipping 1.0. The LoRA is merged and the model saved in the official checkpoint "
        "layout with a model card. Running again on the same --out resumes.")
    p.add_argument("--data", required=True, help="exported folder (with train/)")
    p.add_argument("--base", required=True, help="the model folder to start from (vrshq/, sam2/, clip/)")
    p.add_argument("--out", required=True, help="the new model folder")
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
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the subcommand."""
    from tqdm import tqdm

    from vrshq.engine.config import EngineConfig
    from vrshq.finetune.data import RevosClips
    from vrshq.finetune.save import save_finetuned
    from vrshq.finetune.trainable import LoraSettings, merge_lora, prepare_trainable
    from vrshq.finetune.trainer import TrainConfig, Trainer, history_json
    from vrshq.model.loading import load_vrshq
    from vrshq.model.pipeline import VrshqConfig

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise VrshqError(f"--out {out}: exists and is not a folder")
    if out.resolve() == Path(args.base).resolve():
        raise VrshqError("--out must differ from --base (the base model is kept as it is)")
    source = RevosClips(args.data, min_frames=args.min_frames, max_frames=args.max_frames)
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum,
                         lr=args.lr, warmup_steps=args.warmup_steps, seed=args.seed,
                         checkpoint_every=args.checkpoint_every)
    engine = EngineConfig(device=args.device)
    resolve_device(args, engine)
    model = load_vrshq(args.base, VrshqConfig(engine=engine))
    base_version = model.version
    lora = LoraSettings()
    wrapped = prepare_trainable(model, lora, seed=args.seed)
    trainer = Trainer(model, source, config, out / ".train")
    if trainer.resume():
        print(f"resuming at step {trainer.step} of {config.steps}")
    with tqdm(total=config.steps, initial=trainer.step, desc="finetune", unit="step") as bar:
        def on_step(log) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{log.loss:.4f}", ce=f"{log.ce:.3f}", mask=f"{log.bce:.3f}/{log.dice:.3f}")

        history = trainer.run(on_step)
    (out / ".train" / "history.jsonl").write_text(history_json(history))
    merge_lora(model, wrapped)
    card = {"name": out.resolve().name, "base_version": base_version, "base_dir": str(Path(args.base).resolve()),
            "data": str(Path(args.data).resolve()), "clips": len(source),
            "videos": len({e.video for e in source.expressions}), "steps": config.steps,
            "batch_size": config.batch_size, "grad_accum": config.grad_accum, "lr": config.lr,
            "lora_r": lora.r, "lora_alpha": lora.alpha, "lora_dropout": lora.dropout,
            "first_loss": history[0].loss if history else None,
            "last_loss": history[-1].loss if history else None,
            "losses": [round(h.loss, 6) for h in history]}
    folder = save_finetuned(model, Path(args.base), out, card)
    print(f"saved {folder} (loss {card['first_loss']:.4f} -> {card['last_loss']:.4f})"
          if history else f"saved {folder}")
    print(json.dumps({"out": str(out), "steps": config.steps, "last_loss": card["last_loss"]}))
    return 0
