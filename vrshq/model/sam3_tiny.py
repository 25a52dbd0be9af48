"""A tiny random SAM 3 in the release's Hugging Face layout (``facebook/sam3``), built offline.

``write_tiny_sam3(out)`` writes ``out/config.json`` + ``out/model.safetensors`` (a
``Sam3VideoModel``: detector + tracker, one checkpoint as released) and the processor files
(``processor_config.json``, the CLIP-BPE tokenizer files). The tokenizer is CLIP's own BPE
vocabulary, read from open_clip's packaged ``bpe_simple_vocab_16e6.txt.gz`` (the file CLIP was
released with), so no Hub download is needed and token ids match the real checkpoint's.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import torch

# The frame side the tiny model reads (8x8 patches of 14 px): small enough for CPU tests.
TINY_IMAGE_SIZE = 112
TINY_PATCH = 14
# Detection thresholds of the tiny model (see tiny_sam3_config).
TINY_DETECTION_THRESHOLD = 0.5
# CLIP's vocabulary size (256 bytes + their </w> forms + 48894 merges + 2 specials).
CLIP_VOCAB_SIZE = 49408
_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable unicode map (GPT-2's), in CLIP's order."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def write_clip_tokenizer_files(out: Path) -> tuple[Path, Path]:
    """Write CLIP's ``vocab.json`` and ``merges.txt`` into ``out`` from open_clip's BPE file."""
    import open_clip

    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(bpe, "rt", encoding="utf-8").read().split("\n")
    # CLIP keeps the first 49152 - 256 - 2 merges (line 0 is a version header)
    merges = [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1]]
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [_BOS, _EOS]
    assert len(vocab) == CLIP_VOCAB_SIZE, len(vocab)
    out.mkdir(parents=True, exist_ok=True)
    vocab_path, merges_path = out / "vocab.json", out / "merges.txt"
    vocab_path.write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False),
                          encoding="utf-8")
    merges_path.write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
                           encoding="utf-8")
    return vocab_path, merges_path


def tiny_sam3_config() -> Any:
    """A ``Sam3VideoConfig`` of a few layers, hidden sizes 32-96, on 112x112 frames."""
    from transformers import Sam3VideoConfig

    grid = TINY_IMAGE_SIZE // TINY_PATCH
    vit = {"model_type": "sam3_vit_model", "hidden_size": 32, "intermediate_size": 64,
           "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": TINY_IMAGE_SIZE,
           "patch_size": TINY_PATCH, "window_size": 4, "global_attn_indexes": [1],
           "pretrain_image_size": TINY_IMAGE_SIZE}
    # the tracker splits each object pointer into 64-channel memory tokens: hidden = k * 64, k > 1
    hidden = 128
    vision = {"model_type": "sam3_vision_model", "backbone_config": vit, "fpn_hidden_size": hidden,
              "backbone_feature_sizes": [[4 * grid] * 2, [2 * grid] * 2, [grid] * 2]}
    layer = {"hidden_size": hidden, "num_attention_heads": 2, "intermediate_size": 128}
    detector = {
        "vision_config": vision,
        "text_config": {"model_type": "clip_text_model", "vocab_size": CLIP_VOCAB_SIZE,
                        "hidden_size": 32, "intermediate_size": 64, "projection_dim": 32,
                        "num_hidden_layers": 1, "num_attention_heads": 2,
                        "max_position_embeddings": 32},
        "geometry_encoder_config": {**layer, "num_layers": 1},
        "detr_encoder_config": {**layer, "num_layers": 1},
        "detr_decoder_config": {**layer, "num_layers": 1, "num_queries": 8},
        "mask_decoder_config": {"hidden_size": hidden, "num_attention_heads": 2},
    }
    tracker = {
        "vision_config": vision,
        "prompt_encoder_config": {"hidden_size": hidden},
        "mask_decoder_config": {"hidden_size": hidden, "mlp_dim": 128, "num_attention_heads": 2,
                                "iou_head_hidden_dim": 32},
        "num_maskmem": 3, "max_object_pointers_in_encoder": 4, "max_cond_frame_num": 2,
        "memory_attention_hidden_size": hidden, "memory_attention_num_layers": 1,
        "memory_attention_feed_forward_hidden_size": 128,
        "memory_encoder_hidden_size": hidden, "memory_encoder_output_channels": 64,
        "mask_downsampler_embed_dim": hidden, "memory_fuser_embed_dim": hidden,
        "memory_fuser_intermediate_dim": 128, "memory_fuser_num_layers": 1,
    }
    config = Sam3VideoConfig(detector_config=detector, tracker_config=tracker,
                             low_res_mask_size=4 * grid,
                             # hot-start thresholds must not exceed the delay (config check)
                             hotstart_delay=2, hotstart_unmatch_thresh=2, hotstart_dup_thresh=2,
                             # with present_biases a random query scores about sigmoid(0) = 0.5:
                             # admitting new instances from 0.5 (release: 0.7) keeps a few of them
                             score_threshold_detection=TINY_DETECTION_THRESHOLD,
                             new_det_thresh=TINY_DETECTION_THRESHOLD)
    config.image_size = TINY_IMAGE_SIZE
    return config


def present_biases(model: torch.nn.Module) -> None:
    """Make a random SAM 3 say "present", so the tiny model finds and keeps tracking instances.

    Random presence and object-score heads say about 0 (sigmoid 0.5): the detector then scores
    every query near 0.25 and the tracker blanks every mask, so no instance lives past its frame.
    A +10 bias on both (as vrshq.engine.tiny.present_bias does for sam2) gives non-empty tracks.
    """
    with torch.no_grad():
        model.detector_model.detr_decoder.presence_head.layer3.bias.fill_(10.0)
        model.tracker_model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(10.0)


def write_tiny_sam3(out: Path | str, seed: int = 0) -> Path:
    """Write a random tiny SAM 3 (model + processor) in the release layout into ``out``."""
    from transformers import CLIPTokenizer, Sam3VideoModel, Sam3VideoProcessor
    from transformers import Sam3ImageProcessor, Sam2VideoVideoProcessor

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = Sam3VideoModel(tiny_sam3_config()).eval()
    present_biases(model)
    model.save_pretrained(out)
    write_clip_tokenizer_files(out)
    tokenizer = CLIPTokenizer(str(out / "vocab.json"), str(out / "merges.txt"),
                              bos_token=_BOS, eos_token=_EOS, pad_token=_EOS)
    size = {"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE}
    processor = Sam3VideoProcessor(image_processor=Sam3ImageProcessor(size=size),
                                   video_processor=Sam2VideoVideoProcessor(size=size),
                                   tokenizer=tokenizer, target_size=TINY_IMAGE_SIZE)
    processor.save_pretrained(out)
    return out


__all__ = ["TINY_IMAGE_SIZE", "tiny_sam3_config", "write_clip_tokenizer_files", "write_tiny_sam3"]
