"""The ``sam3`` plugin: text concepts -> every instance SAM 3 finds, each its own tracked object.

It runs transformers' own ``Sam3VideoModel`` (detector + tracker) with ``Sam3VideoProcessor``
on the decoded frames, one session per concept (the practical limit users report for SAM 3
video), and turns each instance into an :class:`ObjectTrack`. Corrections re-propagate with
``Sam3TrackerVideoModel``, loaded from the same checkpoint (:mod:`vrshq.plugins.sam3_tracker`);
so do objects the annotator draws (box or mask prompts on a frame), alongside concepts.

transformers fetches a Hub kernel (``cv-utils``) for SAM 3's detection NMS, hole filling and
sprinkle removal, and skips all three without it; :meth:`Sam3Plugin.load` installs ours instead
(:mod:`vrshq.plugins.sam3_kernels`), so they run offline and on CPU too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vrshq.engine.config import EngineConfig
from vrshq.errors import ModelError, PromptError
from vrshq.masks.track import Track
from vrshq.plugins.base import (
    CORRECTION_KINDS,
    Correction,
    ModelPlugin,
    ObjectPrompt,
    ObjectTrack,
    PluginConfig,
    Progress,
)
from vrshq.video.reader import VideoReader

SUBDIR = "sam3"


@dataclass
class Instance:
    """One instance of a concept as SAM 3 reported it: masks and scores by frame."""

    sam3_id: int
    masks: dict[int, np.ndarray] = field(default_factory=dict)
    scores: dict[int, float] = field(default_factory=dict)

    def keyframe(self) -> int:
        """The frame of the highest score (the earliest such frame on a tie)."""
        return max(sorted(self.scores), key=lambda f: self.scores[f])

    def first_frame(self) -> int:
        """The first frame the instance is reported on."""
        return min(self.masks)


def _logit(p: float) -> float:
    """The logit of a probability, clipped away from 0 and 1 (ObjectTrack.score is a logit)."""
    p = min(max(float(p), 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def sam3_dtype(engine: EngineConfig) -> torch.dtype:
    """SAM 3's weights and arithmetic under the engine's precision plan, or ModelError.

    fp32: float32 anywhere. official: bf16 weights and arithmetic; Meta's sam3 quick start
    (README) runs SAM 3 under ``torch.autocast("cuda", dtype=torch.bfloat16)`` and its package
    runs on CUDA only, so a CPU or a GPU without bf16 is refused. auto: official where it runs,
    fp32 elsewhere.
    """
    device = engine.resolved_device()
    if engine.precision == "fp32":
        return torch.float32
    bf16 = device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if bf16:
        return torch.bfloat16
    if engine.precision == "official":
        where = "a CPU" if device.type == "cpu" else f"{device} (no bf16)"
        raise ModelError(f"precision 'official' (SAM 3's bf16, on CUDA only) cannot run on {where}: "
                         "use --precision fp32 or auto (VRSHQ_PRECISION)")
    return torch.float32


def concept_instances(model: Any, processor: Any, video: VideoReader, concept: str,
                      progress: Callable[[int], None] | None = None) -> list[Instance]:
    """Every instance SAM 3 finds for ``concept`` over ``video``, ordered deterministically.

    Order: by the first frame an instance appears on, then by SAM 3's instance id (the order
    its detector admitted them on that frame), so equal inputs give equal object ids. Frames
    are read on demand and spent tracker outputs dropped (:mod:`vrshq.plugins.sam3_session`).
    """
    from vrshq.plugins.sam3_session import RleMasks, concept_frames

    found: dict[int, Instance] = {}
    for frame, result in concept_frames(model, processor, video, concept):
        for sam3_id, score, mask in zip(result["object_ids"].tolist(), result["scores"].tolist(),
                                        result["masks"].cpu().numpy()):
            inst = found.setdefault(int(sam3_id), Instance(int(sam3_id), masks=RleMasks()))
            inst.masks[frame] = mask.astype(bool)
            inst.scores[frame] = float(score)
        if progress is not None:
            progress(1)  # one more frame done
    return order_instances(found.values())


def order_instances(instances: Any) -> list[Instance]:
    """Instances by the first frame they appear on, then by SAM 3's instance id."""
    return sorted(instances, key=lambda i: (i.first_frame(), i.sam3_id))


def instance_track(inst: Instance, obj_id: int, prompt: ObjectPrompt, concept: str,
                   height: int, width: int) -> ObjectTrack:
    """The ObjectTrack of one instance: its masks, its keyframe (highest score), and the label
    (and label rule) of the prompt that named its concept."""
    track = Track(obj_id, height, width)
    for frame in sorted(inst.masks):
        track.set(frame, inst.masks[frame], score=_logit(inst.scores[frame]))
    key = inst.keyframe()
    details: dict[str, Any] = {"concept": concept, "prompt": prompt.text, "prompt_obj_id": prompt.obj_id,
                               "sam3_instance": inst.sam3_id, "keyframe_probability": inst.scores[key]}
    if prompt.label_rule:
        # instances are numbered anew, so the backend cannot find the rule by the prompt's id
        details["label_rule"] = prompt.label_rule
    return ObjectTrack(obj_id=obj_id, label=prompt.label, track=track, keyframe=key,
                       keyframe_mask=inst.masks[key], score=_logit(inst.scores[key]), details=details)


class Sam3Plugin(ModelPlugin):
    """SAM 3 through transformers: concepts find instances; corrections go to its tracker."""

    name = "sam3"
    capabilities = frozenset({"text", "box", "mask"})  # boxes and masks: drawn objects, by the tracker
    correction_kinds = CORRECTION_KINDS  # masks, boxes and clicks re-propagate
    labels_as_prompts = True  # the issue: with no prompt in the task, the labels are the concepts

    def __init__(self) -> None:
        self.model: Any = None
        self.processor: Any = None
        self.model_path: Path | None = None
        self.tracker: tuple[Any, Any] | None = None  # loaded on the first correction
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self._version: str | None = None

    @property
    def version(self) -> str:
        return self.require_loaded(self._version)

    @classmethod
    def check_model(cls, model_dir: str | None) -> None:
        if not model_dir:
            raise ModelError("the sam3 plugin needs a model folder (model_dir with sam3/config.json)")
        base = Path(model_dir) / SUBDIR
        missing = [n for n in ("config.json", "processor_config.json") if not (base / n).is_file()]
        if missing:
            raise ModelError(f"{base}: no {', '.join(missing)} (the facebook/sam3 release layout)")

    def load(self, config: PluginConfig) -> None:
        self.check_model(config.model_dir)
        from transformers import Sam3VideoModel, Sam3VideoProcessor

        from vrshq.plugins.sam3_kernels import install

        engine = config.engine_config()
        self.dtype = sam3_dtype(engine)  # a plan this device cannot run is refused before loading
        install()
        base = Path(config.model_dir) / SUBDIR
        self.device = engine.resolved_device()
        try:
            self.model = Sam3VideoModel.from_pretrained(base, dtype=self.dtype).to(self.device).eval()
            self.processor = Sam3VideoProcessor.from_pretrained(base)
        except (OSError, ValueError) as exc:
            raise ModelError(f"{base}: cannot load SAM 3: {exc}") from None
        self.model_path = base
        self._version = f"sam3-{Path(config.model_dir).resolve().name}"

    def _loaded(self) -> tuple[Any, Any]:
        return self.require_loaded(self.model), self.processor

    def predict(self, video: VideoReader, prompts: list[ObjectPrompt],
                progress: Progress | None = None) -> list[ObjectTrack]:
        """One track per instance of each concept (prompt order, then instance order), numbered
        from the smallest concept prompt id past the drawn objects' ids, then one per drawn
        object (box or mask prompts), under its own id."""
        from vrshq.plugins.sam3_tracker import check_geometry

        model, processor = self._loaded()
        self.check_prompts(video, prompts)
        concepts: dict[str, ObjectPrompt] = {}  # a repeated concept is one concept (its first prompt)
        drawn = [p for p in prompts if p.text is None]
        for p in prompts:
            if p.text is None:
                continue
            if p.frame is not None or p.kinds() != {"text"}:
                raise PromptError(f"object {p.obj_id}: a sam3 concept covers the whole video; "
                                  "give no frame or geometry with it")
            concepts.setdefault(p.text.strip(), p)
        check_geometry(drawn)
        drawn_ids = {int(p.obj_id) for p in drawn}
        total, done = len(video) * (len(concepts) + len(drawn_ids)), [0]  # one stage over every pass

        def step(n: int) -> None:
            done[0] += n
            if progress is not None:
                progress("propagate", done[0], total)

        results: list[ObjectTrack] = []
        if concepts:
            # instances are numbered on from the first prompt id: a task's objects from 1, objects
            # added to a task from its next free id (backend/jobs/add_objects.py), never an
            # existing one's nor a drawn object's
            next_id = min(int(p.obj_id) for p in concepts.values())
            for concept, prompt in concepts.items():
                for inst in concept_instances(model, processor, video, concept, step):
                    while next_id in drawn_ids:
                        next_id += 1
                    results.append(instance_track(inst, next_id, prompt, concept,
                                                  video.height, video.width))
                    next_id += 1
        if drawn:
            # the tracker reports once per frame it tracked (its own count per object)
            results += self._drawn(video, drawn, lambda *_: step(1))
        return results

    def _drawn(self, video: VideoReader, drawn: list[ObjectPrompt], progress: Progress) -> list[ObjectTrack]:
        """The drawn objects' tracks, by SAM 3's tracker (loaded on first use)."""
        from vrshq.plugins.sam3_tracker import geometry_tracks

        return geometry_tracks(self._tracker(), video, drawn, progress)

    def _tracker(self) -> tuple[Any, Any]:
        from vrshq.plugins.sam3_tracker import load_tracker

        if self.tracker is None:
            self.tracker = load_tracker(self.model_path, self.device, self.dtype)
        return self.tracker

    def correct(self, video: VideoReader, previous: list[ObjectTrack], corrections: list[Correction],
                progress: Progress | None = None) -> list[ObjectTrack]:
        """Re-propagate each corrected object both ways with SAM 3's tracker."""
        from vrshq.plugins.sam3_tracker import repropagate_sam3

        self._loaded()
        return repropagate_sam3(self._tracker(), video, previous, corrections, progress)
