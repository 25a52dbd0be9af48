"""Load VRS-HQ from a model folder: the official release layout, or our tiny one.

The folder's layout and its checks are in ``vrshq.model.layout``: every part is checked before
anything heavy loads, and nothing is ever downloaded here.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from vrshq.errors import ModelError
from vrshq.engine.precision import apply_precision
from vrshq.model.anchor import DEFAULT_MODEL, AnchorPrecision, AnchorScorer
from vrshq.model.chatunivi.config import ChatUniViConfig
from vrshq.model.chatunivi.modeling import ChatUniViForCausalLM, load_chatunivi_state_dict
from vrshq.model.layout import SAM2_PREFIX, ClipWeights, ModelFolder, check_model_folder
from vrshq.model.pipeline import Vrshq, VrshqConfig
from vrshq.model.projection import TextHiddenFcs
from vrshq.model.sam2_vrshq import (
    PACKAGED_CONFIG,
    build_vrshq_sam2,
    load_checkpoint,
    load_visual_model,
    split_visual_model,
)
from vrshq.model.tiny import SAM2_CONFIG_FILE
from vrshq.model.tokenization import load_tokenizer

PROJECTION_PREFIX = "model.text_hidden_fcs."


def load_vrshq(model_dir: str | Path, config: VrshqConfig = VrshqConfig(),
               clip_model: str = DEFAULT_MODEL, clip_pretrained: str | None = None) -> Vrshq:
    """The VRS-HQ model of ``model_dir`` on the configured device.

    ``clip_pretrained`` is a CLIP checkpoint file to use instead of the folder's ``clip/``
    (with ``clip_model``, an open_clip architecture name).
    """
    layout = check_model_folder(model_dir)
    folder = layout.checkpoint
    device = config.engine.resolved_device()
    dtype = config.engine.dtype()  # the precision plan: bf16 weights (official) or float32

    try:
        tokenizer = load_tokenizer(folder)
    except (ValueError, OSError, RuntimeError) as exc:  # bad added_tokens.json / tokenizer.model
        raise ModelError(f"{folder}: cannot load the tokenizer ({exc})") from None
    try:
        mllm_config = ChatUniViConfig.from_pretrained(str(folder))
    except Exception as exc:  # noqa: BLE001 - any parse/validation error is a bad config
        raise ModelError(f"{folder / 'config.json'}: {exc}") from None
    if len(tokenizer) != mllm_config.vocab_size:
        raise ModelError(f"{folder}: the tokenizer has {len(tokenizer)} tokens with [SEG]/[TAK] but "
                         f"the model's vocab_size is {mllm_config.vocab_size}")
    state = load_chatunivi_state_dict(folder)
    with _default_dtype(dtype):
        mllm = ChatUniViForCausalLM(mllm_config)
    mllm.load_state_dict_strict(state, ignore_prefixes=(PROJECTION_PREFIX, SAM2_PREFIX))
    projection = _load_projection(state, folder)
    sam2 = _load_sam2(state, layout)
    del state
    anchor = _load_anchor(layout.clip, clip_model, clip_pretrained, device,
                          precision="bf16" if dtype == torch.bfloat16 else "fp32")
    version = _version(folder, mllm_config)
    return Vrshq(mllm.to(device, dtype).eval(), tokenizer, projection.to(device, dtype).eval(),
                 apply_precision(sam2, config.engine).eval(), anchor, config, version)


def _load_projection(state: dict, folder: Path) -> TextHiddenFcs:
    own = {k[len(PROJECTION_PREFIX):]: v for k, v in state.items() if k.startswith(PROJECTION_PREFIX)}
    if "0.0.weight" not in own or "0.2.weight" not in own:
        raise ModelError(f"{folder}: missing keys {PROJECTION_PREFIX}0.0.weight / 0.2.weight "
                         "(the [SEG]/[TAK] projection)")
    hidden, out_dim = own["0.0.weight"].shape[1], own["0.2.weight"].shape[0]
    projection = TextHiddenFcs(hidden, out_dim)
    result = projection.load_state_dict(own, strict=False)
    if result.missing_keys or result.unexpected_keys:
        names = [PROJECTION_PREFIX + k for k in result.missing_keys + result.unexpected_keys]
        raise ModelError(f"{folder}: projection keys do not match: {', '.join(names)}")
    return projection


def _load_sam2(state: dict, layout: ModelFolder) -> torch.nn.Module:
    folder = layout.checkpoint
    sam2_config = folder / SAM2_CONFIG_FILE
    sam2 = build_vrshq_sam2(sam2_config if sam2_config.is_file() else PACKAGED_CONFIG)
    sam2_state, _ = split_visual_model(state)
    if sam2_state:
        load_visual_model(sam2, sam2_state, str(folder))
        return sam2
    if layout.sam2_weights is None:
        raise ModelError(f"{folder}: the checkpoint holds no {SAM2_PREFIX}* weights and there is "
                         f"no {layout.root / 'sam2' / 'sam2_hiera_large.pt'} "
                         f"(run `vrshq download {layout.root}`)")
    load_checkpoint(sam2, layout.sam2_weights)
    return sam2


def _load_anchor(clip: ClipWeights, model: str, weights: str | None, device: torch.device,
                 precision: AnchorPrecision = "fp32") -> AnchorScorer:
    if weights is not None:
        if not Path(weights).is_file():
            raise ModelError(f"CLIP weights {weights}: not a file (only `vrshq download` fetches "
                             "weights)")
        return AnchorScorer(model, weights, device=device, precision=precision)
    if clip.config is not None:
        return AnchorScorer(clip.config.stem, str(clip.weights), model_config=clip.config,
                            device=device, precision=precision)
    return AnchorScorer(model, str(clip.weights), device=device, precision=precision)


def _version(folder: Path, config: ChatUniViConfig) -> str:
    note = getattr(config, "vrshq_weights", None)
    folder = folder.resolve()
    name = folder.parent.name if folder.name == "vrshq" else folder.name
    return f"vrshq-{name}" + (f" ({note})" if note else "")


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


__all__ = ["load_vrshq"]
