"""Options and model resolution shared by the subcommands."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from vrshq.engine import EngineConfig, build_model
from vrshq.errors import ModelError

MiB = 1024 * 1024


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--model-dir / --sam2-config / --sam2-checkpoint / --device and the memory budget."""
    parser.add_argument("--model-dir", default=os.environ.get("VRSHQ_MODEL_DIR"),
                        help="folder with sam2/config.yaml and sam2/model.pt (default $VRSHQ_MODEL_DIR)")
    parser.add_argument("--sam2-config", help="sam2 hydra YAML, or a config name packaged with sam2")
    parser.add_argument("--sam2-checkpoint", help="sam2 checkpoint ({'model': state_dict})")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--feature-budget-mib", type=int, default=1024,
                        help="image features kept in memory; the rest spill to disk")
    parser.add_argument("--cache-dir", help="where spilled features go (default: system temp)")


def engine_config(args: argparse.Namespace) -> EngineConfig:
    """The engine config from the command-line options."""
    if args.feature_budget_mib < 0:
        raise ModelError("--feature-budget-mib must be >= 0")
    return EngineConfig(device=args.device, feature_budget_bytes=args.feature_budget_mib * MiB,
                        cache_dir=args.cache_dir)


def load_sam2(args: argparse.Namespace, config: EngineConfig):
    """The sam2 model named by the options."""
    cfg, ckpt = args.sam2_config, args.sam2_checkpoint
    if cfg is None:
        if not args.model_dir:
            raise ModelError("no model: pass --model-dir (a folder made by `vrshq tiny-models`) "
                             "or --sam2-config and --sam2-checkpoint")
        base = Path(args.model_dir) / "sam2"
        cfg, ckpt = str(base / "config.yaml"), ckpt or str(base / "model.pt")
        if not Path(cfg).is_file():
            raise ModelError(f"{cfg}: not found (expected a sam2 config in the model folder)")
    try:
        device = config.resolved_device()
    except RuntimeError as exc:
        raise ModelError(f"--device {args.device}: {exc}") from None
    return build_model(cfg, ckpt, device=device)
