"""CLIP anchor frame: the frame that best matches the expression (TKS's sampling anchor).

Upstream ``model/VISA_multiseg_cliptree_bf16.py`` L303-312: CLIP ViT-L/14-336 scores every
frame against the expression, ``prob_per_frame = softmax(logits_per_image, dim=0)`` (over
frames) and the anchor is its argmax. Upstream uses transformers' ``CLIPModel`` on
``openai/clip-vit-large-patch14-336``; here the same OpenAI weights come through open_clip
(``ViT-L-14-336`` / ``openai``), or any open_clip model, e.g. the tiny random one for tests.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vrshq.errors import ModelError

DEFAULT_MODEL = "ViT-L-14-336"
DEFAULT_PRETRAINED = "openai"

TINY_CLIP_NAME = "vrshq-tiny-clip"
# A ~1.8 M-parameter CLIP for tests: ViT 64 px / patch 16 / width 64 / 2 layers; the text tower
# keeps open_clip's default tokenizer (49408 tokens, context 77) so get_tokenizer works as is.
TINY_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def register_model_config(config: str | Path | dict[str, Any], name: str | None = None,
                          directory: str | Path | None = None) -> str:
    """Add an open_clip model config (a JSON file, or a dict written to ``directory``).

    Returns the model name ``open_clip.create_model`` then accepts (the JSON file's stem).
    """
    import open_clip

    if isinstance(config, dict):
        if name is None or directory is None:
            raise ValueError("a config dict needs a name and a directory to write it to")
        path = Path(directory) / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config, indent=2))
    else:
        path = Path(config)
        if not path.is_file():
            raise ModelError(f"{path}: open_clip model config not found")
        if name is not None and name != path.stem:
            raise ValueError(f"open_clip names a config file after its stem ({path.stem!r})")
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: not a readable open_clip config ({exc})") from None
    if not all(k in cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
        raise ModelError(f"{path}: an open_clip config needs embed_dim, vision_cfg and text_cfg")
    open_clip.add_model_config(path)
    return path.stem


def write_tiny_open_clip(out_dir: str | Path, seed: int = 0,
                         name: str = TINY_CLIP_NAME) -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.pt`` (open_clip's checkpoint format) of a random CLIP."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    register_model_config(TINY_CLIP_CONFIG, name, out)
    model, _ = _random_model(name, seed)
    checkpoint = out / f"{name}.pt"
    # open_clip_train's checkpoint layout; open_clip.load_checkpoint reads "state_dict"
    torch.save({"epoch": 0, "name": name, "state_dict": model.state_dict()}, checkpoint)
    return out / f"{name}.json", checkpoint


def tiny_open_clip(seed: int = 0, name: str = TINY_CLIP_NAME):
    """A randomly initialised tiny open_clip model: ``(model, preprocess, tokenizer)``."""
    import open_clip

    with tempfile.TemporaryDirectory() as tmp:
        register_model_config(TINY_CLIP_CONFIG, name, tmp)  # open_clip keeps it once read
        model, preprocess = _random_model(name, seed)
    return model.eval(), preprocess, open_clip.get_tokenizer(name)


def _random_model(name: str, seed: int) -> tuple[torch.nn.Module, Callable]:
    """open_clip's own random init (seeded, global RNG untouched) and its eval transform."""
    import open_clip

    root = logging.getLogger()
    level = root.level
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # open_clip warns that a model built without weights is random: here that is the point.
        root.setLevel(logging.ERROR)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
        finally:
            root.setLevel(level)
    return model, preprocess


class AnchorScorer:
    """Per-frame CLIP probabilities of matching a text, and the anchor frame (their argmax)."""

    def __init__(self, model_name: str = DEFAULT_MODEL, pretrained: str | None = DEFAULT_PRETRAINED,
                 *, model_config: str | Path | None = None, device: str | torch.device = "cpu",
                 precision: str = "fp32", batch_size: int = 16, cache_dir: str | None = None) -> None:
        """Load ``model_name`` with ``pretrained`` (an open_clip tag or a checkpoint file).

        ``model_config`` (a JSON file) registers a custom architecture first; its stem must
        be ``model_name``. Without ``pretrained`` the weights stay random.
        """
        import open_clip

        if model_config is not None:
            registered = register_model_config(model_config)
            if registered != model_name:
                raise ValueError(f"model_config defines {registered!r}, not {model_name!r}")
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained, device=device, precision=precision,
                cache_dir=cache_dir, require_pretrained=pretrained is not None)
            tokenizer = open_clip.get_tokenizer(model_name)
        except (RuntimeError, ValueError, OSError) as exc:
            raise ModelError(f"cannot load open_clip model {model_name!r} "
                             f"(pretrained={pretrained!r}): {exc}") from None
        self._setup(model, preprocess, tokenizer, device, batch_size)

    @classmethod
    def from_model(cls, model: torch.nn.Module, preprocess: Callable[[Image.Image], torch.Tensor],
                   tokenizer: Callable[..., torch.Tensor], *, device: str | torch.device | None = None,
                   batch_size: int = 16) -> "AnchorScorer":
        """Wrap an existing open_clip model, its eval transform and tokenizer."""
        self = cls.__new__(cls)
        if device is None:
            device = next(model.parameters()).device
        self._setup(model, preprocess, tokenizer, device, batch_size)
        return self

    def _setup(self, model, preprocess, tokenizer, device, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.batch_size = int(batch_size)

    @torch.inference_mode()
    def image_embeddings(self, frames: Iterable[np.ndarray]) -> torch.Tensor:
        """Normalised CLIP image embeddings [T, D] (CPU, float32), frames fed in batches.

        Computed once per video and shared by all its prompts.
        """
        dtype = next(self.model.parameters()).dtype
        out: list[torch.Tensor] = []
        batch: list[torch.Tensor] = []

        def flush() -> None:
            images = torch.stack(batch).to(self.device, dtype=dtype)
            out.append(self.model.encode_image(images, normalize=True).float().cpu())
            batch.clear()

        with torch.inference_mode():
            for frame in frames:
                frame = np.asarray(frame)
                if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                    raise ValueError(f"expected HxWx3 uint8 frames, got {frame.shape} {frame.dtype}")
                batch.append(self.preprocess(Image.fromarray(frame)))
                if len(batch) == self.batch_size:
                    flush()
            if batch:
                flush()
        if not out:
            raise ValueError("no frames to score")
        return torch.cat(out)

    def logits_from_embeddings(self, image_embeddings: torch.Tensor, text: str) -> np.ndarray:
        """``logits_per_image`` [T] = logit_scale * cos(image_t, text) for precomputed images."""
        with torch.inference_mode():
            tokens = self.tokenizer([text]).to(self.device)
            text_feat = self.model.encode_text(tokens, normalize=True).float().cpu()  # [1, D]
            scale = self.model.logit_scale.exp().float().cpu()
            return (scale * image_embeddings @ text_feat.t())[:, 0].numpy()

    def frame_logits(self, frames: Iterable[np.ndarray], text: str) -> np.ndarray:
        """``logits_per_image`` [T] = logit_scale * cos(image_t, text), frames fed in batches."""
        return self.logits_from_embeddings(self.image_embeddings(frames), text)

    def frame_probabilities(self, frames: Iterable[np.ndarray], text: str) -> np.ndarray:
        """Softmax over frames of ``logits_per_image`` (upstream's ``prob_per_frame``), [T]."""
        logits = torch.from_numpy(self.frame_logits(frames, text))
        return torch.softmax(logits.double(), dim=0).numpy()

    def anchor(self, frames: Iterable[np.ndarray], text: str) -> int:
        """The index of the most probable frame (ties: the first)."""
        return int(np.argmax(self.frame_probabilities(frames, text)))
