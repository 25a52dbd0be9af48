"""Fine-tuning speed and memory: training steps per second and the peak memory of a step.

Tiny VRS-HQ on synthetic clips (8-12 frames, 160x120), one clip per step. The reference in the
same process is the same clip forward without gradients (inference cost of the training
graph), so the ratio says what the backward pass and the optimizer add. Peak memory is the
process's peak RSS growth over a step beyond the model and data (VmHWM), measured in a fresh
child process per mode so one mode's peak does not hide the other's. JSON in
bench/results/finetune.json.

    python -m bench.finetune_bench [--steps 20] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch

from bench.common import peak_rss_mib, print_table, run_child, write_json


def _data(root: Path) -> None:
    from PIL import Image

    from vrshq.masks import encode_rle
    from vrshq.synthetic import SyntheticSpec, ground_truth, render_scene

    split = root / "train"
    meta, masks = {"videos": {}}, {}
    for v in range(2):
        spec = SyntheticSpec(num_frames=16, width=160, height=120, num_objects=2, seed=v + 1)
        gt = ground_truth(spec)
        folder = split / "JPEGImages" / f"v{v}"
        folder.mkdir(parents=True, exist_ok=True)
        names = []
        for i, (frame, _) in enumerate(render_scene(spec)):
            Image.fromarray(frame).save(folder / f"{i:05d}.jpg", quality=95)
            names.append(f"{i:05d}")
        masks[str(v)] = [encode_rle(gt[i] == 1) for i in range(spec.num_frames)]
        meta["videos"][f"v{v}"] = {"frames": names,
                                   "expressions": {"0": {"exp": "the red disc", "obj_id": [1], "anno_id": [v]}}}
    (split / "meta_expressions.json").write_text(json.dumps(meta))
    (split / "mask_dict.json").write_text(json.dumps(masks))


def child(mode: str, steps: int, device: str, models: str, data: str) -> dict:
    """Run ``steps`` training steps (mode "train") or gradient-free forwards ("forward")."""
    from vrshq.engine.config import EngineConfig
    from vrshq.finetune.data import RevosClips
    from vrshq.finetune.step import clip_forward
    from vrshq.finetune.trainable import prepare_trainable
    from vrshq.finetune.trainer import TrainConfig, Trainer
    from vrshq.model.loading import load_vrshq
    from vrshq.model.pipeline import VrshqConfig

    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = load_vrshq(models, VrshqConfig(engine=EngineConfig(device=device)))
    prepare_trainable(model)
    source = RevosClips(data)
    trainer = Trainer(model, source, TrainConfig(steps=steps + 1, lr=1e-4, warmup_steps=0,
                                                 checkpoint_every=10**6), Path(tempfile.mkdtemp()))
    rng = random.Random(0)
    warm = source.sample(rng)  # one clip decoded before measuring: the data is not the step
    if mode == "train":
        trainer.train_step()
    else:
        with torch.no_grad():
            clip_forward(model, warm)
    base = peak_rss_mib()
    start = time.perf_counter()
    for _ in range(steps):
        if mode == "train":
            trainer.train_step()
        else:
            with torch.no_grad():
                clip_forward(model, source.sample(rng))
    seconds = time.perf_counter() - start
    return {"mode": mode, "steps": steps, "seconds": seconds, "steps_per_s": steps / seconds,
            "peak_rss_mib": peak_rss_mib(), "step_peak_growth_mib": peak_rss_mib() - base}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        mode, steps, models, data = args.child
        print(json.dumps(child(mode, int(steps), args.device, models, data)))
        return 0
    from vrshq.model.tiny import write_tiny_vrshq

    with tempfile.TemporaryDirectory() as tmp:
        models, data = Path(tmp) / "models", Path(tmp) / "data"
        write_tiny_vrshq(models)
        _data(data)
        rows = [run_child("bench.finetune_bench", "--device", args.device, "--child", mode,
                          str(args.steps), str(models), str(data)) for mode in ("train", "forward")]
    train, forward = rows
    ratio = forward["steps_per_s"] / train["steps_per_s"]
    print_table("fine-tuning, tiny VRS-HQ, one clip of 8-12 frames per step", rows)
    print(f"\ntraining step / gradient-free forward time: {ratio:.2f}x")
    path = write_json("finetune", {"device": args.device, "rows": rows, "train_over_forward": ratio})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
