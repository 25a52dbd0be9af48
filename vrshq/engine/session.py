"""A stateful SAM-2 tracking session over one video: prompts, propagation and corrections.

The propagation follows ``sam2.sam2_video_predictor.SAM2VideoPredictor`` (sam2 1.1.0) step for
step, so that masks equal the predictor's on the same weights, but it differs where the
predictor is hard to use in a product:

* frames are decoded on demand and their image features computed once per session, kept
  within a memory budget and spilled to disk (or recomputed) past it;
* per-frame memories past the state budget are spilled too, so a long video does not grow RAM;
* every prompted frame is a conditioning frame, also a correction on an already tracked frame
  (sam2's ``add_all_frames_to_correct_as_cond``), and a correction re-propagates only the
  corrected object, from cached features: no image-encoder call;
* each object is tracked from its own prompted frames (forward from the earliest, backward
  from it), so objects prompted on different frames never hit sam2's bf16/fp32 mix on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vrshq.engine.config import EngineConfig
from vrshq.engine.features import FeatureCache, FrameFeatures
from vrshq.engine.holes import fill_holes
from vrshq.engine.precision import check_model_precision
from vrshq.engine.persist import current_slot, model_fingerprint
from vrshq.engine.objects import NonCondOutputs, ObjectState, PointPrompt, PosEncHolder
from vrshq.engine.store import Tier, TieredStore
from vrshq.errors import PromptError
from vrshq.video.reader import VideoReader
from vrshq.video.transforms import FrameTransform, ResizeMode

Direction = Literal["both", "forward", "backward"]
# The passes each direction runs; "both" goes backward from the earliest prompt, as sam2 does.
_PASSES: dict[str, tuple[str, ...]] = {
    "both": ("forward", "backward_from_first"),
    "forward": ("forward",),
    "backward": ("backward_from_last",),
}


def _numbers(values: object, what: str) -> torch.Tensor:
    """Prompt coordinates or labels as float32, or a PromptError (not a torch error)."""
    try:
        t = torch.as_tensor(values, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise PromptError(f"{what} must be numbers ({exc})") from None
    if not bool(torch.isfinite(t).all()):
        raise PromptError(f"{what} must be finite numbers")
    return t


@dataclass
class ObjectFrame:
    """One object's result on one frame: low-res logits kept, full-size mask made on demand."""

    obj_id: int
    frame_idx: int
    score: float
    low_res_logits: torch.Tensor
    transform: FrameTransform
    orig_hw: tuple[int, int]

    def logits(self) -> torch.Tensor:
        """Mask logits at the video's original size, float32 [H, W]."""
        return self.transform.masks_to_original(self.low_res_logits.float(), self.orig_hw)[0, 0]

    def mask(self) -> np.ndarray:
        """The boolean mask at the video's original size."""
        return (self.logits() > 0).cpu().numpy()

    @property
    def present(self) -> bool:
        """Whether SAM-2's object-presence head says the object is there."""
        return self.score > 0


@dataclass
class FrameResult:
    """Results of the objects processed on one frame."""

    frame_idx: int
    objects: dict[int, ObjectFrame] = field(default_factory=dict)


class TrackingSession:
    """Prompts and propagation for several objects over one video, on a sam2 model."""

    def __init__(self, model: torch.nn.Module, reader: VideoReader,
                 resize: ResizeMode | str = ResizeMode.SAM2,
                 config: EngineConfig | None = None, isolated_passes: bool = False) -> None:
        self.config = config or EngineConfig()
        check_model_precision(model, self.config)
        # False: a backward pass also attends to the forward pass's memories, as sam2's
        # predictor does. True: it sees only its own, as VRS-HQ's reset-and-re-add does.
        self.isolated_passes = isolated_passes
        self.model = model
        self.reader = reader
        self.num_frames = len(reader)
        self.orig_hw = (reader.height, reader.width)
        self.device = self.config.resolved_device()
        self.transform = FrameTransform(ResizeMode(resize), int(model.image_size))
        # A task's stored features (vrshq.engine.persist): read by a correction, kept by a prediction.
        self._slot = current_slot()
        self._slot_key = self._feature_key() if self._slot is not None else None
        stored = self._slot.open(self._slot_key) if self._slot is not None else None
        self.features = FeatureCache(model, reader, self.transform, self.config, stored=stored)
        self._state_store = TieredStore([Tier(torch.device("cpu"), self.config.state_budget_bytes)],
                                        spill_to_disk=True, directory=self.config.spill_dir())
        self._pos_enc = PosEncHolder()
        self._objects: dict[int, ObjectState] = {}

    def _feature_key(self) -> dict:
        """What the image features depend on besides the video and the model version."""
        return {"resize": str(self.transform.mode.value),
                "image_size": int(self.model.image_size), "dtype": str(self.config.dtype()),
                "device": self.device.type, "levels": int(self.model.num_feature_levels),
                "frames": int(self.num_frames), "hw": list(self.orig_hw),
                "weights": model_fingerprint(self.model)}

    # ----------------------------------------------------------------- objects and prompts
    @property
    def object_ids(self) -> list[int]:
        """Ids of the objects prompted so far, in the order they were added."""
        return list(self._objects)

    def prompted_frames(self, obj_id: int) -> list[int]:
        """The conditioning frames of ``obj_id``."""
        return self._object(obj_id).prompted_frames()

    def add_mask(self, obj_id: int, frame_idx: int, mask: np.ndarray) -> ObjectFrame:
        """Prompt (or correct) ``obj_id`` on ``frame_idx`` with a boolean mask at video size."""
        self._check_frame(frame_idx)
        mask = np.asarray(mask)
        if mask.shape != self.orig_hw:
            raise PromptError(
                f"mask for object {obj_id} on frame {frame_idx} is {mask.shape[1::-1] if mask.ndim == 2 else mask.shape}"
                f" (width x height) but the video is {self.orig_hw[1]}x{self.orig_hw[0]}")
        obj = self._get_or_add(obj_id)
        return self._add_mask_inputs(obj, frame_idx, self.transform.mask_to_model(mask.astype(bool)))

    def add_model_mask(self, obj_id: int, frame_idx: int, mask_inputs: torch.Tensor) -> ObjectFrame:
        """Prompt with a binary mask already in model-input space ([S, S], padding included).

        VRS-HQ re-adds its decoded keyframe mask this way: binarised at the model's input size,
        never resized through the video's resolution (cliptree L535-605 of the official code).
        """
        self._check_frame(frame_idx)
        size = int(self.model.image_size)
        mask_inputs = torch.as_tensor(mask_inputs)
        if tuple(mask_inputs.shape[-2:]) != (size, size) or mask_inputs.numel() != size * size:
            raise PromptError(f"a model-space mask is {size}x{size}, got {tuple(mask_inputs.shape)}")
        obj = self._get_or_add(obj_id)
        return self._add_mask_inputs(obj, frame_idx, (mask_inputs.reshape(1, 1, size, size) > 0).float())

    def _add_mask_inputs(self, obj: ObjectState, frame_idx: int, mask_inputs: torch.Tensor) -> ObjectFrame:
        mask_inputs = mask_inputs.to(self.device)
        obj.masks[frame_idx] = mask_inputs
        obj.points.pop(frame_idx, None)
        return self._run_prompt(obj, frame_idx, point_inputs=None, mask_inputs=mask_inputs)

    def add_points(self, obj_id: int, frame_idx: int, points: Sequence[Sequence[float]] | None = None,
                   labels: Sequence[int] | None = None, box: Sequence[float] | None = None,
                   clear_old: bool = True) -> ObjectFrame:
        """Prompt ``obj_id`` with clicks (label 1 positive, 0 negative) and/or a box, in video pixels."""
        self._check_frame(frame_idx)
        if (points is None) != (labels is None):
            raise PromptError("points and labels must be given together")
        if points is None and box is None:
            raise PromptError("give points with labels, a box, or both")
        coords = torch.zeros(0, 2) if points is None else _numbers(points, "points")
        lab = torch.zeros(0) if labels is None else _numbers(labels, "labels").reshape(-1)
        if coords.numel() % 2:
            raise PromptError(f"points are [x, y] pairs, got shape {tuple(coords.shape)}")
        coords = coords.reshape(-1, 2)
        if coords.shape[0] != lab.shape[0]:
            raise PromptError(f"{coords.shape[0]} points but {lab.shape[0]} labels")
        if lab.numel() and not bool(((lab == 0) | (lab == 1)).all()):
            raise PromptError("point labels must be 1 (positive) or 0 (negative)")
        lab = lab.to(torch.int32)
        if box is not None:
            if not clear_old:
                raise PromptError("a box replaces the frame's earlier clicks: use clear_old=True")
            box_t = _numbers(box, "box")
            if box_t.numel() != 4:
                raise PromptError(f"a box is [x0, y0, x1, y1], got {box_t.numel()} numbers")
            box_t = box_t.reshape(2, 2)
            coords = torch.cat([box_t, coords], dim=0)
            lab = torch.cat([torch.tensor([2, 3], dtype=torch.int32), lab], dim=0)
        model_coords = self.transform.points_to_model(coords, self.orig_hw)
        obj = self._get_or_add(obj_id)
        new = PointPrompt(model_coords[None].to(self.device), lab[None].to(self.device))
        old = obj.points.get(frame_idx) if not clear_old else None
        if old is not None:
            new = PointPrompt(torch.cat([old.point_coords, new.point_coords], dim=1),
                              torch.cat([old.point_labels, new.point_labels], dim=1))
        obj.points[frame_idx] = new
        obj.masks.pop(frame_idx, None)
        return self._run_prompt(obj, frame_idx, point_inputs=new.as_sam2(), mask_inputs=None)

    def remove_object(self, obj_id: int) -> None:
        """Forget ``obj_id`` and its state."""
        obj = self._objects.pop(obj_id, None)
        if obj is not None:
            obj.non_cond.clear()

    # ----------------------------------------------------------------- propagation
    def propagate(self, direction: Direction = "both", obj_ids: Sequence[int] | None = None,
                  ) -> Iterator[FrameResult]:
        """Track the objects through the video; returns a generator of per-frame results.

        Each object is tracked forward from its earliest prompted frame to the end and (for
        "both") backward from there to frame 0; "backward" alone starts at its latest prompt.
        Only passes an object still needs run: a new prompt makes it re-track from scratch,
        ``obj_ids`` forces those objects to. Arguments are checked here, before iteration.
        """
        if direction not in _PASSES:
            raise PromptError(f"direction must be both, forward or backward, not {direction!r}")
        forced = [self._object(i) for i in obj_ids] if obj_ids is not None else []
        candidates = forced or list(self._objects.values())
        for obj in candidates:
            if not obj.cond:
                raise PromptError(f"object {obj.obj_id} has no prompt")
        return self._propagate(direction, candidates, forced)

    def _propagate(self, direction: Direction, candidates: list[ObjectState],
                   forced: list[ObjectState]) -> Iterator[FrameResult]:
        forced_ids = {o.obj_id for o in forced}
        for obj in candidates:
            if obj.dirty or obj.obj_id in forced_ids:
                obj.non_cond.clear()
                obj.tracked = {t: obj.tracked.get(t, False) for t in obj.cond}
                obj.passes_done = set()
                obj.dirty = False
        for name in _PASSES[direction]:
            objs = [o for o in candidates if name not in o.passes_done]
            if not objs:
                continue
            if name == "forward":
                starts = {o.obj_id: min(o.cond) for o in objs}
            elif name == "backward_from_first":
                starts = {o.obj_id: min(o.cond) for o in objs}
            else:
                starts = {o.obj_id: max(o.cond) for o in objs}
            yield from self._pass(objs, starts, reverse=name != "forward",
                                  skip_start=name == "backward_from_first")
            for obj in objs:
                obj.passes_done.add(name)

    def _pass(self, objs: list[ObjectState], starts: dict[int, int], reverse: bool,
              skip_start: bool) -> Iterator[FrameResult]:
        if reverse:
            order = range(max(starts.values()), -1, -1)
        else:
            order = range(min(starts.values()), self.num_frames)
        block_end = None
        for frame_idx in order:
            if reverse and (block_end is None or frame_idx < block_end):
                block_end = max(0, frame_idx + 1 - self.features.block_size())
                self.features.prefetch_range(block_end, frame_idx + 1)
            active = [o for o in objs if (frame_idx <= starts[o.obj_id] if reverse
                                          else frame_idx >= starts[o.obj_id])]
            if skip_start:
                for o in active:
                    if frame_idx == starts[o.obj_id] and frame_idx > 0:
                        # sam2's reverse pass revisits its start frame and marks it reversed;
                        # from frame 0 it runs no reverse pass, so frame 0 stays forward.
                        o.tracked[frame_idx] = reverse
                active = [o for o in active if frame_idx != starts[o.obj_id]]
            if not active:
                continue
            result = FrameResult(frame_idx)
            for obj in active:
                hide_after = starts[obj.obj_id] if reverse and self.isolated_passes else None
                result.objects[obj.obj_id] = self._track_frame(obj, frame_idx, reverse, hide_after)
            yield result

    def _track_frame(self, obj: ObjectState, frame_idx: int, reverse: bool,
                     hide_after: int | None = None) -> ObjectFrame:
        out = obj.cond.get(frame_idx)
        if out is None:
            feats = self.features.get(frame_idx)
            with torch.inference_mode():
                current = self._step(obj, frame_idx, feats, is_init=False, reverse=reverse,
                                     run_mem_encoder=True, hide_after=hide_after)
            out = self._compact(current)
            obj.non_cond[frame_idx] = out
        obj.tracked[frame_idx] = reverse
        return self._object_frame(obj.obj_id, frame_idx, out)

    # ----------------------------------------------------------------- internals
    def _step(self, obj: ObjectState, frame_idx: int, feats: FrameFeatures, *, is_init: bool,
              reverse: bool, run_mem_encoder: bool, point_inputs: dict | None = None,
              mask_inputs: torch.Tensor | None = None,
              prev_sam_mask_logits: torch.Tensor | None = None,
              hide_after: int | None = None) -> dict:
        """One ``SAM2Base.track_step`` for one object on one frame."""
        return self.model.track_step(
            frame_idx=frame_idx, is_init_cond_frame=is_init,
            current_vision_feats=feats.vision_feats,
            current_vision_pos_embeds=feats.vision_pos_embeds, feat_sizes=feats.feat_sizes,
            point_inputs=point_inputs, mask_inputs=mask_inputs,
            output_dict=obj.output_dict(hide_after),
            num_frames=self.num_frames, track_in_reverse=reverse,
            run_mem_encoder=run_mem_encoder, prev_sam_mask_logits=prev_sam_mask_logits)

    def _run_prompt(self, obj: ObjectState, frame_idx: int, point_inputs: dict | None,
                    mask_inputs: torch.Tensor | None) -> ObjectFrame:
        # sam2_video_predictor.add_new_points_or_box / add_new_mask: an untracked frame is an
        # initial conditioning frame (no memory); a tracked one is corrected with memory.
        is_init = frame_idx not in obj.tracked
        reverse = False if is_init else obj.tracked[frame_idx]
        prev_logits = None
        if point_inputs is not None:
            prev = obj.previous_output(frame_idx)
            if prev is not None and prev["pred_masks"] is not None:
                prev_logits = torch.clamp(prev["pred_masks"].to(self.device), -32.0, 32.0)
        feats = self.features.get(frame_idx)
        with torch.inference_mode():
            current = self._step(obj, frame_idx, feats, is_init=is_init, reverse=reverse,
                                 run_mem_encoder=False, point_inputs=point_inputs,
                                 mask_inputs=mask_inputs, prev_sam_mask_logits=prev_logits)
            out = self._compact(current)
            # propagate_in_video_preflight: memory of a prompted frame from its upsampled
            # low-res mask, binarised as a user input (is_mask_from_pts=True).
            high_res = F.interpolate(out["pred_masks"].to(self.device),
                                     size=(self.model.image_size, self.model.image_size),
                                     mode="bilinear", align_corners=False)
            maskmem, pos = self.model._encode_new_memory(
                current_vision_feats=feats.vision_feats, feat_sizes=feats.feat_sizes,
                pred_masks_high_res=high_res, object_score_logits=out["object_score_logits"],
                is_mask_from_pts=True)
        out["maskmem_features"] = maskmem.to(torch.bfloat16)
        self._remember_pos_enc(pos)
        out["maskmem_pos_enc"] = self._pos_enc.value
        obj.cond[frame_idx] = out
        obj.non_cond.pop(frame_idx)
        obj.dirty = True
        return self._object_frame(obj.obj_id, frame_idx, out)

    def _compact(self, current: dict) -> dict:
        # The fields SAM2VideoPredictor._run_single_frame_inference keeps per frame.
        maskmem = current["maskmem_features"]
        if maskmem is not None:
            maskmem = maskmem.to(torch.bfloat16)
            self._remember_pos_enc(current["maskmem_pos_enc"])
        # sam2_video_predictor._run_single_frame_inference fills holes in pred_masks before it
        # stores or returns them (after track_step, so a tracked frame's own memory is encoded
        # from the unfilled mask; a prompted frame's memory is encoded from the filled one).
        pred_masks = fill_holes(current["pred_masks"], self.config.fill_hole_area)
        return {
            "maskmem_features": maskmem,
            "maskmem_pos_enc": self._pos_enc.value,
            "pred_masks": pred_masks,
            "obj_ptr": current["obj_ptr"],
            "object_score_logits": current["object_score_logits"],
        }

    def _remember_pos_enc(self, pos: list[torch.Tensor] | None) -> None:
        if pos is not None and self._pos_enc.value is None:
            self._pos_enc.value = [x[0:1].clone() for x in pos]

    def _object_frame(self, obj_id: int, frame_idx: int, out: dict) -> ObjectFrame:
        return ObjectFrame(obj_id, frame_idx, float(out["object_score_logits"].float().reshape(-1)[0]),
                           out["pred_masks"].detach().float().cpu(), self.transform, self.orig_hw)

    def _get_or_add(self, obj_id: int) -> ObjectState:
        if not isinstance(obj_id, (int, np.integer)) or isinstance(obj_id, bool) or obj_id < 1:
            raise PromptError(f"object ids are positive integers, not {obj_id!r}")
        obj_id = int(obj_id)
        if obj_id not in self._objects:
            non_cond = NonCondOutputs(obj_id, self._state_store, self._pos_enc, self.device)
            self._objects[obj_id] = ObjectState(obj_id, non_cond)
        return self._objects[obj_id]

    def _object(self, obj_id: int) -> ObjectState:
        try:
            return self._objects[obj_id]
        except KeyError:
            raise PromptError(f"no object {obj_id} in this session (have {self.object_ids})") from None

    def _check_frame(self, frame_idx: int) -> None:
        if not isinstance(frame_idx, (int, np.integer)) or not 0 <= frame_idx < self.num_frames:
            raise PromptError(f"frame {frame_idx} is outside the video (0..{self.num_frames - 1})")

    def close(self) -> None:
        """Release features (or hand them to a writing feature slot), state and spill files."""
        if self._slot is None or not self._slot.adopt(self.features, self._slot_key):
            self.features.close()
        self._slot = None
        self._state_store.close()
        self._objects.clear()

    def __enter__(self) -> "TrackingSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
