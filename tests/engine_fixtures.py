"""Fixtures for the engine tests: tiny sam2 weights and a JPEG clip with ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vrshq.engine.config import EngineConfig
from vrshq.engine.sam2_loader import build_model
from vrshq.engine.tiny import write_tiny_sam2

# sam2's predictor cannot fill holes here: its labelling kernel is its CUDA extension (missing,
# and CUDA-only anyway; the reference runs on CPU), so it would skip the step with a warning.
# Tests comparing the engine with it therefore run both sides with fill_hole_area=0, and hole
# filling is tested on its own (tests/test_hole_filling.py).
PARITY = EngineConfig(fill_hole_area=0)


@pytest.fixture(scope="session")
def tiny_sam2_files(tmp_path_factory) -> tuple[Path, Path]:
    """config.yaml and model.pt of the tiny random sam2."""
    return write_tiny_sam2(tmp_path_factory.mktemp("models") / "sam2", preset="tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_sam2_predictor(tiny_sam2_files):
    """sam2's own SAM2VideoPredictor on the tiny weights (our engine uses the same instance)."""
    config, checkpoint = tiny_sam2_files
    predictor = build_model(config, checkpoint, device="cpu", predictor=True)
    predictor.fill_hole_area = 0  # already sam2's class default; see PARITY
    return predictor


@pytest.fixture(scope="session")
def jpeg_clip(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A 24-frame synthetic clip as a JPEG folder sam2 can read, and its label maps."""
    from vrshq.synthetic import SyntheticSpec, ground_truth, write_frame_folder

    spec = SyntheticSpec(num_frames=24, width=160, height=120, fps=10.0, num_objects=2, seed=3)
    folder = tmp_path_factory.mktemp("clip") / "frames"
    write_frame_folder(spec, folder, ext="jpg")
    return folder, ground_truth(spec)


@pytest.fixture(scope="module")
def cache(tiny_sam2_predictor, jpeg_clip):
    """A fp32 feature cache of the tiny sam2 over ``jpeg_clip`` in VRS-HQ's resize mode."""
    from vrshq.engine.features import FeatureCache
    from vrshq.video.reader import open_video
    from vrshq.video.transforms import FrameTransform, ResizeMode

    folder, _ = jpeg_clip
    model = tiny_sam2_predictor
    reader = open_video(folder)
    fc = FeatureCache(model, reader, FrameTransform(ResizeMode.VRSHQ, int(model.image_size)),
                      EngineConfig(device="cpu"))
    yield fc
    fc.close()
    reader.close()
