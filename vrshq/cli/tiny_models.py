"""``vrshq tiny-models``: write small random models in the official formats, for tests and demos."""

from __future__ import annotations

import argparse

from vrshq.engine.tiny import PRESETS, write_tiny_sam2
from vrshq.errors import VrshqError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the subcommand."""
    p = sub.add_parser("tiny-models", help="write deterministic random tiny models",
                       description="Write OUT_DIR/sam2/config.yaml and OUT_DIR/sam2/model.pt: a "
                       "randomly initialised sam2, and OUT_DIR/vrshq (a tiny VRS-HQ in the official "
                       "checkpoint layout) with OUT_DIR/clip (its anchor CLIP), and OUT_DIR/sam3 (a tiny "
                       "SAM 3 in the Hugging Face release layout); all untrained: "
                       "for tests and demos only.")
    p.add_argument("out_dir")
    p.add_argument("--sam2-preset", choices=sorted(PRESETS), default="tiny")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the subcommand."""
    from pathlib import Path

    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        raise VrshqError(f"{out}: exists and is not a folder")
    from vrshq.model.tiny import write_tiny_vrshq

    vrshq = write_tiny_vrshq(out, seed=args.seed)
    config, checkpoint = write_tiny_sam2(out / "sam2", args.sam2_preset, args.seed)
    from vrshq.model.sam3_tiny import write_tiny_sam3

    sam3 = write_tiny_sam3(out / "sam3", seed=args.seed)
    print(f"wrote {config} and {checkpoint}")
    print(f"wrote {sam3} (SAM 3 in the Hugging Face release layout)")
    print(f"wrote {vrshq} (VRS-HQ in the official layout) and {out / 'clip'} (anchor CLIP)")
    print("these weights are random: for tests and demos only")
    return 0
