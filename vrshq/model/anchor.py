"""CLIP anchor frame: the frame that best matches the expression (TKS's sampling anchor).

Upstream ``model/VISA_multiseg_cliptree_bf16.py`` L177-180 and L303-308: transformers'
``CLIPModel`` on ``openai/clip-vit-large-patch14-336``, cast to the run's dtype (bf16), scores
every frame against the expression in one call; ``prob_per_frame =
logits_per_image.softmax(dim=0)`` (over frames, in bf16) and the anchor is its ``torch.argmax``
(the first maximum wins a tie).

We build the same network with open_clip rather than transformers: ``vrshq download`` and
existing model folders hold open_clip's copy of the OpenAI weights, and open_clip's
``ViT-L-14-336-quickgelu`` is the architecture those weights were trained with (QuickGELU, as
``CLIPModel``'s config says); plain ``ViT-L-14-336`` would build nn.GELU and only warn.
``tests/test_anchor.py`` proves a tiny random CLIP gives the same logits in both libraries.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from vrshq.errors import ModelError
from vrshq.model.chatunivi.image_processing import CLIP_MEAN, CLIP_STD, clip_preprocess
from vrshq.model.tda import first_argmax

DEFAULT_MODEL = "ViT-L-14-336-quickgelu"
DEFAULT_PRETRAINED = "openai"
AnchorPrecision = Literal["fp32", "bf16"]
_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}

TINY_CLIP_NAME = "vrshq-tiny-clip"
# A ~1.8 M-parameter CLIP for tests: ViT 64 px / patch 16 / width 64 / 2 layers; the text tower
# keeps open_clip's default tokenizer (49408 tokens, context 77) so get_tokenizer works as is.
# QuickGELU like the OpenAI weights, so tests run the activation the released anchor runs.
TINY_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "quick_gelu": True,
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
    """A randomly initialised tiny open_clip model: ``(model, preprocess, tokenizer)``.

    ``preprocess`` is the release's (``release_preprocess``), as ``AnchorScorer`` uses it.
    """
    import open_clip

    with tempfile.TemporaryDirectory() as tmp:
        register_model_config(TINY_CLIP_CONFIG, name, tmp)  # open_clip keeps it once read
        model, _ = _random_model(name, seed)
    return model.eval(), release_preprocess(model), open_clip.get_tokenizer(name)


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


def release_preprocess(model: torch.nn.Module) -> Callable[[Image.Image], torch.Tensor]:
    """The release's frame preprocessing for ``model``: transformers' CLIPImageProcessor.

    ``dataset/rvos_clip_eval_dataset.py`` L266/L348 runs ``CLIPProcessor`` of
    clip-vit-large-patch14-336: shortest edge bicubic to 336, centre crop with the top-left at
    ``(dim - crop) // 2``, rescale, OpenAI mean/std. open_clip's own transform rounds the crop
    offset (torchvision) and so sits one pixel off on some sizes; ``clip_preprocess`` is the
    processor's math, proven equal to it in the tests.
    """
    size = model.visual.image_size
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    cfg = getattr(model.visual, "preprocess_cfg", None) or {}
    mean, std = tuple(cfg.get("mean", CLIP_MEAN)), tuple(cfg.get("std", CLIP_STD))

    def preprocess(image: Image.Image) -> torch.Tensor:
        return clip_preprocess(image, size=size, mean=mean, std=std)

    return preprocess


class AnchorScorer:
    """Per-frame CLIP probabilities of matching a text, and the anchor frame (their argmax).

    ``precision`` is the dtype of the whole computation, as in the release: ``bf16`` casts the
    weights and computes embeddings, logits and the softmax over frames in bf16 (its ties are
    the release's ties); ``fp32`` does it all in float32.
    """

    def __init__(self, model_name: str = DEFAULT_MODEL, pretrained: str | None = DEFAULT_PRETRAINED,
                 *, model_config: str | Path | None = None, device: str | torch.device = "cpu",
                 precision: AnchorPrecision = "fp32", batch_size: int = 1,
                 cache_dir: str | None = None) -> None:
        """Load ``model_name`` with ``pretrained`` (an open_clip tag or a checkpoint file).

        ``model_config`` (a JSON file) registers a custom architecture first; its stem must
        be ``model_name``. Without ``pretrained`` the weights stay random.
        """
        import open_clip

        if model_config is not None:
            registered = register_model_config(model_config)
            if registered != model_name:
                raise ValueError(f"model_config defines {registered!r}, not {model_name!r}")
        _check_precision(precision)
        try:
            model = open_clip.create_model(
                model_name, pretrained=pretrained, device=device, cache_dir=cache_dir,
                require_pretrained=pretrained is not None)
            tokenizer = open_clip.get_tokenizer(model_name)
        except (RuntimeError, ValueError, OSError) as exc:
            raise ModelError(f"cannot load open_clip model {model_name!r} "
                             f"(pretrained={pretrained!r}): {exc}") from None
        self._setup(model, release_preprocess(model), tokenizer, device, batch_size, precision)

    @classmethod
    def from_model(cls, model: torch.nn.Module, preprocess: Callable[[Image.Image], torch.Tensor],
                   tokenizer: Callable[..., torch.Tensor], *, device: str | torch.device | None = None,
                   batch_size: int = 1, precision: AnchorPrecision = "fp32") -> "AnchorScorer":
        """Wrap an existing open_clip model, its eval transform and tokenizer.

        The model is moved and cast in place (``precision``): pass a copy to keep the original.
        """
        self = cls.__new__(cls)
        if device is None:
            device = next(model.parameters()).device
        _check_precision(precision)
        self._setup(model, preprocess, tokenizer, device, batch_size, precision)
        return self

    def _setup(self, model, preprocess, tokenizer, device, batch_size: int,
               precision: AnchorPrecision) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.device = torch.device(device)
        self.precision = precision
        self.dtype = _DTYPES[precision]
        # Weights cast, not autocast: the release calls CLIPModel.to(device, bf16).
        self.model = model.to(self.device, self.dtype).eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.batch_size = int(batch_size)

    @torch.inference_mode()
    def image_embeddings(self, frames: Iterable[np.ndarray]) -> torch.Tensor:
        """L2-normalised CLIP image embeddings [T, D] (CPU, in the scorer's dtype).

        Computed once per video and shared by all its prompts. With the default
        ``batch_size=1`` every frame runs through the very same tensor shapes, so a frame's
        embedding never depends on its neighbours in a batch (CPU kernels pick their blocking,
        and so their rounding, by shape): identical frames score identically on any CPU and
        the tie rule, not float noise, decides between them. A larger batch is faster on a
        GPU and may differ in the last bits.
        """
        out: list[torch.Tensor] = []
        batch: list[torch.Tensor] = []

        def flush() -> None:
            images = torch.stack(batch).to(self.device, dtype=self.dtype)
            out.append(_normalise(self.model.encode_image(images)).cpu())
            batch.clear()

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

    @torch.inference_mode()
    def logits_from_embeddings(self, image_embeddings: torch.Tensor, text: str) -> torch.Tensor:
        """``logits_per_image`` [T] for precomputed image embeddings, in the scorer's dtype.

        transformers' ``CLIPModel.forward`` order: ``(text @ image.T) * logit_scale.exp()``.
        """
        tokens = self.tokenizer([text]).to(self.device)
        text_feat = _normalise(self.model.encode_text(tokens)).cpu()  # [1, D]
        scale = self.model.logit_scale.exp().cpu()
        return (text_feat @ image_embeddings.to(text_feat.dtype).t() * scale)[0]

    def probabilities_from_embeddings(self, image_embeddings: torch.Tensor,
                                      text: str) -> torch.Tensor:
        """``prob_per_frame``: softmax over frames of ``logits_per_image`` [T], scorer's dtype."""
        return torch.softmax(self.logits_from_embeddings(image_embeddings, text), dim=0)

    def anchor_from_embeddings(self, image_embeddings: torch.Tensor, text: str) -> int:
        """The anchor frame: the first maximum of ``prob_per_frame`` (the release's argmax)."""
        return first_argmax(self.probabilities_from_embeddings(image_embeddings, text))

    @torch.inference_mode()
    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised CLIP text embeddings [N, D] (CPU, float32; the tower runs in the scorer's dtype).

        Normalised in float32, not the scorer's dtype: the backend's label rule compares cosine
        similarities against a threshold, and bf16 would round them to steps of about 0.004.
        """
        if not texts:
            raise ValueError("no texts to embed")
        tokens = self.tokenizer(list(texts)).to(self.device)
        return _normalise(self.model.encode_text(tokens).float()).cpu()

    def text_similarities(self, texts: list[str], others: list[str]) -> torch.Tensor:
        """Cosine similarity [N, M] of each text's CLIP text embedding to each of ``others``'."""
        return self.text_embeddings(texts) @ self.text_embeddings(others).t()

    def frame_logits(self, frames: Iterable[np.ndarray], text: str) -> np.ndarray:
        """``logits_per_image`` [T] as float32, frames fed in batches."""
        return self.logits_from_embeddings(self.image_embeddings(frames), text).float().numpy()

    def frame_probabilities(self, frames: Iterable[np.ndarray], text: str) -> np.ndarray:
        """Softmax over frames of ``logits_per_image`` (upstream's ``prob_per_frame``), [T]."""
        embeddings = self.image_embeddings(frames)
        return self.probabilities_from_embeddings(embeddings, text).float().numpy()

    def anchor(self, frames: Iterable[np.ndarray], text: str) -> int:
        """The index of the most probable frame (ties: the first)."""
        return self.anchor_from_embeddings(self.image_embeddings(frames), text)


def _normalise(features: torch.Tensor) -> torch.Tensor:
    # transformers' CLIPModel divides by the L2 norm in the embeddings' own dtype (bf16 there).
    return features / features.norm(p=2, dim=-1, keepdim=True)


def _check_precision(precision: str) -> None:
    if precision not in _DTYPES:
        raise ValueError(f"anchor precision must be one of {', '.join(_DTYPES)}, not {precision!r}")
