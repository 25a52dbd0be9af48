"""CLIP preprocessing as VRS-HQ feeds the Chat-UniVi tower at inference (brief-chatunivi.md §4.1).

Reproduces the slow (PIL) `CLIPImageProcessor` of transformers 4.31 with the
`openai/clip-vit-large-patch14` settings: shortest edge -> `size` with PIL bicubic (the long edge is
`int(size * long / short)`, truncated, as in `image_transforms.get_resize_output_image_size`),
centre crop to `crop_size` (top/left = (dim - crop) // 2), rescale by 1/255, normalise with the
OpenAI CLIP mean/std. No pad-to-square. Parameterised by `size` so a tiny tower can use it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

__all__ = ["CLIP_MEAN", "CLIP_STD", "resize_shortest_edge", "center_crop", "clip_preprocess", "clip_preprocess_batch"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _as_pil(image: np.ndarray | Image.Image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 array [H, W, 3], got {arr.dtype} {arr.shape}")
    return Image.fromarray(arr)


def resize_shortest_edge(image: Image.Image, size: int) -> Image.Image:
    """Bicubic resize so that the shorter side is `size` (long side truncated to int)."""
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if width <= height else (new_long, size)
    return image.resize((new_w, new_h), resample=Image.BICUBIC)


def center_crop(arr: np.ndarray, crop: int) -> np.ndarray:
    """Centre crop [H, W, C] to [crop, crop, C]; the image is at least `crop` on both sides here."""
    h, w = arr.shape[:2]
    if h < crop or w < crop:
        raise ValueError(f"image {h}x{w} is smaller than the crop {crop}")
    top, left = (h - crop) // 2, (w - crop) // 2
    return arr[top : top + crop, left : left + crop]


def clip_preprocess(
    image: np.ndarray | Image.Image,
    size: int = 224,
    crop_size: int | None = None,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> torch.Tensor:
    """RGB uint8 [H, W, 3] (or PIL) -> float32 tensor [3, crop, crop]."""
    crop = size if crop_size is None else crop_size
    resized = np.asarray(resize_shortest_edge(_as_pil(image), size))
    cropped = center_crop(resized, crop)
    x = (cropped.astype(np.float64) * (1 / 255)).astype(np.float32)
    x = (x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def clip_preprocess_batch(
    images: Sequence[np.ndarray | Image.Image], size: int = 224, crop_size: int | None = None
) -> torch.Tensor:
    """Stack `clip_preprocess` of each frame: [T, 3, crop, crop]."""
    return torch.stack([clip_preprocess(im, size, crop_size) for im in images])
