"""A whole fine-tuning run (load, train, merge, save) and its registration as a served version."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vrshq.engine.config import EngineConfig
from vrshq.errors import VrshqError
from vrshq.finetune.data import RevosClips
from vrshq.finetune.resume import TRAIN_DIR, prepare_out, run_record
from vrshq.finetune.save import save_finetuned
from vrshq.finetune.trainable import LoraSettings, merge_lora, prepare_trainable
from vrshq.finetune.trainer import StepLog, TrainConfig, Trainer, history_json
from vrshq.model.loading import load_vrshq
from vrshq.model.pipeline import Vrshq, VrshqConfig
from vrshq.versions import VersionRegistry


def check_inputs(data: str | Path, base: str | Path, out: str | Path, min_frames: int = 8,
                 max_frames: int = 12) -> RevosClips:
    """Check the folders of a run before any work; the training clips."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise VrshqError(f"--out {out}: exists and is not a folder")
    if out.resolve() == Path(base).resolve():
        raise VrshqError("--out must differ from --base (the base model is kept as it is)")
    if not Path(base).is_dir():
        raise VrshqError(f"--base {base}: model folder not found")
    return RevosClips(data, min_frames=min_frames, max_frames=max_frames)


def _load_for_training(base: str | Path, device: str) -> Vrshq:
    """The base model in the dtypes training has always used, whatever the inference plan.

    SAM-2 stays float32 (its mask decoder trains, under the trainer's own bf16 autocast on
    CUDA): the official plan's bf16 weights would lose optimizer updates below bf16's step.
    On CUDA the LLM and the projection are bf16, as before precision plans existed.
    """
    model = load_vrshq(base, VrshqConfig(engine=EngineConfig(device=device, precision="fp32")))
    if model.device.type == "cuda":
        model.mllm.to(torch.bfloat16)
        model.projection.to(torch.bfloat16)
    return model


def run_finetune(data: str | Path, base: str | Path, out: str | Path, train: TrainConfig,
                 device: str = "auto", min_frames: int = 8, max_frames: int = 12,
                 on_step: Callable[[StepLog], None] | None = None,
                 on_resume: Callable[[int], None] | None = None,
                 overwrite: bool = False) -> dict[str, Any]:
    """Fine-tune ``base`` on ``data`` into ``out``; the model card.

    A run already in ``out`` is resumed when it had the same base, data and settings, and
    refused otherwise (``vrshq.finetune.resume``); ``overwrite`` starts over.
    """
    out = Path(out)
    source = check_inputs(data, base, out, min_frames, max_frames)
    record = run_record(base, data, train, min_frames, max_frames)
    prepare_out(out, record, train.steps, overwrite)  # before the model loads: refusals are quick
    model = _load_for_training(base, device)
    base_version = model.version
    lora = LoraSettings()
    wrapped = prepare_trainable(model, lora, seed=train.seed)
    trainer = Trainer(model, source, train, out / TRAIN_DIR, record=record)
    if trainer.resume() and on_resume is not None:
        on_resume(trainer.step)
    history = trainer.run(on_step)
    (out / TRAIN_DIR / "history.jsonl").write_text(history_json(history))
    merge_lora(model, wrapped)
    # The steps the saved weights went through: every one of them has its loss below.
    card = {"name": out.resolve().name, "base_version": base_version,
            "base_dir": str(Path(base).resolve()), "data": str(Path(data).resolve()),
            "clips": len(source), "videos": len({e.video for e in source.expressions}),
            "steps": trainer.step, "resumed_at": trainer.resumed_at,
            "batch_size": train.batch_size, "grad_accum": train.grad_accum,
            "lr": train.lr, "lora_r": lora.r, "lora_alpha": lora.alpha, "lora_dropout": lora.dropout,
            "first_loss": history[0].loss if history else None,
            "last_loss": history[-1].loss if history else None,
            "losses": [round(h.loss, 6) for h in history]}
    if (Path(data) / "valid" / "meta_expressions.json").is_file():
        from vrshq.finetune.evaluate import evaluate_model

        scores = evaluate_model(model, data, "valid")
        card["evaluation"] = {"split": "valid", "J": scores["J"], "F": scores["F"],
                              "J&F": scores["J&F"], "videos": scores["num_videos"],
                              "objects": scores["num_objects"],
                              "verified_frames": scores.get("verified_frames")}
    save_finetuned(model, Path(base), out, card)
    return card


def register_if_not_worse(data_dir: str | Path, new_model: str | Path, serving_model: str | Path | None,
                          data: str | Path, device: str = "auto", split: str = "valid") -> dict[str, Any]:
    """Register ``new_model``; serve it when its held-out J&F is not below the serving model's.

    Only the split's annotator-verified frames are scored; with none it is not served.
    Returns ``{"version", "served", "J&F", "baseline J&F", "verified_frames", "reason"}``.
    """
    from vrshq.finetune.evaluate import evaluate_model

    registry = VersionRegistry(data_dir)
    config = VrshqConfig(engine=EngineConfig(device=device))
    have_split = (Path(data) / split / "meta_expressions.json").is_file()
    metrics: dict[str, Any] = {"split": split}
    if have_split:
        import json

        card_path = Path(new_model) / "model_card.json"
        card = json.loads(card_path.read_text()) if card_path.is_file() else {}
        new = card.get("evaluation") if (card.get("evaluation") or {}).get("split") == split else None
        if new is None or "verified_frames" not in new:  # not scored (so) at the end of its run
            new = evaluate_model(load_vrshq(new_model, config), data, split)
        metrics.update({"J&F": new["J&F"], "J": new["J"], "F": new["F"],
                        "verified_frames": new.get("verified_frames")})
        if serving_model is not None and metrics["verified_frames"] != 0:
            old = evaluate_model(load_vrshq(serving_model, config), data, split)
            metrics["baseline J&F"] = old["J&F"]
    version = registry.register(new_model, metrics, name=Path(new_model).resolve().name)
    baseline = metrics.get("baseline J&F")
    if not have_split:
        served, reason = False, f"no {split} split to compare on (export with --holdout)"
    elif metrics["verified_frames"] == 0:  # comparing two models on their own output is noise
        served, reason = False, (f"no annotator-verified frames in the {split} split (corrected or "
                                 "reviewed): not promoted")
    elif baseline is not None and metrics["J&F"] < baseline:
        served, reason = False, f"J&F {metrics['J&F']:.4f} is below the serving model's {baseline:.4f}"
    else:
        served = True
        reason = (f"J&F {metrics['J&F']:.4f} >= {baseline:.4f} (serving)" if baseline is not None
                  else f"J&F {metrics['J&F']:.4f}")
        if metrics["verified_frames"] is not None:
            reason += f" over {metrics['verified_frames']} annotator-verified frame(s)"

        registry.use(version.id, reason=reason)
    return {"version": version.id, "served": served, "J&F": metrics.get("J&F"),
            "baseline J&F": baseline, "verified_frames": metrics.get("verified_frames"),
            "reason": reason}


__all__ = ["check_inputs", "register_if_not_worse", "run_finetune"]
