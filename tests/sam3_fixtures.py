"""A session-wide tiny SAM 3 folder (the layout `vrshq tiny-models` writes as sam3/), offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# the tiny model is built locally; nothing may reach the Hub (nor try its cv-utils kernel)
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_sam3_dir(tmp_path_factory) -> Path:
    """<dir> with <dir>/sam3/ holding a tiny random SAM 3 in the release layout."""
    from vrshq.model.sam3_tiny import write_tiny_sam3

    root = tmp_path_factory.mktemp("sam3_models")
    write_tiny_sam3(root / "sam3", seed=0)
    return root


def load_sam3_plugin(model_dir: Path | str):
    """The sam3 plugin loaded on the CPU from ``model_dir`` (a folder with ``sam3/``)."""
    from vrshq.plugins.base import PluginConfig
    from vrshq.plugins.sam3_plugin import Sam3Plugin

    plugin = Sam3Plugin()
    plugin.load(PluginConfig(model_dir=str(model_dir), device="cpu"))
    return plugin


def assert_tracks_equal_reference(tracks, ref) -> None:
    """Each instance's frames and masks equal the reference loop's ``{frame: {sam3_id: (mask, score)}}``."""
    import numpy as np

    for t in tracks:
        sam3_id = t.details["sam3_instance"]
        ref_frames = sorted(f for f, per in ref.items() if sam3_id in per)
        assert t.track.frames() == ref_frames
        for f in ref_frames:
            np.testing.assert_array_equal(t.track.mask(f), ref[f][sam3_id][0])
