"""The tiny SAM 3: written in the release's Hugging Face layout and loaded back offline."""

from __future__ import annotations

import json

import pytest

from tests.sam3_fixtures import tiny_sam3_dir  # noqa: F401 - fixture

pytest.importorskip("transformers")


def test_tiny_sam3_has_the_release_layout(tiny_sam3_dir):  # noqa: F811
    files = {p.name for p in (tiny_sam3_dir / "sam3").iterdir()}
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer_config.json",
            "vocab.json", "merges.txt"} <= files
    config = json.loads((tiny_sam3_dir / "sam3" / "config.json").read_text())
    assert config["model_type"] == "sam3_video"
    assert config["detector_config"]["vision_config"]["model_type"] == "sam3_vision_model"
    assert config["detector_config"]["vision_config"]["backbone_config"]["model_type"] == "sam3_vit_model"


def test_tiny_sam3_loads_back_offline(tiny_sam3_dir, monkeypatch):  # noqa: F811
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import Sam3TrackerVideoModel, Sam3VideoModel, Sam3VideoProcessor

    model = Sam3VideoModel.from_pretrained(tiny_sam3_dir / "sam3")
    processor = Sam3VideoProcessor.from_pretrained(tiny_sam3_dir / "sam3")
    # the same checkpoint serves the tracker (the release shares one file)
    tracker = Sam3TrackerVideoModel.from_pretrained(tiny_sam3_dir / "sam3")
    assert sum(p.numel() for p in model.parameters()) < 8_000_000  # 1.6 M of it: the 49408-token CLIP embedding
    assert tracker.config.memory_encoder_output_channels == 64
    # CLIP's own BPE: the ids of the released tokenizer ("a cat" -> BOS a cat EOS)
    assert processor.tokenizer("a cat").input_ids == [49406, 320, 2368, 49407]
