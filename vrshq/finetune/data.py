"""Training clips from a ``vrshq corrections export --format revos`` folder (the MeViS layout).

``DIR/train/meta_expressions.json`` (videos -> expressions {exp, obj_id, anno_id} and frame
names), ``DIR/train/mask_dict.json`` (anno id -> one COCO RLE or null per frame) and
``DIR/train/JPEGImages/<video>/<frame>.jpg``, as VRS-HQ's MeViS loader reads them
(``dataset/d2_datasets/mevis_utils.py``). Clips follow VRS-HQ's "uniform" policy: 8-12 frames
spread over the video, one random frame per equal segment.

One deviation: the official loader reads a null mask as "absent"; our exports write null where
no annotator or tracked mask exists, so here a null frame is unlabelled (no mask loss on it).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vrshq.errors import VrshqError
from vrshq.finetune.step import Clip
from vrshq.masks import decode_rle


@dataclass(frozen=True)
class Expression:
    """One referring expression of one video, with its annotation ids."""

    video: str
    text: str
    anno_ids: tuple[str, ...]
    frames: tuple[str, ...]


class RevosClips:
    """Samples training clips from one split of an exported folder."""

    def __init__(self, root: str | Path, split: str = "train", min_frames: int = 8,
                 max_frames: int = 12) -> None:
        self.root = Path(root) / split
        meta_path = self.root / "meta_expressions.json"
        masks_path = self.root / "mask_dict.json"
        for path in (meta_path, masks_path):
            if not path.is_file():
                raise VrshqError(f"{path}: not found (make the folder with `vrshq corrections "
                                 "export --format revos --out DIR`)")
        if not 1 <= min_frames <= max_frames:
            raise VrshqError(f"frames per clip: need 1 <= min ({min_frames}) <= max ({max_frames})")
        try:
            meta = json.loads(meta_path.read_text())["videos"]
            self.masks = json.loads(masks_path.read_text())
        except (ValueError, KeyError, TypeError) as exc:
            raise VrshqError(f"{self.root}: not a revos export ({exc})") from None
        self.expressions = [
            Expression(video, str(exp["exp"]), tuple(str(a) for a in exp["anno_id"]),
                       tuple(str(f) for f in data["frames"]))
            for video, data in sorted(meta.items())
            for _, exp in sorted(data["expressions"].items(), key=lambda kv: int(kv[0]))
        ]
        if not self.expressions:
            raise VrshqError(f"{meta_path}: no expressions to train on")
        self.min_frames, self.max_frames = min_frames, max_frames

    def __len__(self) -> int:
        return len(self.expressions)

    def clip(self, expression: Expression, indices: list[int]) -> Clip:
        """The clip of ``expression`` on the given frame positions."""
        frames, masks = [], []
        for i in indices:
            path = self.root / "JPEGImages" / expression.video / f"{expression.frames[i]}.jpg"
            frames.append(np.asarray(Image.open(path).convert("RGB")))
            rles = [self.masks[a][i] for a in expression.anno_ids if self.masks[a][i] is not None]
            if rles:
                mask = np.zeros(frames[-1].shape[:2], bool)
                for rle in rles:
                    mask |= decode_rle(rle)
                masks.append(mask)
            else:
                masks.append(None)
        return Clip(frames, masks, expression.text, name=f"{expression.video}:{expression.text}")

    def uniform_indices(self, total: int, rng: random.Random) -> list[int]:
        """8-12 frame positions, one random frame in each of n equal segments (all if fewer)."""
        n = min(total, rng.randint(self.min_frames, self.max_frames))
        edges = np.linspace(0, total, n + 1)
        return sorted({min(total - 1, int(rng.uniform(edges[k], edges[k + 1]))) for k in range(n)})

    def sample(self, rng: random.Random) -> Clip:
        """A random expression's clip."""
        expression = rng.choice(self.expressions)
        return self.clip(expression, self.uniform_indices(len(expression.frames), rng))


__all__ = ["Expression", "RevosClips"]
