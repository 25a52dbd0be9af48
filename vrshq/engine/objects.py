"""Per-object tracking state: prompts, conditioning outputs, and the spilled per-frame memory."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from vrshq.engine.store import TieredStore

# The compact per-frame output that sam2's memory attention reads back
# (sam2_video_predictor.SAM2VideoPredictor._run_single_frame_inference keeps the same fields).
_FIELDS = ("maskmem_features", "pred_masks", "obj_ptr", "object_score_logits")


def pack(out: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    """The tensors of a compact output, in a fixed order."""
    return tuple(out[name] for name in _FIELDS)


def unpack(tensors: tuple[torch.Tensor, ...], maskmem_pos_enc: list[torch.Tensor]) -> dict[str, Any]:
    """A compact output dict from packed tensors and the session's constant position encoding."""
    out = dict(zip(_FIELDS, tensors))
    out["maskmem_pos_enc"] = maskmem_pos_enc
    return out


class NonCondOutputs:
    """The ``non_cond_frame_outputs`` mapping sam2 reads, backed by a budgeted store."""

    def __init__(self, obj_id: int, store: TieredStore, pos_enc: "PosEncHolder",
                 device: torch.device) -> None:
        self._obj_id = obj_id
        self._store = store
        self._pos_enc = pos_enc
        self._device = device
        self._frames: set[int] = set()

    def get(self, frame_idx: int, default: Any = None) -> Any:
        """The output of ``frame_idx`` (moved to the compute device), or ``default``."""
        if frame_idx not in self._frames:
            return default
        tensors = self._store.get((self._obj_id, frame_idx))
        if tensors is None:
            return default
        return unpack(tuple(t.to(self._device) for t in tensors), self._pos_enc.value)

    def __contains__(self, frame_idx: object) -> bool:
        return frame_idx in self._frames

    def __setitem__(self, frame_idx: int, out: dict[str, Any]) -> None:
        self._store.put((self._obj_id, frame_idx), pack(out))
        self._frames.add(frame_idx)

    def pop(self, frame_idx: int, default: Any = None) -> Any:
        """Remove ``frame_idx``; returns ``default`` (the value itself is not needed)."""
        if frame_idx in self._frames:
            self._frames.discard(frame_idx)
            self._store.discard((self._obj_id, frame_idx))
        return default

    def clear(self) -> None:
        """Forget every frame of this object."""
        for frame_idx in list(self._frames):
            self.pop(frame_idx)

    def __len__(self) -> int:
        return len(self._frames)


class _FramesUpTo:
    """A read-only view of tracked outputs that shows only frames <= ``last``."""

    def __init__(self, outputs: NonCondOutputs, last: int) -> None:
        self._outputs = outputs
        self._last = last

    def get(self, frame_idx: int, default: Any = None) -> Any:
        """The output of ``frame_idx`` if it is visible, else ``default``."""
        return self._outputs.get(frame_idx, default) if frame_idx <= self._last else default


@dataclass
class PosEncHolder:
    """The memory encoder's spatial position encoding: the same for every frame and object."""

    value: list[torch.Tensor] | None = None


@dataclass
class PointPrompt:
    """Clicks (and a box as clicks 2/3) in model coordinates, as sam2 stores them."""

    point_coords: torch.Tensor
    point_labels: torch.Tensor

    def as_sam2(self) -> dict[str, torch.Tensor]:
        """The dict shape sam2's prompt encoder takes."""
        return {"point_coords": self.point_coords, "point_labels": self.point_labels}


@dataclass
class ObjectState:
    """Everything the session knows about one object."""

    obj_id: int
    non_cond: NonCondOutputs
    cond: dict[int, dict[str, Any]] = field(default_factory=dict)
    points: dict[int, PointPrompt] = field(default_factory=dict)
    masks: dict[int, torch.Tensor] = field(default_factory=dict)
    # frame -> tracked in reverse; tells a later click which direction its frame came from
    tracked: dict[int, bool] = field(default_factory=dict)
    # prompts changed since the last propagation: re-track from scratch
    dirty: bool = True
    passes_done: set[str] = field(default_factory=set)

    def output_dict(self, hide_after: int | None = None) -> dict[str, Any]:
        """The ``output_dict`` argument of ``SAM2Base.track_step`` for this object.

        ``hide_after`` hides the tracked (non-conditioning) frames after that index: a backward
        pass then sees only its own frames, as after sam2's ``reset_state`` and a re-added prompt.
        """
        non_cond: Any = self.non_cond
        if hide_after is not None:
            non_cond = _FramesUpTo(self.non_cond, hide_after)
        return {"cond_frame_outputs": self.cond, "non_cond_frame_outputs": non_cond}

    def previous_output(self, frame_idx: int) -> dict[str, Any] | None:
        """The newest output on ``frame_idx``, conditioning first (as sam2 looks it up)."""
        out = self.cond.get(frame_idx)
        return out if out is not None else self.non_cond.get(frame_idx)

    def prompted_frames(self) -> list[int]:
        """Frames with a prompt, sorted."""
        return sorted(self.cond)
