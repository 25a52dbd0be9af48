"""The sam3 plugin's precision plans: fp32 on a CPU, bf16 on CUDA, a plan the device cannot run refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.sam3_fixtures import tiny_sam3_dir  # noqa: F401 - fixture
from vrshq.engine.config import EngineConfig
from vrshq.errors import ModelError
from vrshq.plugins.base import ObjectPrompt, PluginConfig

pytest.importorskip("transformers")


@pytest.mark.parametrize("precision, dtype", [("auto", torch.float32), ("fp32", torch.float32)])
def test_a_cpu_runs_sam3_in_float32(precision, dtype):
    from vrshq.plugins.sam3_plugin import sam3_dtype

    assert sam3_dtype(EngineConfig(device="cpu", precision=precision)) == dtype


def test_official_bf16_is_refused_on_a_cpu_before_loading(tiny_sam3_dir):  # noqa: F811
    from vrshq.plugins.sam3_plugin import Sam3Plugin, sam3_dtype

    with pytest.raises(ModelError, match=r"precision 'official' .*cannot run on a CPU: use --precision fp32"):
        sam3_dtype(EngineConfig(device="cpu", precision="official"))
    plugin = Sam3Plugin()
    with pytest.raises(ModelError, match="cannot run on a CPU"):
        plugin.load(PluginConfig(model_dir=str(tiny_sam3_dir), device="cpu", precision="official"))
    assert plugin.model is None


def test_the_loaded_models_follow_the_plan(tiny_sam3_dir, tmp_path):  # noqa: F811
    from vrshq.plugins.sam3_plugin import Sam3Plugin
    from vrshq.video.folder import FrameFolderReader
    from PIL import Image

    plugin = Sam3Plugin()
    plugin.load(PluginConfig(model_dir=str(tiny_sam3_dir), device="cpu", precision="fp32"))
    assert {p.dtype for p in plugin.model.parameters()} == {torch.float32}
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    video = FrameFolderReader(tmp_path)
    objects = plugin.predict(video, [ObjectPrompt(obj_id=1, text="cat", label="Cat")])
    assert objects
    from vrshq.plugins.base import Correction

    fixed = np.zeros((48, 64), bool)
    fixed[5:20, 5:30] = True
    plugin.correct(video, objects, [Correction(objects[0].obj_id, 1, fixed)])
    tracker, _ = plugin.tracker
    assert {p.dtype for p in tracker.parameters()} == {torch.float32}  # the tracker shares the plan


@pytest.mark.cuda
def test_sam3_runs_its_plan_on_the_cuda_test_device_and_corrects(tiny_sam3_dir, tmp_path):  # noqa: F811
    """On CUDA (scripts/gpu_check.sh): bf16 where the GPU has it; its --dry-run on the CPU: fp32."""
    from PIL import Image

    from tests.conftest import cuda_test_device
    from vrshq.plugins.base import Correction
    from vrshq.plugins.sam3_plugin import Sam3Plugin
    from vrshq.video.folder import FrameFolderReader

    device = cuda_test_device()
    want = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    video = FrameFolderReader(tmp_path)
    plugin = Sam3Plugin()
    plugin.load(PluginConfig(model_dir=str(tiny_sam3_dir), device=str(device), precision="auto"))
    weights = next(plugin.model.parameters())
    assert (weights.dtype, weights.device.type) == (want, device.type)
    objects = plugin.predict(video, [ObjectPrompt(obj_id=1, text="cat", label="Cat")])
    assert objects and all(o.track.frames() for o in objects)
    fixed = np.zeros((48, 64), bool)
    fixed[5:20, 5:30] = True
    corrected = plugin.correct(video, objects, [Correction(objects[0].obj_id, 1, fixed)])
    assert np.array_equal(corrected[0].track.mask(1), fixed)
    assert next(plugin.tracker[0].parameters()).dtype == want
