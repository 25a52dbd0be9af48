"""``vrshq tiny-models``: write small random models in the official formats, for tests and demos."""

from __future__ import annotations

import argparse

from vrshq.engine.tiny import PRESETS, write_tiny_sam2


def register(sub: argparse._SubParsersAction) -> None:
    """Add the subcommand."""
    p = sub.add_parser("tiny-models", help="write deterministic random tiny models",
                       description="Write OUT_DIR/sam2/config.yaml and OUT_DIR/sam2/model.pt: a "
                       "randomly initialised sam2 (untrained: for tests and demos only).")
    p.add_argument("out_dir")
    p.add_argument("--sam2-preset", choices=sorted(PRESETS), default="tiny")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the subcommand."""
    from pathlib import Path

    config, checkpoint = write_tiny_sam2(Path(args.out_dir) / "sam2", args.sam2_preset, args.seed)
    print(f"wrote {config} and {checkpoint}")
    return 0
