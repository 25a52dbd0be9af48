"""Shared fixtures. Synthetic videos are written once per session and cached by their parameters."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from vrshq.synthetic import SyntheticSpec, write_frame_folder, write_video

# --- synthetic videos ------------------------------------------------------------------

MakeVideo = Callable[..., Path]


@pytest.fixture(scope="session")
def make_video(tmp_path_factory: pytest.TempPathFactory) -> MakeVideo:
    """make_video(ext="mp4", codec=None, options=None, **SyntheticSpec fields) -> cached path.

    ext "png"/"jpg" writes a frame folder instead of a video file.
    """
    root = tmp_path_factory.mktemp("synthetic")
    cache: dict[str, Path] = {}

    def make(
        ext: str = "mp4",
        codec: str | None = None,
        options: dict[str, str] | None = None,
        **spec_fields: Any,
    ) -> Path:
        key = json.dumps([ext, codec, options, spec_fields], sort_keys=True)
        if key not in cache:
            spec = SyntheticSpec(**spec_fields)
            name = f"v{len(cache):03d}"
            if ext in ("png", "jpg"):
                cache[key] = write_frame_folder(spec, root / name, ext=ext)
            else:
                cache[key] = write_video(spec, root / f"{name}.{ext}", codec=codec, options=options)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def synthetic_spec() -> SyntheticSpec:
    """The default scene: 40 frames, 160x120, 10 fps, two objects."""
    return SyntheticSpec(num_frames=40, width=160, height=120, fps=10.0)


@pytest.fixture(scope="session")
def synthetic_mp4(make_video: MakeVideo) -> Path:
    """The default scene as an H.264 mp4."""
    return make_video("mp4", num_frames=40, width=160, height=120, fps=10.0)


@pytest.fixture(scope="session")
def synthetic_frame_folder(make_video: MakeVideo) -> Path:
    """The default scene as a folder of PNG frames 00000.png ..."""
    return make_video("png", num_frames=40, width=160, height=120, fps=10.0)



# --- CUDA tests -------------------------------------------------------------------------
# Tests marked ``cuda`` run on a CUDA GPU and are skipped without one. VRSHQ_CUDA_TEST_DEVICE=cpu
# runs them on the CPU instead (scripts/gpu_check.sh --dry-run does, so they are exercised in
# every suite run through tests/test_gpu_check.py); any other value names the CUDA device.
CUDA_TEST_DEVICE_ENV = "VRSHQ_CUDA_TEST_DEVICE"


def cuda_test_device() -> torch.device:
    """The device the ``cuda`` tests run on: $VRSHQ_CUDA_TEST_DEVICE, else cuda."""
    return torch.device(os.environ.get(CUDA_TEST_DEVICE_ENV) or "cuda")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if cuda_test_device().type != "cuda" or torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (scripts/gpu_check.sh runs it; its --dry-run "
                                   f"on the CPU with {CUDA_TEST_DEVICE_ENV}=cpu)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


# One torch thread: the tiny models gain nothing from more, and on a 2-core machine shared with
# other work (or a subprocess of the tests), oversubscribed OpenMP threads run many times slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

pytest_plugins = ["tests.engine_fixtures", "tests.backend_fixtures", "tests.ls_fixtures"]
