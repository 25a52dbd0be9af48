"""The SAM-2 part of VRS-HQ: official settings, and weights under model.visual_model.* load strictly."""

from __future__ import annotations

import pytest
import torch

from vrshq.errors import ModelError
from vrshq.model.sam2_vrshq import (
    PREFIX,
    build_vrshq_sam2,
    load_visual_model,
    split_visual_model,
    with_prefix,
)


@pytest.fixture(scope="module")
def tiny_vrshq_sam2(tiny_sam2_files):
    config, checkpoint = tiny_sam2_files
    return build_vrshq_sam2(config, checkpoint)


def test_official_settings_are_applied(tiny_vrshq_sam2):
    m = tiny_vrshq_sam2
    assert m.multimask_output_in_sam is False
    assert m.multimask_output_for_tracking is False
    assert m.binarize_mask_from_pts_for_mem_enc is True
    assert m.use_mask_input_as_output_without_sam is True


def test_packaged_hiera_l_is_sam2_point_0():
    # The packaged 2.0 config (not 2.1): no no_obj_embed_spatial, the key that breaks 2.1/2.0 mixes.
    from vrshq.engine.sam2_loader import load_config
    from vrshq.model.sam2_vrshq import PACKAGED_CONFIG

    cfg = load_config(PACKAGED_CONFIG)
    assert cfg.model.image_encoder.trunk.embed_dim == 144
    assert list(cfg.model.image_encoder.trunk.stages) == [2, 6, 36, 4]
    assert not cfg.model.get("no_obj_embed_spatial", False)


def test_visual_model_round_trip(tiny_vrshq_sam2, tiny_sam2_files):
    state = with_prefix(tiny_vrshq_sam2.state_dict())
    state["model.text_hidden_fcs.0.0.weight"] = torch.zeros(2, 2)
    sam2, rest = split_visual_model(state)
    assert list(rest) == ["model.text_hidden_fcs.0.0.weight"]
    assert all(k.startswith(PREFIX) for k in state if k not in rest)
    fresh = build_vrshq_sam2(tiny_sam2_files[0])
    load_visual_model(fresh, sam2, "ckpt")
    for key, value in tiny_vrshq_sam2.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_missing_and_renamed_keys_are_named(tiny_vrshq_sam2, tiny_sam2_files):
    sam2 = dict(tiny_vrshq_sam2.state_dict())
    sam2["no_mem_embedding"] = sam2.pop("no_mem_embed")
    fresh = build_vrshq_sam2(tiny_sam2_files[0])
    with pytest.raises(ModelError, match=r"missing model\.visual_model\.no_mem_embed\b.*"
                                         r"unexpected model\.visual_model\.no_mem_embedding"):
        load_visual_model(fresh, sam2, "ckpt")
