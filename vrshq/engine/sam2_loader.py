"""Build a sam2 model from a hydra YAML (a file or a config packaged with sam2) and a checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from vrshq.errors import ModelError

PREDICTOR_TARGET = "sam2.sam2_video_predictor.SAM2VideoPredictor"

# What sam2.build_sam.build_sam2_video_predictor(apply_postprocessing=True) adds for the official
# checkpoints, less its fill_hole_area=8: the engine fills holes itself
# (EngineConfig.fill_hole_area, default 8, vrshq.engine.holes); sam2 without _C would skip it.
OFFICIAL_POSTPROCESSING = (
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
    "++model.binarize_mask_from_pts_for_mem_enc=true",
)


@dataclass(frozen=True)
class Sam2Spec:
    """Where a sam2 model comes from: a config (YAML path or packaged name) and a checkpoint."""

    config: str
    checkpoint: str | None = None


def load_config(config: str | Path, overrides: list[str] | tuple[str, ...] = ()):
    """The model config as an OmegaConf object, from a YAML file or a name packaged with sam2."""
    from omegaconf import OmegaConf

    path = Path(config)
    if path.suffix in (".yaml", ".yml") and path.exists():
        try:
            cfg = OmegaConf.load(path)
        except Exception as exc:  # yaml and omegaconf raise many types
            raise ModelError(f"{path}: not a readable sam2 config ({exc})") from None
        if overrides:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([o.lstrip("+") for o in overrides]))
    else:
        import sam2  # noqa: F401  (registers sam2's config module with hydra)
        from hydra import compose
        from hydra.errors import MissingConfigException

        try:
            cfg = compose(config_name=str(config), overrides=list(overrides))
        except MissingConfigException:
            raise ModelError(f"{config}: no such sam2 config file or packaged config") from None
    OmegaConf.resolve(cfg)
    if "model" not in cfg:
        raise ModelError(f"{config}: the config has no 'model' section")
    return cfg


def build_model(config: str | Path, checkpoint: str | Path | None = None,
                device: str | torch.device = "cpu", predictor: bool = False,
                overrides: list[str] | tuple[str, ...] = ()) -> torch.nn.Module:
    """Instantiate the sam2 model of ``config`` and load ``checkpoint`` strictly, in eval mode."""
    from hydra.utils import instantiate

    cfg = load_config(config, overrides)
    if predictor:
        cfg.model._target_ = PREDICTOR_TARGET
    try:
        model = instantiate(cfg.model, _recursive_=True)
    except Exception as exc:
        raise ModelError(f"{config}: cannot build the sam2 model ({exc})") from None
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model.to(device).eval()


def load_checkpoint(model: torch.nn.Module, checkpoint: str | Path) -> None:
    """Load a sam2 checkpoint (``{"model": state_dict}``); any key mismatch is an error naming keys."""
    path = Path(checkpoint)
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"{path}: not a readable checkpoint ({type(exc).__name__})") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ModelError(f"{path}: expected a state dict or {{'model': state_dict}}")
    result = model.load_state_dict(state, strict=False)
    problems = []
    if result.missing_keys:
        problems.append("missing keys: " + ", ".join(result.missing_keys[:10])
                        + (" ..." if len(result.missing_keys) > 10 else ""))
    if result.unexpected_keys:
        problems.append("unexpected keys: " + ", ".join(result.unexpected_keys[:10])
                        + (" ..." if len(result.unexpected_keys) > 10 else ""))
    if problems:
        raise ModelError(f"{path}: checkpoint does not match the config ({'; '.join(problems)})")
