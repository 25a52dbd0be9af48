"""Deterministic, randomly initialised small sam2 models in sam2's own config and checkpoint format."""

from __future__ import annotations

from pathlib import Path

import torch

from vrshq.engine.sam2_loader import build_model, load_config

BASE_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"


def _resolution(size: int) -> list[str]:
    fs = size // 16
    return [
        f"++model.image_size={size}",
        f"++model.memory_attention.layer.self_attention.feat_sizes=[{fs},{fs}]",
        f"++model.memory_attention.layer.cross_attention.feat_sizes=[{fs},{fs}]",
    ]


# The 0.64 M-parameter recipe of brief-sam2.md §1.8 (128 px): fast enough for every test.
TINY = _resolution(128) + [
    "++model.image_encoder.trunk.embed_dim=8",
    "++model.image_encoder.trunk.num_heads=1",
    "++model.image_encoder.trunk.stages=[1,1,1,1]",
    "++model.image_encoder.trunk.global_att_blocks=[]",
    "++model.image_encoder.trunk.window_spec=[4,2,2,1]",
    "++model.image_encoder.trunk.window_pos_embed_bkg_spatial_size=[4,4]",
    "++model.image_encoder.neck.d_model=32",
    "++model.image_encoder.neck.backbone_channel_list=[64,32,16,8]",
    "++model.image_encoder.neck.position_encoding.num_pos_feats=32",
    "++model.memory_attention.d_model=32",
    "++model.memory_attention.num_layers=1",
    "++model.memory_attention.layer.d_model=32",
    "++model.memory_attention.layer.dim_feedforward=64",
    "++model.memory_attention.layer.self_attention.embedding_dim=32",
    "++model.memory_attention.layer.cross_attention.embedding_dim=32",
    "++model.memory_attention.layer.cross_attention.kv_in_dim=16",
    "++model.memory_encoder.out_dim=16",
    "++model.memory_encoder.in_dim=32",
    "++model.memory_encoder.position_encoding.num_pos_feats=16",
    "++model.memory_encoder.mask_downsampler.embed_dim=32",
    "++model.memory_encoder.fuser.layer.dim=32",
    "++model.memory_encoder.fuser.num_layers=1",
]

# Presets: name -> (base config, overrides). "hiera-t-*" keep the real hiera-t architecture;
# "hiera-l" is the full-size SAM 2.0 hiera-L at 1024 px that VRS-HQ ships (224 M parameters,
# about 900 MB written: for GPU benchmarks, not tests).
PRESETS: dict[str, tuple[str, list[str]]] = {
    "tiny": (BASE_CONFIG, TINY),
    "hiera-t-128": (BASE_CONFIG, _resolution(128)),
    "hiera-t-256": (BASE_CONFIG, _resolution(256)),
    "hiera-l": ("configs/sam2/sam2_hiera_l.yaml", []),
}


def write_tiny_sam2(out_dir: str | Path, preset: str = "tiny", seed: int = 0) -> tuple[Path, Path]:
    """Write ``config.yaml`` and ``model.pt`` of a random sam2 model; returns both paths."""
    from omegaconf import OmegaConf

    if preset not in PRESETS:
        raise ValueError(f"unknown sam2 preset {preset!r} (have {', '.join(PRESETS)})")
    base, overrides = PRESETS[preset]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(base, overrides)
    config_path = out / "config.yaml"
    config_path.write_text("# @package _global_\n" + OmegaConf.to_yaml(cfg))
    torch.manual_seed(seed)
    model = build_model(config_path)
    present_bias(model)
    checkpoint_path = out / "model.pt"
    torch.save({"model": model.state_dict()}, checkpoint_path)
    return config_path, checkpoint_path


def present_bias(model: torch.nn.Module) -> None:
    """Make a random sam2 model say "present": it then tracks non-empty masks.

    A random object-score head says "absent" (about 0) and sam2 then blanks every tracked
    mask; a +10 bias makes the random model track non-empty masks (brief-sam2.md §1.3).
    """
    with torch.no_grad():
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(10.0)
