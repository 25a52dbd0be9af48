"""VRS-HQ benchmark: keyframe selection + propagation vs the official procedure, and memory.

    python -m bench.vrshq_bench [--frames 100] [--size 128] [--parts compare,rss]
    python -m bench.vrshq_bench --full-size [--frames 100] [--precision official]   # for a GPU

Both sides get the same fused [TAK] token h'_tak and TDA lambdas (the MLLM part runs once,
on the tiny VRS-HQ, and is not timed), so only keyframe selection and propagation are compared:

* reference: the official procedure (brief-vrshq.md §3.3, §4.1) on sam2's own
  ``SAM2VideoPredictor`` with the same SAM-2 weights, independent of the functions benchmarked
  (none of ``decode_with_token``, ``keyframe_scores``, ``Vrshq.keyframe_mask`` or
  ``FrameTransform``): all frames decoded and preprocessed as the release's dataset does
  (torchvision resize of the longest side, normalise, zero-pad) into one tensor, a fresh
  full-video state per candidate (``init_state`` encodes frame 0; sam2's feature cache holds only
  the latest frame, so every state re-encodes), the candidate decoded with the token by the
  fork's ``add_new_points(pred_embeddings=...)`` written on sam2's own predictor methods (the
  token appended to the prompt encoder's sparse tokens, as the fork's ``_forward_sam_heads``
  does), keyframe = the release's softmax(object scores) + lambda, first maximum; then a fresh
  state for inference, the keyframe decoded again, its S x S "video-res" logits > 0 re-added
  with ``add_new_mask``, forward pass, ``reset_state`` + ``add_new_mask`` again, reverse pass,
  each mask cropped to the resized region and resized to the video with torch's bilinear
  ``interpolate``, as the release's loop does. ``--reference-loading`` chooses how the
  frames reach each state: ``sample`` decodes the video once per sample and hands every state
  that tensor (the official fork's ``init_state(sam_images)``), ``state`` loads the whole video
  for each state (upstream sam2's ``init_state``), ``both`` measures both;
* ours: ``TrackingSession(resize=VRSHQ, isolated_passes=True)`` + ``select_keyframe_with_token``
  + ``add_model_mask(Vrshq.keyframe_mask)`` + ``propagate("both")``, as ``Vrshq.segment`` runs
  after the MLLM: one frame decode and one image-encoder call per frame.

Hole filling is off on both sides of the comparison (``NO_FILL``): sam2's predictor cannot fill
without its CUDA extension, so the fork's ``fill_hole_area=8`` (our default) would make the masks
differ by design; ``tests/test_hole_filling.py`` covers the filling on its own.

Reported: same keyframe, identical masks (and the minimum IoU), encoder calls and frame decodes
per side, wall times and ours/reference ratios; then peak RSS on a 1,000-frame video, each side
in a fresh process. Prints tables and writes bench/results/vrshq.json (vrshq_full.json with
``--full-size``).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

from bench import common
from vrshq.engine import EngineConfig, TrackingSession, apply_precision, build_model
from vrshq.model.frames import MAX_FRAMES, sample_frames
from vrshq.model.keyframe import select_keyframe_with_token
from vrshq.model.pipeline import Vrshq, VrshqConfig
from vrshq.model.sam2_vrshq import (
    OFFICIAL_OVERRIDES,
    PACKAGED_CONFIG,
    build_vrshq_sam2,
    load_visual_model,
    split_visual_model,
)
from vrshq.synthetic import SyntheticSpec, write_video
from vrshq.video.reader import open_video
from vrshq.video.transforms import ResizeMode

PROMPT = "the red ball moving left"


# ----------------------------------------------------------------------------- inputs
@dataclass
class Inputs:
    """What both sides share: the SAM-2 weights, the video, the grid, h'_tak and lambdas."""

    sam2: torch.nn.Module  # ours (SAM2Base, as load_vrshq builds it)
    predictor: torch.nn.Module  # the reference's SAM2VideoPredictor, same weights
    video: Path
    grid: list[int]
    token: torch.Tensor
    lam: torch.Tensor
    config: EngineConfig = common.NO_FILL
    anchor: int = 0


def _tiny_vrshq(model_dir: Path, size: int, config: VrshqConfig | None = None) -> Vrshq:
    from vrshq.model.loading import load_vrshq
    from vrshq.model.tiny import write_tiny_vrshq

    if not (model_dir / "vrshq" / "config.json").is_file():
        write_tiny_vrshq(model_dir)
    vrshq = load_vrshq(model_dir, config or VrshqConfig())
    if int(vrshq.sam2.image_size) != size:
        raise SystemExit(f"the tiny VRS-HQ's SAM-2 runs at {vrshq.sam2.image_size} px, not {size}: "
                         "use --size 128 (or --full-size)")
    return vrshq


def _reference_predictor_tiny(model_dir: Path) -> torch.nn.Module:
    """sam2's predictor from the tiny folder's SAM-2 config and the shards' visual_model weights."""
    from vrshq.model.chatunivi.modeling import load_chatunivi_state_dict
    from vrshq.model.tiny import SAM2_CONFIG_FILE

    folder = model_dir / "vrshq"
    predictor = build_model(folder / SAM2_CONFIG_FILE, predictor=True, overrides=OFFICIAL_OVERRIDES)
    sam2_state, _ = split_visual_model(load_chatunivi_state_dict(folder))
    load_visual_model(predictor, sam2_state, str(folder))
    return predictor


def mllm_part(vrshq: Vrshq, video: Path, prompt: str = PROMPT) -> tuple[int, list[int], torch.Tensor, torch.Tensor]:
    """Anchor, grid, fused h'_tak and lambdas of ``prompt``: Vrshq's own steps, run once."""
    with open_video(video) as reader:
        anchor = vrshq.anchors(reader, [prompt])[0]
        grid = sample_frames(anchor, len(reader), vrshq.config.max_frames)
        frame_tokens = vrshq.encode_frames(reader, grid)
        tokens = vrshq.prompt_tokens(prompt, [frame_tokens[f] for f in grid])
    return anchor, grid, tokens.h_tak_fused.detach().to(vrshq.device), tokens.lam.detach()


def tiny_inputs(work: Path, frames: int, size: int, width: int = 320, height: int = 240) -> Inputs:
    """The tiny VRS-HQ's inputs on a synthetic ``frames``-long video."""
    spec = SyntheticSpec(num_frames=frames, width=width, height=height, fps=25.0, num_objects=2, seed=3)
    video = write_video(spec, work / f"clip{frames}.mp4")
    vrshq = _tiny_vrshq(work / "model", size)
    anchor, grid, token, lam = mllm_part(vrshq, video)
    config = replace(vrshq.config.engine, fill_hole_area=0)  # NO_FILL's setting
    predictor = apply_precision(_reference_predictor_tiny(work / "model"), config)
    return Inputs(vrshq.sam2, predictor, video, grid, token, lam, config, anchor)


def random_token_inputs(work: Path, frames: int, config_path: str | Path, checkpoint: str | Path | None,
                        width: int, height: int, seed: int = 0,
                        config: EngineConfig = common.NO_FILL) -> Inputs:
    """A SAM-2 from ``config_path`` (VRS-HQ settings), a random h'_tak and lambdas, no MLLM.

    Without a checkpoint the weights are random, with the object-score head biased towards
    "present" (as the tiny presets are) so that the masks compared are not blank.
    """
    from vrshq.engine.tiny import present_bias

    device = config.resolved_device()
    torch.manual_seed(seed)
    sam2 = build_vrshq_sam2(config_path, checkpoint)
    if checkpoint is None:
        present_bias(sam2)
    predictor = build_model(config_path, predictor=True, overrides=OFFICIAL_OVERRIDES)
    predictor.load_state_dict(sam2.state_dict())
    # both cast to the precision plan (official: bf16 weights) on the device
    sam2, predictor = apply_precision(sam2, config).eval(), apply_precision(predictor, config).eval()
    spec = SyntheticSpec(num_frames=frames, width=width, height=height, fps=25.0, num_objects=2, seed=3)
    video = write_video(spec, work / f"clip{frames}_{width}x{height}.mp4")
    anchor = frames // 2
    grid = sample_frames(anchor, frames, MAX_FRAMES)
    g = torch.Generator().manual_seed(seed)
    token = torch.randn(int(sam2.sam_prompt_embed_dim), generator=g).to(device)
    lam = torch.softmax(torch.randn(len(grid), generator=g), dim=0)
    return Inputs(sam2, predictor, video, grid, token, lam, config, anchor)


def full_size_inputs(work: Path, frames: int, seed: int = 0,
                     config: EngineConfig = common.NO_FILL) -> Inputs:
    """SAM-2 hiera-L (packaged config, random weights) at 1024 px on 1280x720 frames; random token."""
    return random_token_inputs(work, frames, PACKAGED_CONFIG, None, 1280, 720, seed, config)


def preset_inputs(work: Path, frames: int, preset: str, seed: int = 0,
                  config: EngineConfig = common.NO_FILL) -> Inputs:
    """A random SAM-2 of ``vrshq.engine.tiny``'s presets (e.g. hiera-t-128) on 320x240 frames."""
    from vrshq.engine.tiny import write_tiny_sam2

    config_path, checkpoint = write_tiny_sam2(work / f"sam2-{preset}", preset=preset, seed=seed)
    return random_token_inputs(work, frames, config_path, checkpoint, 320, 240, seed, config)


def _keyframe_mask(model: torch.nn.Module, choice) -> torch.Tensor:
    """``Vrshq.keyframe_mask`` (it reads only ``self.sam2``)."""
    return Vrshq.keyframe_mask(SimpleNamespace(sam2=model), choice)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- ours
def run_ours(inp: Inputs, keep_masks: bool = True) -> dict:
    """Keyframe selection + propagation as ``Vrshq.segment`` runs them after the MLLM."""
    common.reset_gpu_peak(inp.config.resolved_device())
    start = time.perf_counter()
    masks: dict[int, np.ndarray] = {}
    with open_video(inp.video) as reader:
        session = TrackingSession(inp.sam2, reader, resize=ResizeMode.VRSHQ, config=inp.config,
                                  isolated_passes=True)
        try:
            choice = select_keyframe_with_token(inp.sam2, session.features, inp.grid, inp.token,
                                                inp.lam, fill_hole_area=inp.config.fill_hole_area)
            session.add_model_mask(1, choice.keyframe, _keyframe_mask(inp.sam2, choice))
            for result in session.propagate("both"):
                mask = result.objects[1].mask()
                if keep_masks:
                    masks[result.frame_idx] = mask
            stats = session.features.stats
            encoder_calls, decodes = stats.encoder_calls, stats.frames_decoded
        finally:
            session.close()
    common.sync(inp.config.resolved_device())
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "gpu_peak_mib": common.gpu_peak_mib(inp.config.resolved_device()),
            "keyframe": choice.keyframe,
            "object_scores": choice.object_scores.tolist(), "encoder_calls": encoder_calls,
            "frames_decoded": decodes, "masks": masks}


# ----------------------------------------------------------------------------- reference
class _Counters:
    def __init__(self) -> None:
        self.encoder_calls = 0
        self.frames_decoded = 0
        self.states = 0


@contextlib.contextmanager
def _counting_encoder(predictor: torch.nn.Module, counters: _Counters) -> Iterator[None]:
    original = predictor.forward_image

    def forward_image(img_batch):
        counters.encoder_calls += 1
        return original(img_batch)

    predictor.forward_image = forward_image
    try:
        yield
    finally:
        del predictor.forward_image


@contextlib.contextmanager
def _images_loader(load: Callable[[], torch.Tensor], size: int) -> Iterator[None]:
    """Make sam2's ``init_state`` take ``load()``'s preprocessed frames instead of a path.

    The state's video size is set to S x S, as the fork's ``init_state(sam_images)`` sets it
    from the padded images, so sam2's "video-res" outputs are the logits upsampled to the model
    input, which the release then crops and resizes (``_release_masks_to_original``).
    """
    import sam2.sam2_video_predictor as svp

    original = svp.load_video_frames
    svp.load_video_frames = lambda **kwargs: (load(), size, size)
    try:
        yield
    finally:
        svp.load_video_frames = original


# SAM's pixel statistics on the 0..255 scale (the release's dataset, LISA's defaults)
_PIXEL_MEAN = torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)
_PIXEL_STD = torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1)


def _release_resized_hw(orig_h: int, orig_w: int, size: int) -> tuple[int, int]:
    """LISA's ``ResizeLongestSide.get_preprocess_shape``: the image region inside S x S."""
    scale = size * 1.0 / max(orig_h, orig_w)
    return int(orig_h * scale + 0.5), int(orig_w * scale + 0.5)


def _release_frame(frame: np.ndarray, size: int) -> torch.Tensor:
    """The release's SAM input of one RGB frame (``dataset/rvos_clip_eval_dataset.py``).

    ``ResizeLongestSide.apply_image`` (torchvision's resize of the PIL image), then
    ``preprocess``: normalise on the 0..255 scale and zero-pad bottom/right to S x S.
    """
    from torchvision.transforms.functional import resize, to_pil_image

    new_h, new_w = _release_resized_hw(frame.shape[0], frame.shape[1], size)
    x = torch.from_numpy(np.array(resize(to_pil_image(frame), [new_h, new_w])))
    x = (x.permute(2, 0, 1).contiguous() - _PIXEL_MEAN) / _PIXEL_STD
    return F.pad(x, (0, size - new_w, 0, size - new_h))


def _release_masks_to_original(video_res: torch.Tensor, orig_hw: tuple[int, int]) -> torch.Tensor:
    """S x S logits -> the video's size: crop the resized region, bilinear (cliptree L559-561)."""
    new_h, new_w = _release_resized_hw(*orig_hw, video_res.shape[-1])
    masks = video_res[..., :new_h, :new_w]
    return F.interpolate(masks, orig_hw, mode="bilinear", align_corners=False)


def _load_all_frames(video: Path, size: int, device: torch.device,
                     counters: _Counters) -> torch.Tensor:
    """The official loader: every frame decoded and preprocessed into one [T, 3, S, S] tensor."""
    with open_video(video) as reader:
        out = torch.empty(len(reader), 3, size, size)
        for i, frame in reader.iter_frames():
            out[i] = _release_frame(frame, size)
            counters.frames_decoded += 1
    return out.to(device)


@contextlib.contextmanager
def _token_appended(predictor: torch.nn.Module, token: torch.Tensor) -> Iterator[None]:
    """sam2's prompt encoder with the token after its sparse tokens: the fork's change to
    ``_forward_sam_heads`` (``sam2/sam2_video_inference_.py`` L1574-1584)."""
    encoder = predictor.sam_prompt_encoder
    original = encoder.forward
    pred_embeddings = token.reshape(1, 1, -1)

    def forward(points, boxes, masks):
        sparse, dense = original(points=points, boxes=boxes, masks=masks)
        extra = pred_embeddings.expand(sparse.shape[0], -1, -1).to(sparse.device)
        return torch.cat((sparse, extra), dim=1).to(pred_embeddings.dtype), dense

    encoder.forward = forward
    try:
        yield
    finally:
        del encoder.forward


def _add_new_points_with_token(predictor, state, frame_idx: int, obj_id: int,
                               token: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The fork's ``add_new_points(pred_embeddings=token)`` (L232-311) on sam2's own methods.

    Returns the "video-res" mask logits (S x S here) and the object-score logit.
    """
    obj_idx = predictor._obj_id_to_idx(state, obj_id)
    is_init_cond_frame = frame_idx not in state["frames_tracked_per_obj"][obj_idx]
    if not is_init_cond_frame:
        raise RuntimeError("the release decodes the token on a reset state only")
    with _token_appended(predictor, token):
        current_out, _ = predictor._run_single_frame_inference(
            inference_state=state, output_dict=state["output_dict_per_obj"][obj_idx],
            frame_idx=frame_idx, batch_size=1, is_init_cond_frame=True, point_inputs=None,
            mask_inputs=None, reverse=False, run_mem_encoder=False)
    state["temp_output_dict_per_obj"][obj_idx]["cond_frame_outputs"][frame_idx] = current_out
    consolidated = predictor._consolidate_temp_output_across_obj(
        state, frame_idx, is_cond=True, consolidate_at_video_res=True)
    _, video_res_masks = predictor._get_orig_video_res_output(
        state, consolidated["pred_masks_video_res"])
    return video_res_masks, current_out["object_score_logits"][0].item()


def _release_keyframe(object_scores: list[float], lam: torch.Tensor) -> int:
    """TKS as the release computes it (cliptree L506-518): first maximum of the sums."""
    softmaxed = torch.softmax(torch.tensor(object_scores), dim=0).tolist()
    results = [b + c for b, c in zip(softmaxed, lam.tolist())]
    return results.index(max(results))


def run_reference(inp: Inputs, loading: str = "sample", keep_masks: bool = True) -> dict:
    """The official keyframe selection + inference on sam2's predictor (brief §3.3, §4.1)."""
    predictor = inp.predictor
    size = int(predictor.image_size)
    device = predictor.device
    counters = _Counters()
    common.reset_gpu_peak(device)
    start = time.perf_counter()
    with open_video(inp.video) as reader:
        orig_hw = (reader.height, reader.width)
        num_frames = len(reader)
    cached: list[torch.Tensor] = []

    def load() -> torch.Tensor:
        counters.states += 1
        if loading == "state" or not cached:
            cached[:] = [_load_all_frames(inp.video, size, device, counters)]
        return cached[0]

    masks: dict[int, np.ndarray] = {}
    # The predictor's weights are cast to ours' precision plan (official: the release's bf16
    # weights, as it loads SAM-2; fp32 on a CPU by default), so both sides compute alike.
    with _counting_encoder(predictor, counters), _images_loader(load, size):
        # §3.3: a fresh full-video state per candidate, decoded alone with the token
        scores = []
        for frame_idx in inp.grid:
            state = predictor.init_state("<preprocessed frames>")
            predictor.reset_state(state)
            with torch.inference_mode():
                _, score = _add_new_points_with_token(predictor, state, frame_idx, 1, inp.token)
            scores.append(score)
            del state
        keyframe = inp.grid[_release_keyframe(scores, inp.lam)]
        # §4.1: fresh state, token decode of the keyframe, reset, re-add its binarised mask
        state = predictor.init_state("<preprocessed frames>")
        predictor.reset_state(state)
        with torch.inference_mode():
            video_res, _ = _add_new_points_with_token(predictor, state, keyframe, 1, inp.token)
        predictor.reset_state(state)
        mask_input = video_res > 0  # [1, 1, S, S]
        passes = []
        if keyframe < num_frames - 1 or num_frames == 1:
            passes.append(False)
        if keyframe > 0:
            passes.append(True)
        for n, reverse in enumerate(passes):
            if n:
                predictor.reset_state(state)
            predictor.add_new_mask(state, keyframe, 1, mask_input[0][0])
            for f, _, video_res in predictor.propagate_in_video(state, start_frame_idx=keyframe,
                                                               reverse=reverse):
                if f in masks:
                    continue  # the keyframe, yielded by both passes
                mask = _release_masks_to_original(video_res[:1].float(), orig_hw)[0, 0] > 0
                mask = mask.cpu().numpy()
                masks[f] = mask if keep_masks else np.empty(0, bool)
        del state
    cached.clear()
    common.sync(device)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "gpu_peak_mib": common.gpu_peak_mib(device), "keyframe": keyframe,
            "object_scores": scores, "encoder_calls": counters.encoder_calls,
            "frames_decoded": counters.frames_decoded, "states": counters.states,
            "masks": masks if keep_masks else {}, "frames_tracked": len(masks)}


# ----------------------------------------------------------------------------- comparison
def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def compare(ours: dict, ref: dict) -> dict:
    """Same keyframe, identical masks, minimum IoU over frames."""
    frames = sorted(ref["masks"])
    same_frames = frames == sorted(ours["masks"])
    common = [f for f in frames if f in ours["masks"]]
    return {
        "same_keyframe": ours["keyframe"] == ref["keyframe"],
        "same_frames": same_frames,
        "identical_masks": same_frames and all(np.array_equal(ours["masks"][f], ref["masks"][f])
                                               for f in common),
        "min_iou": min((_iou(ours["masks"][f], ref["masks"][f]) for f in common), default=0.0),
        "max_object_score_diff": float(np.max(np.abs(np.subtract(ours["object_scores"],
                                                                 ref["object_scores"])))),
    }


def bench_compare(inp: Inputs, loadings: list[str], repeat: int = 3, warmup: bool = True) -> list[dict]:
    """Ours vs the reference in each loading mode, in this process, on the same inputs.

    The runs alternate (ours, then each reference) ``repeat`` times and each side's fastest
    run is compared, so a burst of load from another process hits both sides alike.
    """
    if warmup:  # first-call allocations and lazy imports count to neither side
        run_ours(inp, keep_masks=False)
    ours_runs: list[dict] = []
    ref_runs: dict[str, list[dict]] = {m: [] for m in loadings}
    for _ in range(max(1, repeat)):
        ours_runs.append(run_ours(inp, keep_masks=not ours_runs))
        for loading in loadings:
            ref_runs[loading].append(run_reference(inp, loading, keep_masks=not ref_runs[loading]))
    ours = ours_runs[0]
    ours_s = min(r["seconds"] for r in ours_runs)
    rows = []
    for loading in loadings:
        ref = ref_runs[loading][0]
        ref_s = min(r["seconds"] for r in ref_runs[loading])
        rows.append({
            "reference_loading": loading, "frames": len(ours["masks"]), "candidates": len(inp.grid),
            **compare(ours, ref), "keyframe": ours["keyframe"],
            "ours_encoder_calls": ours["encoder_calls"], "ours_frames_decoded": ours["frames_decoded"],
            "ref_encoder_calls": ref["encoder_calls"], "ref_frames_decoded": ref["frames_decoded"],
            "ref_states": ref["states"], "ours_s": ours_s, "ref_s": ref_s,
            "time_ratio": ours_s / ref_s,
            "ours_gpu_peak_mib": _max_peak(ours_runs), "ref_gpu_peak_mib": _max_peak(ref_runs[loading]),
            "ours_runs_s": [round(r["seconds"], 4) for r in ours_runs],
            "ref_runs_s": [round(r["seconds"], 4) for r in ref_runs[loading]],
        })
    return rows


def _max_peak(runs: list[dict]) -> float | None:
    peaks = [r["gpu_peak_mib"] for r in runs if r.get("gpu_peak_mib") is not None]
    return max(peaks) if peaks else None


# ----------------------------------------------------------------------------- peak RSS
def rss_child(side: str, video: str, model_dir: str, size: int, budget_mib: int) -> dict:
    """In a fresh process: VRS-HQ on a long video, ours (``Vrshq.segment``) or the reference.

    Ours runs as shipped, hole filling included (it keeps no extra state); the reference cannot.
    """
    config = VrshqConfig(engine=EngineConfig(feature_budget_bytes=budget_mib * common.MiB,
                                             state_budget_bytes=budget_mib * common.MiB // 4))
    vrshq = _tiny_vrshq(Path(model_dir), size, config)
    base = common.peak_rss_mib()
    start = time.perf_counter()
    with open_video(video) as reader:
        frames = len(reader)
        if side == "ours":
            results = vrshq.segment(reader, [PROMPT])
            keyframe = results[0].keyframe
        else:
            anchor, grid, token, lam = mllm_part(vrshq, Path(video))
            predictor = _reference_predictor_tiny(Path(model_dir))
            inp = Inputs(vrshq.sam2, predictor, Path(video), grid, token, lam, config.engine, anchor)
            keyframe = run_reference(inp, "sample", keep_masks=False)["keyframe"]
    return {"side": side, "frames": frames, "peak_rss_mib": common.peak_rss_mib(),
            "rss_after_model_load_mib": base, "seconds": time.perf_counter() - start,
            "keyframe": keyframe,
            "feature_budget_mib": budget_mib if side == "ours" else None}


def bench_rss(work: Path, size: int, budget_mib: int, frames: int = 1000) -> list[dict]:
    """Peak RSS on a ``frames``-long 320x240 video, each side in a fresh process."""
    spec = SyntheticSpec(num_frames=frames, width=320, height=240, fps=25.0, num_objects=2, seed=3)
    video = write_video(spec, work / f"long{frames}.mp4")
    _tiny_vrshq(work / "model", size)  # writes the model folder if needed
    return [common.run_child("bench.vrshq_bench", "--rss-child", side, str(video), str(work / "model"),
                             str(size), str(budget_mib))
            for side in ("ours", "reference")]


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--size", type=int, default=128, help="SAM-2 input size (128: tiny model)")
    parser.add_argument("--parts", default="compare,rss", help="comma-separated subset of compare,rss")
    parser.add_argument("--reference-loading", choices=("sample", "state", "both"), default="both",
                        help="frames decoded once per sample, once per state, or measure both")
    parser.add_argument("--full-size", action="store_true",
                        help="SAM-2 hiera-L random weights, 1024 px, 1280x720 frames (for a GPU)")
    parser.add_argument("--sam2-preset", default=None,
                        help="compare only: a random SAM-2 preset of vrshq.engine.tiny (e.g. "
                             "hiera-t-128, the real hiera-t encoder) with a random token")
    parser.add_argument("--rss-frames", type=int, default=1000)
    parser.add_argument("--rss-budget-mib", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3,
                        help="alternating runs per side; the fastest of each is compared")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default="auto",
                        help="compare with --full-size or --sam2-preset: auto, cpu, cuda, cuda:N")
    parser.add_argument("--precision", choices=common.PRECISIONS, default="auto",
                        help="compare with --full-size or --sam2-preset: official (the release's "
                             "bf16 weights), fp32, or auto (official on CUDA, fp32 on the CPU); "
                             "both sides run at it")
    parser.add_argument("--rss-child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rss_child:
        side, video, model_dir, size, budget = args.rss_child
        print(json.dumps(rss_child(side, video, model_dir, int(size), int(budget))))
        return 0
    parts = set(args.parts.split(","))
    loadings = ["sample", "state"] if args.reference_loading == "both" else [args.reference_loading]
    work = Path(tempfile.mkdtemp(prefix="vrshq-bench-"))
    atexit.register(shutil.rmtree, work, True)  # models and videos: hundreds of MB per run
    results: dict = {"frames": args.frames, "full_size": args.full_size}
    t: dict[str, float] = {}
    if "compare" in parts:
        with common.timed(t, "inputs"):
            config = replace(common.engine_config(args.device, args.precision), fill_hole_area=0)
            if args.full_size:
                inp = full_size_inputs(work, args.frames, config=config)
                label = "SAM-2 hiera-L (random weights), 1024 px, 1280x720"
            elif args.sam2_preset:
                inp = preset_inputs(work, args.frames, args.sam2_preset, config=config)
                label = f"SAM-2 {args.sam2_preset} (random weights, random token), 320x240"
            else:
                inp = tiny_inputs(work, args.frames, args.size)
                label = f"tiny VRS-HQ, {args.size} px, 320x240"
        results["model"] = label
        results["size"] = int(inp.sam2.image_size)
        results["device"] = str(inp.config.resolved_device())
        results["precision"] = args.precision if (args.full_size or args.sam2_preset) else "auto"
        results["compare"] = bench_compare(inp, loadings, args.repeat, warmup=not args.full_size)
        common.print_table(f"1. keyframe selection + propagation vs the official procedure ({label}, "
                           f"{args.frames} frames, {results['device']}, best of {args.repeat})",
                           [{k: v for k, v in r.items() if not k.endswith("_runs_s")}
                            for r in results["compare"]])
        del inp
    if "rss" in parts and not (args.full_size or args.sam2_preset):
        results["rss"] = bench_rss(work, args.size, args.rss_budget_mib, args.rss_frames)
        common.print_table(f"2. peak RSS, {args.rss_frames} frames (tiny VRS-HQ; ours: feature budget "
                           f"{args.rss_budget_mib} MiB; reference: frames decoded once per sample)",
                           results["rss"])
    name = ("vrshq_full" if args.full_size else
            f"vrshq_{args.sam2_preset}" if args.sam2_preset else "vrshq")
    results["sam2_preset"] = args.sam2_preset
    print(f"\nwrote {common.write_json(name, results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
