"""The release's anchor model class, transformers' ``CLIPModel``, on an open_clip model's weights.

VRS-HQ scores frames with ``CLIPModel`` (``model/VISA_multiseg_cliptree_bf16.py`` L177-180,
L303-308); we run open_clip. This maps an open_clip ViT CLIP's state dict onto a ``CLIPModel``
of the same shape, so tests can compare the two libraries on identical weights.
"""

from __future__ import annotations

import torch
from transformers import CLIPConfig, CLIPModel


def _layer(src: dict, prefix: str, dst: dict, out: str) -> None:
    q, k, v = src[f"{prefix}attn.in_proj_weight"].chunk(3)
    qb, kb, vb = src[f"{prefix}attn.in_proj_bias"].chunk(3)
    names = {
        "self_attn.q_proj.weight": q, "self_attn.k_proj.weight": k, "self_attn.v_proj.weight": v,
        "self_attn.q_proj.bias": qb, "self_attn.k_proj.bias": kb, "self_attn.v_proj.bias": vb,
        "self_attn.out_proj.weight": src[f"{prefix}attn.out_proj.weight"],
        "self_attn.out_proj.bias": src[f"{prefix}attn.out_proj.bias"],
        "layer_norm1.weight": src[f"{prefix}ln_1.weight"], "layer_norm1.bias": src[f"{prefix}ln_1.bias"],
        "layer_norm2.weight": src[f"{prefix}ln_2.weight"], "layer_norm2.bias": src[f"{prefix}ln_2.bias"],
        "mlp.fc1.weight": src[f"{prefix}mlp.c_fc.weight"], "mlp.fc1.bias": src[f"{prefix}mlp.c_fc.bias"],
        "mlp.fc2.weight": src[f"{prefix}mlp.c_proj.weight"], "mlp.fc2.bias": src[f"{prefix}mlp.c_proj.bias"],
    }
    dst.update({f"{out}{k}": v for k, v in names.items()})


def clipmodel_from_open_clip(model: torch.nn.Module, open_clip_config: dict,
                             hidden_act: str = "quick_gelu") -> CLIPModel:
    """A transformers ``CLIPModel`` holding ``model``'s weights (an open_clip ViT CLIP)."""
    vis, txt = open_clip_config["vision_cfg"], open_clip_config["text_cfg"]
    config = CLIPConfig(
        projection_dim=open_clip_config["embed_dim"],
        vision_config=dict(hidden_size=vis["width"], intermediate_size=4 * vis["width"],
                           num_hidden_layers=vis["layers"],
                           num_attention_heads=vis["width"] // vis["head_width"],
                           image_size=vis["image_size"], patch_size=vis["patch_size"],
                           hidden_act=hidden_act, layer_norm_eps=1e-5),
        text_config=dict(hidden_size=txt["width"], intermediate_size=4 * txt["width"],
                         num_hidden_layers=txt["layers"], num_attention_heads=txt["heads"],
                         vocab_size=txt["vocab_size"], max_position_embeddings=txt["context_length"],
                         hidden_act=hidden_act, layer_norm_eps=1e-5,
                         # 49407 (<end_of_text>) is the largest id: pooling at the argmax finds it
                         eos_token_id=2),
    )
    src = {k: v.detach().float() for k, v in model.state_dict().items()}
    dst = {
        "logit_scale": src["logit_scale"],
        "text_projection.weight": src["text_projection"].t(),
        "visual_projection.weight": src["visual.proj"].t(),
        "text_model.embeddings.token_embedding.weight": src["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": src["positional_embedding"],
        "text_model.final_layer_norm.weight": src["ln_final.weight"],
        "text_model.final_layer_norm.bias": src["ln_final.bias"],
        "vision_model.embeddings.class_embedding": src["visual.class_embedding"],
        "vision_model.embeddings.patch_embedding.weight": src["visual.conv1.weight"],
        "vision_model.embeddings.position_embedding.weight": src["visual.positional_embedding"],
        "vision_model.pre_layrnorm.weight": src["visual.ln_pre.weight"],
        "vision_model.pre_layrnorm.bias": src["visual.ln_pre.bias"],
        "vision_model.post_layernorm.weight": src["visual.ln_post.weight"],
        "vision_model.post_layernorm.bias": src["visual.ln_post.bias"],
    }
    for i in range(vis["layers"]):
        _layer(src, f"visual.transformer.resblocks.{i}.", dst, f"vision_model.encoder.layers.{i}.")
    for i in range(txt["layers"]):
        _layer(src, f"transformer.resblocks.{i}.", dst, f"text_model.encoder.layers.{i}.")
    hf = CLIPModel(config).eval()
    missing, unexpected = hf.load_state_dict(dst, strict=False)
    # position_ids buffers are the only keys CLIPModel may keep for itself
    assert not unexpected and all("position_ids" in k for k in missing), (missing, unexpected)
    return hf
