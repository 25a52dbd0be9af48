"""The VRS-HQ release's keyframe path, formula by formula, as independent test references.

Written from the release (SitongGong/VRS-HQ), not from our code, with sam2's, torch's and
scipy's own functions; tests compare our functions with these by value:

* decode: the fork's ``add_new_points(pred_embeddings=token)`` runs sam2's
  ``track_step`` on an initial conditioning frame without points or masks, its
  ``_forward_sam_heads`` appending the token after the prompt encoder's sparse tokens
  (``sam2/sam2_video_inference_.py`` L1574-1584): ``token_decode``;
* hole filling: ``_run_single_frame_inference`` (L1371-1374) fills background components of
  area <= 8 with sam2's ``fill_holes_in_mask_scores``; its CUDA labelling is replaced by scipy
  here: ``reference_fill``;
* TKS: softmax over the candidates of the object-score logits (Python floats), plus the TDA
  similarity, first maximum wins (``model/VISA_multiseg_cliptree_bf16.py`` L506-518):
  ``release_keyframe_index``;
* keyframe mask: ``add_new_points`` consolidates the decode at "video" resolution, which for the
  release's ``init_state(sam_images)`` is the padded S x S model input (L81-82): a bilinear
  upsample of the S/4 logits (``_consolidate_temp_output_across_obj``, L756), then
  ``mask_input = out_mask_logits > 0`` (cliptree L548): ``release_keyframe_mask``;
* masks at the video's size: crop the S x S logits to the resized region, bilinear to the
  label's size (cliptree L559-562): ``release_masks_to_original``.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

EIGHT = np.ones((3, 3), dtype=int)  # scipy's structure for 8-connectivity
RELEASE_FILL_HOLE_AREA = 8  # the fork's sam2/build_sam.py _build_sam2_
# SAM-2 settings of the fork's _build_sam2_ that the decode depends on (no multimask output)
RELEASE_SAM2_SETTINGS = {"multimask_output_in_sam": False, "multimask_output_for_tracking": False}


# ---------------------------------------------------------------- hole filling


def reference_labels(background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels, per-pixel component area) of a 2-D boolean background, 8-connected."""
    labels, _ = ndimage.label(background, structure=EIGHT)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels, sizes[labels]


def reference_fill(mask: torch.Tensor, max_area: int) -> torch.Tensor:
    """sam2's fill_holes_in_mask_scores, with scipy labelling in place of sam2's CUDA kernel."""
    out = mask.clone()
    for i in range(mask.shape[0]):
        background = (mask[i, 0] <= 0).cpu().numpy()
        labels, area = reference_labels(background)
        hole = torch.from_numpy((labels > 0) & (area <= max_area)).to(mask.device)
        out[i, 0] = torch.where(hole, torch.tensor(0.1, dtype=mask.dtype, device=mask.device),
                                mask[i, 0])
    return out


# ---------------------------------------------------------------- decode with the token


@contextlib.contextmanager
def token_appended(model, token: torch.Tensor):
    """sam2's prompt encoder with ``token`` appended to its sparse output, as the fork does."""
    encoder = model.sam_prompt_encoder
    original = encoder.forward

    def forward(points, boxes, masks):
        sparse, dense = original(points=points, boxes=boxes, masks=masks)
        extra = token.reshape(1, 1, -1).expand(sparse.shape[0], 1, -1)
        return torch.cat((sparse, extra.to(sparse.device)), dim=1).to(token.dtype), dense

    encoder.forward = forward
    try:
        yield
    finally:
        del encoder.forward


def token_decode(model, feats, token: torch.Tensor, frame_idx: int = 0, num_frames: int = 1
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(S/4 logits, object-score logits) of sam2's ``track_step`` with the token appended.

    The fork's ``add_new_points`` on a reset state: an initial conditioning frame, no points,
    no mask, no memory, the memory encoder not run. Call it with the release's SAM-2 settings
    (``RELEASE_SAM2_SETTINGS``) on the model.
    """
    with token_appended(model, token), torch.inference_mode():
        out = model.track_step(
            frame_idx=frame_idx, is_init_cond_frame=True,
            current_vision_feats=feats.vision_feats,
            current_vision_pos_embeds=feats.vision_pos_embeds, feat_sizes=feats.feat_sizes,
            point_inputs=None, mask_inputs=None,
            output_dict={"cond_frame_outputs": {}, "non_cond_frame_outputs": {}},
            num_frames=num_frames, track_in_reverse=False, run_mem_encoder=False,
            prev_sam_mask_logits=None)
    return out["pred_masks"], out["object_score_logits"]


# ---------------------------------------------------------------- TKS


def release_keyframe_index(object_scores: list[float], similarity: list[float]
                           ) -> tuple[int, list[float]]:
    """(index of the keyframe among the candidates, the TKS results) as the release picks them."""
    object_scores = torch.softmax(torch.tensor(object_scores), dim=0).tolist()
    results = [b + c for b, c in zip(object_scores, similarity)]
    return results.index(max(results)), results


# ---------------------------------------------------------------- masks


def release_video_res(low_res: torch.Tensor, image_size: int) -> torch.Tensor:
    """The fork's consolidated logits of one decode at "video" size, here S x S."""
    return F.interpolate(low_res.float(), size=(image_size, image_size), mode="bilinear",
                         align_corners=False)


def release_keyframe_mask(low_res: torch.Tensor, image_size: int) -> torch.Tensor:
    """``mask_input[0][0]``: the boolean S x S mask the release re-adds with add_new_mask."""
    return (release_video_res(low_res, image_size) > 0)[0][0]


def release_resized_hw(orig_h: int, orig_w: int, image_size: int) -> tuple[int, int]:
    """LISA's ResizeLongestSide.get_preprocess_shape (the release's resize_list entry)."""
    scale = image_size * 1.0 / max(orig_h, orig_w)
    newh, neww = orig_h * scale, orig_w * scale
    return int(newh + 0.5), int(neww + 0.5)


def release_masks_to_original(video_res: torch.Tensor, orig_hw: tuple[int, int]) -> torch.Tensor:
    """S x S logits [N, 1, S, S] -> logits at the video's size, as the release's loop does."""
    new_h, new_w = release_resized_hw(*orig_hw, video_res.shape[-1])
    masks = video_res[..., :new_h, :new_w]
    return F.interpolate(masks, orig_hw, mode="bilinear", align_corners=False)
