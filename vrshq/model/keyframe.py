"""Decode one frame from a projected [TAK] token on cached SAM-2 features (TKS, MDP step 1).

VRS-HQ's forked predictor decodes a frame with no memory and the fused [TAK] token appended
to the sparse prompt (upstream ``sam2/sam2_video_inference_.py`` ``add_new_points`` L232-310 ->
``_forward_sam_heads`` L1490+, token appended L1574-1584, NO_OBJ_SCORE in eval L1610). Here the
same decode runs on upstream ``sam2`` 1.1.0 modules and on the session's ``FeatureCache``, so a
candidate frame's image features are computed once and reused by the propagation that follows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from vrshq.engine.features import FeatureCache, FrameFeatures
from vrshq.engine.holes import SAM2_FILL_HOLE_AREA, fill_holes
from vrshq.model.tda import first_argmax, keyframe_scores
from vrshq.video.transforms import FrameTransform

# sam2.modeling.sam2_base.NO_OBJ_SCORE: mask logits of a frame the object-score head calls empty
NO_OBJ_SCORE = -1024.0


@dataclass
class TokenDecode:
    """One token-prompted decode: mask logits at S/4 and SAM-2's object-score logits."""

    low_res_logits: torch.Tensor  # [B, 1, S/4, S/4] float32 (NO_OBJ_SCORE where absent)
    object_score_logits: torch.Tensor  # [B, 1], in the graph when the inputs need grad
    ious: torch.Tensor  # [B, 1]
    output_tokens: torch.Tensor | None = None  # [B, M, C] the decoder's SAM output tokens

    @property
    def object_score_logit(self) -> float:
        """The first (usually only) row's object-score logit as a float."""
        return float(self.object_score_logits.detach().float().reshape(-1)[0])


def _as_token_batch(token: torch.Tensor, dim: int) -> torch.Tensor:
    """[C], [1, C], [B, C] or [B, 1, C] -> [B, 1, C]."""
    if token.dim() == 1:
        token = token[None, None]
    elif token.dim() == 2:
        token = token[:, None]
    if token.dim() != 3 or token.shape[1] != 1 or token.shape[2] != dim:
        raise ValueError(f"token must be [{dim}] or [B, 1, {dim}], got shape {tuple(token.shape)}")
    return token


def decode_with_token(model: torch.nn.Module, feats: FrameFeatures, token: torch.Tensor | None,
                      *, multimask_output: bool = False) -> TokenDecode:
    """Decode ``feats``' frame with no memory and ``token`` appended to the sparse prompt.

    The steps are those of ``SAM2Base._track_step`` on an initial conditioning frame without
    points or masks, which is what the fork's ``add_new_points(pred_embeddings=...)`` runs:

    * image embedding: lowest-level features + ``no_mem_embed`` (``directly_add_no_mem_embed``;
      sam2's own ``_prepare_memory_conditioned_features`` is called, so a model built without
      that flag gets sam2's dummy-memory path instead);
    * high-res features: the first two levels, reshaped to [B, C, H, W];
    * sparse prompt: sam2's "no points" prompt, one padding point with label -1, which the
      prompt encoder pads with a second not-a-point -> [not_a_point, not_a_point], then
      ``token`` appended -> [B, 3, C] (``token=None`` leaves the 2-token prompt, i.e. sam2's
      own ``_forward_sam_heads(point_inputs=None)``);
    * dense prompt: the no-mask embedding; ``multimask_output=False`` (VRS-HQ's
      ``multimask_output_in_sam=False``), ``repeat_image=False``;
    * masks become NO_OBJ_SCORE where the object-score logit is <= 0.

    Differentiable in ``token`` and the decoder weights (no inference mode inside); it computes
    in the model's weight dtype (``vrshq.engine.precision``). A token batch of B rows on
    single-frame features decodes the frame once per row.
    """
    vision_feats = feats.vision_feats
    b_img = vision_feats[-1].size(1)
    dim = int(model.sam_prompt_embed_dim)
    tokens = None if token is None else _as_token_batch(token, dim)
    # sam2_base.SAM2Base._track_step: memory-conditioned (here: no-memory) lowest level
    pix_feat = model._prepare_memory_conditioned_features(
        frame_idx=0, is_init_cond_frame=True,
        current_vision_feats=vision_feats[-1:],
        current_vision_pos_embeds=feats.vision_pos_embeds[-1:],
        feat_sizes=feats.feat_sizes[-1:],
        output_dict={"cond_frame_outputs": {}, "non_cond_frame_outputs": {}},
        num_frames=1,
    )
    if model.use_high_res_features_in_sam:
        high_res = [x.permute(1, 2, 0).view(x.size(1), x.size(2), *s)
                    for x, s in zip(vision_feats[:-1], feats.feat_sizes[:-1])]
    else:
        high_res = None
    batch = b_img
    if tokens is not None and tokens.shape[0] != b_img:
        if b_img != 1:
            raise ValueError(f"{tokens.shape[0]} tokens for a batch of {b_img} frames")
        batch = tokens.shape[0]
        pix_feat = pix_feat.expand(batch, -1, -1, -1)
        if high_res is not None:
            high_res = [x.expand(batch, -1, -1, -1) for x in high_res]
    device = pix_feat.device
    # sam2_base.SAM2Base._forward_sam_heads, "no points": a single padding point, label -1
    coords = torch.zeros(batch, 1, 2, device=device)
    labels = -torch.ones(batch, 1, dtype=torch.int32, device=device)
    sparse, dense = model.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)
    if tokens is not None:
        # the fork appends pred_embeddings after the prompt encoder's tokens (L1574-1584)
        sparse = torch.cat([sparse, tokens.to(device=device, dtype=sparse.dtype)], dim=1)
    low_res, ious, output_tokens, object_score_logits = model.sam_mask_decoder(
        image_embeddings=pix_feat,
        image_pe=model.sam_prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask_output,
        repeat_image=False,
        high_res_features=high_res,
    )
    if model.pred_obj_scores:
        low_res = torch.where((object_score_logits > 0)[:, None, None], low_res, NO_OBJ_SCORE)
    return TokenDecode(low_res.float(), object_score_logits, ious, output_tokens)


@dataclass
class KeyframeChoice:
    """TKS's outcome over the candidate frames."""

    keyframe: int  # video frame index of the chosen keyframe
    index: int  # its position among the candidates
    candidate_frames: list[int]
    object_scores: torch.Tensor  # [K] SAM-2 object-score logits, token-prompted
    lambdas: torch.Tensor  # [K] TDA weights of the pre-fusion [TAK]
    scores: torch.Tensor  # [K] softmax(object_scores) + lambdas
    low_res_logits: torch.Tensor  # [1, 1, S/4, S/4] the keyframe's decode, holes filled

    def mask(self, transform: FrameTransform, orig_hw: tuple[int, int]) -> np.ndarray:
        """The keyframe's binarised mask (logits > 0) at the video's size, for ``add_mask``."""
        return (transform.masks_to_original(self.low_res_logits, orig_hw)[0, 0] > 0).cpu().numpy()


def select_keyframe_with_token(model: torch.nn.Module, features_cache: FeatureCache,
                               candidate_frames: Sequence[int], h_tak_fused: torch.Tensor,
                               lam: torch.Tensor, *,
                               fill_hole_area: int = SAM2_FILL_HOLE_AREA) -> KeyframeChoice:
    """Decode every candidate with ``h_tak_fused`` and pick argmax softmax(obj scores) + lam.

    Upstream ``model/VISA_multiseg_cliptree_bf16.py`` L486-519: each candidate decoded alone
    with no memory, score = softmax over candidates of the object-score logits + lambda.
    ``lam`` [K] must be aligned with ``candidate_frames``. Features come from (and stay in)
    ``features_cache``, so later propagation over the same video does not re-encode them.
    The keyframe's logits get the engine's hole filling (``fill_hole_area``, 0: none), which
    the fork's ``add_new_points`` applies to the decode it returns
    (``sam2/sam2_video_inference_.py`` ``_run_single_frame_inference`` L1371-1374); its
    binarised mask becomes the mask prompt.
    """
    frames = [int(f) for f in candidate_frames]
    if not frames:
        raise ValueError("no candidate frames")
    lam = torch.as_tensor(lam).detach().reshape(-1)
    if lam.numel() != len(frames):
        raise ValueError(f"{len(frames)} candidate frames but {lam.numel()} lambdas")
    token = h_tak_fused.detach()
    scores_list: list[torch.Tensor] = []
    logits: list[torch.Tensor] = []
    for frame_idx in frames:
        feats = features_cache.get(frame_idx)
        with torch.inference_mode():
            out = decode_with_token(model, feats, token)
        scores_list.append(out.object_score_logits.float().reshape(-1)[0].cpu())
        logits.append(out.low_res_logits.cpu())
    object_scores = torch.stack(scores_list)
    scores = keyframe_scores(object_scores, lam)
    best = first_argmax(scores)
    # filling never changes the object scores, so only the chosen decode needs it
    keyframe_logits = fill_holes(logits[best], fill_hole_area)
    return KeyframeChoice(frames[best], best, frames, object_scores, lam, scores, keyframe_logits)
