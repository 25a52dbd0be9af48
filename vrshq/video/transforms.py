"""Frame, prompt and mask geometry between the original video and the square SAM-2 input.

Two conventions exist. SAM2 stretches every frame to S x S, exactly as sam2 1.1.0 loads a
JPEG folder. VRSHQ follows the VRS-HQ / LISA pipeline: resize the longest side to S keeping
the aspect ratio, normalise on the 0..255 scale, then zero-pad bottom/right to S x S.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# sam2's loader normalises 0..1 pixels with the ImageNet statistics
_SAM2_MEAN = (0.485, 0.456, 0.406)
_SAM2_STD = (0.229, 0.224, 0.225)
# LISA / VRS-HQ normalise 0..255 pixels with SAM's statistics
_VRSHQ_MEAN = (123.675, 116.28, 103.53)
_VRSHQ_STD = (58.395, 57.12, 57.375)


class ResizeMode(str, Enum):
    """How frames are fitted into the square model input."""

    SAM2 = "sam2"
    VRSHQ = "vrshq"


def _channel_tensor(values: tuple[float, float, float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)[:, None, None]


def longest_side_shape(orig_h: int, orig_w: int, size: int) -> tuple[int, int]:
    """The (h, w) of ResizeLongestSide: the longer side becomes `size`, rounding half up."""
    scale = size * 1.0 / max(orig_h, orig_w)
    return int(orig_h * scale + 0.5), int(orig_w * scale + 0.5)


@dataclass(frozen=True)
class FrameTransform:
    """Maps frames, prompts and masks between video pixels and the S x S model input."""

    mode: ResizeMode
    image_size: int

    def __post_init__(self) -> None:
        # accept "sam2"/"vrshq" from configs; frozen, hence object.__setattr__
        object.__setattr__(self, "mode", ResizeMode(self.mode))
        if int(self.image_size) != self.image_size or self.image_size < 1:
            raise ValueError(f"image_size must be a positive integer, got {self.image_size!r}")
        object.__setattr__(self, "image_size", int(self.image_size))

    # -- geometry ------------------------------------------------------------------------

    def resized_hw(self, orig_h: int, orig_w: int) -> tuple[int, int]:
        """The size of the image region (without padding) inside the S x S input."""
        if orig_h < 1 or orig_w < 1:
            raise ValueError(f"frame size must be positive, got {orig_w}x{orig_h}")
        s = self.image_size
        if self.mode is ResizeMode.SAM2:
            return s, s
        return longest_side_shape(orig_h, orig_w, s)

    def _scale_xy(self, orig_hw: tuple[int, int]) -> tuple[float, float]:
        h, w = orig_hw
        new_h, new_w = self.resized_hw(h, w)
        # per-axis scale onto the (possibly rounded) resized region, as ResizeLongestSide does
        return new_w / w, new_h / h

    def _scale_coords(self, coords: object, orig_hw: tuple[int, int], last: int) -> torch.Tensor:
        out = torch.as_tensor(coords, dtype=torch.float32).clone()
        if out.shape[-1:] != (last,):
            raise ValueError(
                f"expected coordinates with last dimension {last}, got {tuple(out.shape)}"
            )
        if self.mode is ResizeMode.SAM2:
            # sam2's add_new_points_or_box: points / [W, H] * S, in this order, so that the
            # model gets the very same float32 coordinates (x * (S / W) can be one ulp off)
            h, w = orig_hw
            out[..., 0::2] /= w
            out[..., 1::2] /= h
            out *= self.image_size
            return out
        sx, sy = self._scale_xy(orig_hw)
        out[..., 0::2] *= sx
        out[..., 1::2] *= sy
        return out

    def box_to_model(self, box_xyxy: object, orig_hw: tuple[int, int]) -> torch.Tensor:
        """Boxes (..., 4) as x0, y0, x1, y1 in video pixels -> model-input pixels, float32."""
        return self._scale_coords(box_xyxy, orig_hw, 4)

    def points_to_model(self, points_xy: object, orig_hw: tuple[int, int]) -> torch.Tensor:
        """Points (..., 2) as x, y in video pixels -> model-input pixels, float32."""
        return self._scale_coords(points_xy, orig_hw, 2)

    # -- frames --------------------------------------------------------------------------

    def prepare(self, frame: np.ndarray) -> torch.Tensor:
        """An HxWx3 uint8 RGB frame -> the normalised (3, S, S) float32 model input."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 frame, got {frame.shape} {frame.dtype}")
        s = self.image_size
        image = Image.fromarray(frame)
        if self.mode is ResizeMode.SAM2:
            # sam2's _load_img_as_tensor: PIL's default resample, /255 in float64, then float32
            resized = np.array(image.resize((s, s)))
            x = torch.from_numpy(resized / 255.0).permute(2, 0, 1).to(torch.float32)
            x -= _channel_tensor(_SAM2_MEAN)
            x /= _channel_tensor(_SAM2_STD)
            return x.contiguous()
        h, w = self.resized_hw(frame.shape[0], frame.shape[1])
        # torchvision's resize of a PIL image is PIL's BILINEAR
        resized = np.array(image.resize((w, h), Image.BILINEAR))
        x = torch.from_numpy(resized).permute(2, 0, 1).to(torch.float32)
        x = (x - _channel_tensor(_VRSHQ_MEAN)) / _channel_tensor(_VRSHQ_STD)
        # pad after normalising: the padding is 0 in normalised units, as in LISA
        return F.pad(x, (0, s - w, 0, s - h)).contiguous()

    # -- masks ---------------------------------------------------------------------------

    def masks_to_original(self, logits: torch.Tensor, orig_hw: tuple[int, int]) -> torch.Tensor:
        """Mask logits [N, 1, h, w] covering the whole model input -> [N, 1, H, W] float32."""
        if logits.ndim != 4:
            raise ValueError(f"expected mask logits [N, 1, h, w], got {tuple(logits.shape)}")
        x = logits.to(torch.float32)
        h, w = orig_hw
        if self.mode is ResizeMode.SAM2:
            return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        s = self.image_size
        new_h, new_w = self.resized_hw(h, w)
        x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
        x = x[..., :new_h, :new_w]
        return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)

    def mask_to_model(self, mask: np.ndarray) -> torch.Tensor:
        """A bool HxW mask prompt -> a {0, 1} float32 [1, 1, S, S] mask, as sam2's add_new_mask."""
        m = torch.as_tensor(np.asarray(mask), dtype=torch.bool)
        if m.ndim != 2:
            raise ValueError(f"expected an HxW mask, got shape {tuple(m.shape)}")
        s = self.image_size
        x = m[None, None].float()
        new_h, new_w = self.resized_hw(*m.shape)
        if tuple(m.shape) != (new_h, new_w):
            x = F.interpolate(
                x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True
            )
            x = (x >= 0.5).float()
        if (new_h, new_w) != (s, s):
            x = F.pad(x, (0, s - new_w, 0, s - new_h))
        return x
