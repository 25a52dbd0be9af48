"""One VRS-HQ training forward on a clip: text CE + mask BCE/DICE on the 3 frames around the keyframe.

Follows the official training path (brief-vrshq.md §3.5, §4.2, §6.3; VRS-HQ
``model/VISA_multiseg.py`` L373-526), re-written on our modules:

* the clip's frames (8-12, time order) go to the MLLM in one teacher-forced pass; the loss on
  the text is the causal-LM cross-entropy of the answer tokens (LLaVA's llava_v1 masking: the
  system prompt and the user turn are ignored), ``[SEG]``/``[TAK]`` included;
* the projected ``[SEG]``/``[TAK]`` states go through TDA; the training keyframe is argmax lambda
  (no SAM-2 occlusion score in training);
* SAM-2 sees 3 consecutive clip frames centred on the keyframe (the first or last 3 at the
  ends): the keyframe decoded with h'_tak and no memory (the fork's
  ``train_add_new_points(pred_embeddings=...)``), then tracked forward and, from the keyframe
  again, backward with sam2's own ``track_step``; gradients reach the mask decoder, the
  projection and, through h'_tak, the LLM;
* loss = 1.0 * CE + 2.0 * sigmoid-BCE + 0.5 * DICE, the mask terms at the frame's original
  size on the frames that have a ground-truth mask (LISA's per-mask normalisation).

The image encoders (CLIP tower, SAM-2 trunk) are frozen and run without gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from vrshq.engine.features import FrameFeatures
from vrshq.model.chatunivi.image_processing import clip_preprocess
from vrshq.model.chatunivi.modeling import ChatUniViForCausalLM
from vrshq.model.keyframe import decode_with_token
from vrshq.model.pipeline import Vrshq
from vrshq.model.prompt import ROLES, build_prompt
from vrshq.model.tda import temporal_dynamic_aggregation
from vrshq.model.tokenization import tokenize_prompt
from vrshq.video.transforms import FrameTransform, ResizeMode

IGNORE_INDEX = -100
SAM_FRAMES = 3


@dataclass(frozen=True)
class LossWeights:
    """The official loss weights (``train.py``: ce_loss_weight, bce_loss_weight, dice_loss_weight)."""

    ce: float = 1.0
    bce: float = 2.0
    dice: float = 0.5


@dataclass
class Clip:
    """A training clip: frames in time order, a mask per frame (None: not labelled), the expression."""

    frames: list[np.ndarray]
    masks: list[np.ndarray | None]
    expression: str
    name: str = ""


@dataclass
class StepOutput:
    """The clip's loss (in the graph) and its parts (floats)."""

    loss: torch.Tensor
    ce: float
    bce: float
    dice: float
    keyframe: int
    sam_frames: list[int] = field(default_factory=list)


def answer_labels(tokenizer, prompt: str, ids: Sequence[int]) -> list[int]:
    """LLaVA v1 targets: IGNORE for BOS, the system prompt and the user turn; the answer's ids after."""
    head = prompt.split(f"{ROLES[1]}: ", 1)[0] + f"{ROLES[1]}: "
    # llava.train preprocess_v1: instruction_len = len(tokenizer_image_token(parts[0])) - 2,
    # counted from cur_len = 1 (after BOS).
    instruction = len(tokenize_prompt(tokenizer, head)) - 2
    start = 1 + instruction
    return [IGNORE_INDEX] * start + list(ids[start:])


def sam_window(keyframe: int, num_frames: int, size: int = SAM_FRAMES) -> list[int]:
    """``size`` consecutive clip positions centred on ``keyframe`` (the first/last ones at the ends)."""
    size = min(size, num_frames)
    start = min(max(keyframe - size // 2, 0), num_frames - size)
    return list(range(start, start + size))


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """LISA's DICE on one mask: 1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1), p = sigmoid."""
    # LISA model/LISA.py dice_loss (scale 1000, eps 1e-6), for one mask
    p = logits.sigmoid().flatten() / 1000
    t = target.flatten()
    return 1 - (2 * (p * t).sum() + eps) / (p.sum() + t.sum() / 1000 + eps)


def _features(model: Vrshq, transform: FrameTransform, frame: np.ndarray) -> FrameFeatures:
    sam2 = model.sam2
    image = transform.prepare(frame).to(model.device).unsqueeze(0)
    with torch.no_grad():
        backbone = sam2.forward_image(image)
        _, feats, pos, sizes = sam2._prepare_backbone_features(backbone)
    return FrameFeatures([f.detach() for f in feats], [p.detach() for p in pos], sizes)


def _cond_output(sam2: torch.nn.Module, feats: FrameFeatures, token: torch.Tensor) -> dict:
    """The keyframe's output as sam2's track_step would store it for a token-prompted frame."""
    out = decode_with_token(sam2, feats, token)
    low = out.low_res_logits
    high = F.interpolate(low, size=(sam2.image_size, sam2.image_size), mode="bilinear",
                         align_corners=False)
    # sam2_base.SAM2Base._forward_sam_heads: the object pointer with occlusion handling
    obj_ptr = sam2.obj_ptr_proj(out.output_tokens[:, 0])
    if sam2.pred_obj_scores:
        appearing = (out.object_score_logits.sigmoid() if sam2.soft_no_obj_ptr
                     else (out.object_score_logits > 0).float())
        if sam2.fixed_no_obj_ptr:
            obj_ptr = appearing * obj_ptr
        obj_ptr = obj_ptr + (1 - appearing) * sam2.no_obj_ptr
    mem, mem_pos = sam2._encode_new_memory(feats.vision_feats, feats.feat_sizes, high,
                                           out.object_score_logits, is_mask_from_pts=True)
    return {"maskmem_features": mem, "maskmem_pos_enc": mem_pos, "pred_masks": low,
            "pred_masks_high_res": high, "obj_ptr": obj_ptr,
            "object_score_logits": out.object_score_logits}


def _track(sam2: torch.nn.Module, feats: dict[int, FrameFeatures], key: int, order: list[int],
           cond: dict, reverse: bool) -> dict[int, torch.Tensor]:
    output_dict = {"cond_frame_outputs": {key: cond}, "non_cond_frame_outputs": {}}
    out: dict[int, torch.Tensor] = {}
    for i in order:
        f = feats[i]
        current = sam2.track_step(
            frame_idx=i, is_init_cond_frame=False, current_vision_feats=f.vision_feats,
            current_vision_pos_embeds=f.vision_pos_embeds, feat_sizes=f.feat_sizes,
            point_inputs=None, mask_inputs=None, output_dict=output_dict,
            num_frames=len(feats), track_in_reverse=reverse, run_mem_encoder=True)
        output_dict["non_cond_frame_outputs"][i] = current
        out[i] = current["pred_masks"]
    return out


def clip_forward(model: Vrshq, clip: Clip, weights: LossWeights = LossWeights()) -> StepOutput:
    """The training loss of one clip (see the module docstring)."""
    n = len(clip.frames)
    if n < 1 or len(clip.masks) != n:
        raise ValueError(f"clip {clip.name!r}: {n} frames and {len(clip.masks)} masks")
    device = model.device
    mllm: ChatUniViForCausalLM = model.mllm
    dtype = next(mllm.parameters()).dtype

    # --- MLLM: one teacher-forced pass, CE on the answer -----------------------------------
    pixels = torch.stack([clip_preprocess(f, size=mllm.config.image_size()) for f in clip.frames])
    with torch.no_grad():
        image_features = mllm.encode_images(pixels.to(device, dtype))
    prompt = build_prompt(clip.expression, n)
    ids_list = tokenize_prompt(model.tokenizer, prompt)
    ids = torch.tensor([ids_list], device=device)
    out = mllm(ids, image_features=image_features, return_logits=True)
    labels = torch.tensor(answer_labels(model.tokenizer, prompt, ids_list), device=device)
    targets = (labels[1:] != IGNORE_INDEX).nonzero().flatten() + 1  # original positions predicted
    pred_at = out.position_map[0, targets - 1]  # the expanded position that predicts each one
    ce = F.cross_entropy(out.logits[0, pred_at].float(), labels[targets])

    h_seg = ChatUniViForCausalLM.hidden_before(out, ids, model.seg_id)[0]
    h_tak = ChatUniViForCausalLM.hidden_before(out, ids, model.tak_id)[0]
    p_seg = model.projection(h_seg).float()
    p_tak = model.projection(h_tak)[0].float()
    fused, lam = temporal_dynamic_aggregation(p_seg, p_tak, alpha=model.config.alpha)
    key = int(torch.argmax(lam.detach()).item())

    # --- SAM-2 on the 3 frames around the keyframe ------------------------------------------
    window = sam_window(key, n)
    transform = FrameTransform(ResizeMode.VRSHQ, int(model.sam2.image_size))
    feats = {j: _features(model, transform, clip.frames[i]) for j, i in enumerate(window)}
    k = window.index(key)
    cond = _cond_output(model.sam2, feats[k], fused.to(device))
    logits = {k: cond["pred_masks"]}
    logits.update(_track(model.sam2, feats, k, [j for j in range(len(window)) if j > k], cond, False))
    logits.update(_track(model.sam2, feats, k, [j for j in range(len(window)) if j < k][::-1],
                         cond, True))

    bce_terms, dice_terms = [], []
    for j, i in enumerate(window):
        gt = clip.masks[i]
        if gt is None:
            continue
        h, w = gt.shape
        full = transform.masks_to_original(logits[j].float(), (h, w))[0, 0]
        target = torch.as_tensor(np.asarray(gt, dtype=np.float32), device=full.device)
        bce_terms.append(F.binary_cross_entropy_with_logits(full, target))
        dice_terms.append(dice_loss(full, target))
    zero = ce.new_zeros(())
    bce = torch.stack(bce_terms).mean() if bce_terms else zero
    dice = torch.stack(dice_terms).mean() if dice_terms else zero
    loss = weights.ce * ce + weights.bce * bce + weights.dice * dice
    return StepOutput(loss, float(ce.detach()), float(bce.detach()), float(dice.detach()), key, window)


__all__ = ["Clip", "LossWeights", "StepOutput", "answer_labels", "clip_forward", "dice_loss",
           "sam_window"]
