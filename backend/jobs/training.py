"""Learning from corrections (the ``train`` job, Label Studio's Train button): export the logged
corrections, fine-tune the served model, register the result and serve it if it is not worse.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from vrshq.backend.corrections.training_export import export_training_set
from vrshq.backend.jobs.runner import Report
from vrshq.backend.tasks.inputs import RequestError
from vrshq.finetune.run import register_if_not_worse, run_finetune
from vrshq.finetune.trainer import TrainConfig


def train_from_corrections(backend: Any, project: str, report: Report | None = None) -> dict[str, Any]:
    """Export the logged corrections, fine-tune the served model, register, serve if not worse."""
    base = backend.serving_model_dir()
    if base is None:
        raise RequestError("training needs a model folder (VRSHQ_MODEL)")
    run_dir = backend.config.data_path / "training" / datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    data = run_dir / "data"
    export_training_set(backend.corrections, data, backend.media_config(project), fmt="revos",
                        holdout=backend.config.train_holdout, seed=0, state_root=backend.config.data_path,
                        progress=(lambda d, t: report("export", d, t)) if report else None)
    steps = backend.config.train_steps
    train = TrainConfig(steps=steps, lr=backend.config.train_lr,
                        warmup_steps=min(100, max(1, steps // 10)), checkpoint_every=max(1, steps // 5))
    device = "auto" if backend.config.device == "auto" else backend.config.device
    card = run_finetune(data, base, run_dir / "model", train, device=device,
                        on_step=(lambda lg: report("finetune", lg.step, steps)) if report else None)
    if report:
        report("evaluate", 0, 1)
    result = register_if_not_worse(backend.config.data_path, run_dir / "model", base, data, device=device)
    if report:
        report("evaluate", 1, 1)
    backend.refresh_model(min_interval=0.0)
    result.update({"first_loss": card["first_loss"], "last_loss": card["last_loss"],
                   "model_version": backend.model_version})
    return result


__all__ = ["train_from_corrections"]
