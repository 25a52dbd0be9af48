"""The fine-tuning loop: AdamW, warm-up then linear decay, clipping, accumulation, resumable.

Official settings (brief-vrshq.md §6.4; VRS-HQ ``train.py``): lr 3e-4, AdamW betas (0.9, 0.95),
weight decay 0, 100 warm-up steps then decay to 0 at the last step (DeepSpeed
``WarmupDecayLR``, linear warm-up as LISA configures it), gradient clipping 1.0, bf16 on GPU,
batch 1 per GPU with gradient accumulation. A checkpoint (trainable weights, optimizer,
scheduler, step, random state) is written atomically every ``checkpoint_every`` steps and at
the end; a run started on the same output folder resumes from it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from vrshq.errors import VrshqError
from vrshq.finetune.step import Clip, LossWeights, clip_forward
from vrshq.finetune.trainable import trainable_parameters
from vrshq.model.pipeline import Vrshq

CHECKPOINT = "checkpoint.pt"


class ClipSource(Protocol):
    """Where training clips come from."""

    def sample(self, rng: random.Random) -> Clip:
        """One training clip."""


@dataclass(frozen=True)
class TrainConfig:
    """The run's hyper-parameters (official defaults, except the step count)."""

    steps: int = 100
    batch_size: int = 1
    grad_accum: int = 1
    lr: float = 3e-4
    warmup_steps: int = 100
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    clip_norm: float = 1.0
    seed: int = 0
    checkpoint_every: int = 50

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "grad_accum", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise VrshqError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise VrshqError(f"lr must be > 0, got {self.lr}")
        if self.warmup_steps < 0:
            raise VrshqError(f"warmup-steps must be >= 0, got {self.warmup_steps}")


def warmup_decay(step: int, warmup: int, total: int) -> float:
    """The learning-rate factor of WarmupDecayLR with linear warm-up: 0 -> 1 -> 0."""
    if warmup > 0 and step < warmup:
        return step / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


@dataclass
class StepLog:
    """What one optimizer step did."""

    step: int
    loss: float
    ce: float
    bce: float
    dice: float
    lr: float
    grad_norm: float


class Trainer:
    """Runs ``TrainConfig.steps`` optimizer steps on clips from a source; resumable from ``out``."""

    def __init__(self, model: Vrshq, source: ClipSource, config: TrainConfig, out: Path,
                 weights: LossWeights = LossWeights(), record: dict[str, Any] | None = None) -> None:
        self.model = model
        self.record = record  # what the run was started with, kept in its checkpoints
        self.source = source
        self.config = config
        self.out = Path(out)
        self.weights = weights
        self.params = trainable_parameters(model)
        if not self.params:
            raise VrshqError("nothing to train: call prepare_trainable(model) first")
        self.optimizer = torch.optim.AdamW(self.params.values(), lr=config.lr, betas=config.betas,
                                           weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: warmup_decay(s, config.warmup_steps, config.steps))
        self.step = 0
        self.rng = random.Random(config.seed)
        self.history: list[StepLog] = []
        self.resumed_at: list[int] = []  # the steps a run was resumed at (the schedule may change)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path:
        """Write the resumable state atomically; its path."""
        self.out.mkdir(parents=True, exist_ok=True)
        state = {
            "step": self.step, "config": asdict(self.config),
            "params": {k: p.detach().cpu() for k, p in self.params.items()},
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "rng": self.rng.getstate(), "torch_rng": torch.get_rng_state(),
            "history": [asdict(h) for h in self.history],
            "run": self.record, "resumed_at": self.resumed_at,
        }
        path = self.out / CHECKPOINT
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        return path

    def resume(self) -> bool:
        """Load ``out/checkpoint.pt`` when present; whether it did."""
        path = self.out / CHECKPOINT
        if not path.is_file():
            return False
        # The random state is a tuple of ints: allow it explicitly, nothing else unsafe.
        with torch.serialization.safe_globals([tuple]):
            state = torch.load(path, map_location="cpu", weights_only=True)
        missing = sorted(set(self.params) - set(state["params"]))
        unexpected = sorted(set(state["params"]) - set(self.params))
        if missing or unexpected:
            raise VrshqError(f"{path}: does not match this model (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]})")
        with torch.no_grad():
            for k, p in self.params.items():
                p.copy_(state["params"][k].to(p.device, p.dtype))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        # The schedule follows this run's step count (a resumed run may extend the old one).
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            group["lr"] = base * warmup_decay(self.step, self.config.warmup_steps, self.config.steps)
        self.rng.setstate(_as_rng_state(state["rng"]))
        torch.set_rng_state(state["torch_rng"])
        self.history = [StepLog(**h) for h in state.get("history", [])]
        self.resumed_at = [int(s) for s in state.get("resumed_at", [])] + [self.step]
        return True

    # ------------------------------------------------------------------ loop
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.model.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self) -> StepLog:
        """One optimizer step over batch_size x grad_accum clips."""
        self.optimizer.zero_grad(set_to_none=True)
        n = self.config.batch_size * self.config.grad_accum
        sums = np.zeros(4)
        for _ in range(n):
            clip = self.source.sample(self.rng)
            with self._autocast():
                out = clip_forward(self.model, clip, self.weights)
            (out.loss / n).backward()
            sums += [float(out.loss.detach()), out.ce, out.bce, out.dice]
        norm = torch.nn.utils.clip_grad_norm_(list(self.params.values()), self.config.clip_norm)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        loss, ce, bce, dice = (sums / n).tolist()
        log = StepLog(self.step, loss, ce, bce, dice, lr, float(norm))
        if not all(math.isfinite(v) for v in (loss, log.grad_norm)):
            raise VrshqError(f"step {self.step}: the loss is not finite ({loss}); lower --lr")
        self.history.append(log)
        return log

    def run(self, on_step: Callable[[StepLog], None] | None = None) -> list[StepLog]:
        """Train until ``config.steps``; checkpoints on the way and at the end."""
        if self.step == 0:
            torch.manual_seed(self.config.seed)  # a resumed run keeps the state it saved
        while self.step < self.config.steps:
            log = self.train_step()
            if on_step is not None:
                on_step(log)
            if self.step % self.config.checkpoint_every == 0 or self.step == self.config.steps:
                self.save_checkpoint()
        return self.history


def checkpoint_info(path: Path) -> tuple[int, dict[str, Any] | None]:
    """The step of a checkpoint and the record of the run that wrote it, without its tensors."""
    # mmap: the tensors stay on disk, only the small entries are read.
    with torch.serialization.safe_globals([tuple]):
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return int(state["step"]), state.get("run")


def _as_rng_state(state: object) -> tuple:
    # random.Random.setstate wants (version, tuple_of_ints, gauss); torch.load gives lists back
    version, internal, gauss = state  # type: ignore[misc]
    return (version, tuple(internal), gauss)


def history_json(history: list[StepLog]) -> str:
    """The loss history as JSON lines."""
    return "\n".join(json.dumps(asdict(h)) for h in history) + "\n"


__all__ = ["CHECKPOINT", "ClipSource", "StepLog", "TrainConfig", "Trainer", "checkpoint_info",
           "history_json", "warmup_decay"]
