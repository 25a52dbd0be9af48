"""Model-input geometry: bit-exact SAM-2 frame loading, VRS-HQ letterboxing, mask round trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vrshq.video import FrameTransform, ResizeMode, open_video
from vrshq.video.transforms import longest_side_shape

MODES = [ResizeMode.SAM2, ResizeMode.VRSHQ]
SIZES = [(160, 96), (96, 160), (120, 160)]  # (H, W)


def blob(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    # a wobbly disc, so the shape is not aligned with either resize grid
    angle = np.arctan2(yy - cy, xx - cx)
    radius = r * (1 + 0.2 * np.sin(3 * angle))
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def round_trip(t: FrameTransform, mask: np.ndarray, low_res: bool = False) -> np.ndarray:
    model_mask = t.mask_to_model(mask)
    logits = (model_mask - 0.5) * 20.0
    if low_res:  # SAM-2 predicts at S/4
        logits = F.avg_pool2d(logits, 4)
    return (t.masks_to_original(logits, mask.shape)[0, 0] > 0).numpy()


# --- frames ----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(120, 160), (160, 96)])
def test_sam2_mode_is_bit_identical_to_sam2_loader(make_video, size):
    from sam2.utils.misc import load_video_frames

    h, w = size
    folder = make_video("jpg", num_frames=4, width=w, height=h)
    images, video_h, video_w = load_video_frames(
        str(folder), 64, offload_video_to_cpu=True, compute_device=torch.device("cpu")
    )
    t = FrameTransform(ResizeMode.SAM2, 64)
    reader = open_video(folder)
    ours = torch.stack([t.prepare(frame) for _, frame in reader.iter_frames()])
    assert (video_h, video_w) == (reader.height, reader.width)
    assert ours.dtype == images.dtype == torch.float32
    assert torch.equal(ours, images)


def _vrshq_reference(frame: np.ndarray, s: int) -> torch.Tensor:
    """LISA's pipeline written out with torchvision: ResizeLongestSide, normalise, pad."""
    from torchvision.transforms.functional import resize, to_pil_image

    h, w = longest_side_shape(frame.shape[0], frame.shape[1], s)
    resized = np.array(resize(to_pil_image(frame), [h, w]))
    x = torch.from_numpy(resized).permute(2, 0, 1).contiguous()
    mean = torch.Tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)
    std = torch.Tensor([58.395, 57.12, 57.375]).view(-1, 1, 1)
    x = (x - mean) / std
    return F.pad(x, (0, s - w, 0, s - h))


@pytest.mark.parametrize("size", SIZES)
def test_vrshq_mode_matches_lisa_preprocessing(size):
    h, w = size
    frame = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    t = FrameTransform(ResizeMode.VRSHQ, 64)
    x = t.prepare(frame)
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    assert torch.equal(x, _vrshq_reference(frame, 64))
    rh, rw = t.resized_hw(h, w)
    assert max(rh, rw) == 64
    assert torch.all(x[:, rh:, :] == 0) and torch.all(x[:, :, rw:] == 0)


def test_resized_hw():
    assert FrameTransform("sam2", 1024).resized_hw(720, 1280) == (1024, 1024)
    vrshq = FrameTransform("vrshq", 1024)
    assert vrshq.resized_hw(720, 1280) == (576, 1024)
    assert vrshq.resized_hw(160, 96) == (1024, 614)  # 614.4 rounds down
    assert FrameTransform("vrshq", 64).resized_hw(160, 96) == (64, 38)  # 38.4
    assert FrameTransform("vrshq", 64).resized_hw(96, 157) == (39, 64)  # 39.13
    assert FrameTransform("vrshq", 10).resized_hw(5, 20) == (3, 10)  # 2.5 rounds half up


def test_constructor_validation():
    assert FrameTransform("vrshq", 64).mode is ResizeMode.VRSHQ
    with pytest.raises(ValueError):
        FrameTransform("stretch", 64)
    with pytest.raises(ValueError):
        FrameTransform(ResizeMode.SAM2, 0)
    with pytest.raises(ValueError):
        FrameTransform(ResizeMode.SAM2, 64).prepare(np.zeros((4, 4), dtype=np.uint8))


# --- prompts ---------------------------------------------------------------------------


def test_coordinates_to_model():
    sam2 = FrameTransform(ResizeMode.SAM2, 1024)
    box = sam2.box_to_model([[64, 36, 1280, 720]], (720, 1280))
    assert torch.allclose(box, torch.tensor([[51.2, 51.2, 1024.0, 1024.0]]))
    pts = sam2.points_to_model(np.array([[640.0, 360.0]]), (720, 1280))
    assert torch.allclose(pts, torch.tensor([[512.0, 512.0]]))

    vrshq = FrameTransform(ResizeMode.VRSHQ, 1024)
    box = vrshq.box_to_model(torch.tensor([64.0, 36.0, 1280.0, 720.0]), (720, 1280))
    assert torch.allclose(box, torch.tensor([51.2, 28.8, 1024.0, 576.0]))
    pts = vrshq.points_to_model([[[10.0, 20.0], [1280.0, 720.0]]], (720, 1280))
    assert pts.shape == (1, 2, 2) and pts.dtype == torch.float32
    assert torch.allclose(pts, torch.tensor([[[8.0, 16.0], [1024.0, 576.0]]]))
    with pytest.raises(ValueError):
        vrshq.box_to_model([1.0, 2.0, 3.0], (720, 1280))


def test_inputs_are_not_modified():
    box = torch.tensor([1.0, 2.0, 3.0, 4.0])
    FrameTransform(ResizeMode.SAM2, 1024).box_to_model(box, (100, 100))
    assert box.tolist() == [1.0, 2.0, 3.0, 4.0]


# --- masks -----------------------------------------------------------------------------


def test_sam2_mask_to_model_matches_add_new_mask():
    mask = blob(120, 160, 60, 80, 30)
    t = FrameTransform(ResizeMode.SAM2, 64)
    # the lines of SAM2VideoPredictor.add_new_mask
    x = torch.tensor(mask, dtype=torch.bool)[None, None].float()
    x = F.interpolate(x, size=(64, 64), align_corners=False, mode="bilinear", antialias=True)
    expected = (x >= 0.5).float()
    assert torch.equal(t.mask_to_model(mask), expected)
    square = np.zeros((64, 64), dtype=bool)
    square[10:20, 5:9] = True
    assert torch.equal(t.mask_to_model(square)[0, 0], torch.from_numpy(square).float())


def test_vrshq_mask_to_model_is_letterboxed():
    mask = np.ones((96, 160), dtype=bool)
    t = FrameTransform(ResizeMode.VRSHQ, 64)
    x = t.mask_to_model(mask)
    h, w = t.resized_hw(96, 160)
    assert x.shape == (1, 1, 64, 64) and x.dtype == torch.float32
    assert torch.all(x[..., :h, :w] == 1) and torch.all(x[..., h:, :] == 0)


def test_masks_to_original_shapes_and_formulas():
    logits = torch.randn(3, 1, 16, 16, dtype=torch.float16)
    sam2 = FrameTransform(ResizeMode.SAM2, 64)
    out = sam2.masks_to_original(logits, (120, 160))
    assert out.shape == (3, 1, 120, 160) and out.dtype == torch.float32
    expected = F.interpolate(logits.float(), size=(120, 160), mode="bilinear", align_corners=False)
    assert torch.equal(out, expected)

    vrshq = FrameTransform(ResizeMode.VRSHQ, 64)
    out = vrshq.masks_to_original(logits, (120, 160))
    x = F.interpolate(logits.float(), size=(64, 64), mode="bilinear", align_corners=False)
    x = F.interpolate(x[..., :48, :64], size=(120, 160), mode="bilinear", align_corners=False)
    assert torch.equal(out, x)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", [(160, 96), (96, 160)])
@pytest.mark.parametrize("image_size", [64, 256])  # down- and upsampling
def test_mask_round_trip(mode, size, image_size):
    h, w = size
    t = FrameTransform(mode, image_size)
    mask = blob(h, w, h * 0.45, w * 0.55, min(h, w) * 0.3)
    assert iou(round_trip(t, mask), mask) >= 0.95
    assert iou(round_trip(t, mask, low_res=True), mask) >= 0.9

    empty = np.zeros((h, w), dtype=bool)
    assert not torch.any(t.mask_to_model(empty))
    back = t.masks_to_original((t.mask_to_model(empty) - 0.5) * 20, (h, w))
    assert torch.all(back < 0)
    assert not round_trip(t, empty, low_res=True).any()

    # a mask along the bottom-right border, where VRSHQ's padding begins
    edge = np.zeros((h, w), dtype=bool)
    edge[-12:, w // 3 :] = True
    edge[:, -10:] = True
    back = round_trip(t, edge)
    assert iou(back, edge) >= 0.9
    assert back[-1, -1] and back[-1, w // 2] and back[0, -1]
