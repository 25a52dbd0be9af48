"""The ``sam2`` plugin: box, points or mask prompts on a frame -> SAM-2 tracks over the video."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vrshq.plugins.base import (
    CORRECTION_KINDS,
    Correction,
    ModelPlugin,
    ObjectPrompt,
    ObjectTrack,
    PluginConfig,
    Progress,
)
from vrshq.plugins.repropagate import repropagate, track_objects
from vrshq.engine import EngineConfig, TrackingSession, apply_precision, build_model
from vrshq.engine.sam2_loader import OFFICIAL_POSTPROCESSING
from vrshq.errors import ModelError, PromptError
from vrshq.masks.track import Track
from vrshq.video.reader import VideoReader
from vrshq.video.transforms import ResizeMode

# The released SAM-2 weights `vrshq download` fetches, and the config packaged with sam2 for them.
RELEASED_CHECKPOINT = "sam2_hiera_large.pt"
RELEASED_CONFIG = "configs/sam2/sam2_hiera_l.yaml"


class Sam2Plugin(ModelPlugin):
    """SAM-2 over the tracking engine; the model is loaded once and shared by all requests."""

    name = "sam2"
    capabilities = frozenset({"box", "points", "mask"})
    correction_kinds = CORRECTION_KINDS  # masks, boxes and clicks re-propagate

    def __init__(self) -> None:
        self.model: torch.nn.Module | None = None
        self.engine = EngineConfig()
        self._version: str | None = None

    @property
    def version(self) -> str:
        return self.require_loaded(self._version)

    def load(self, config: PluginConfig) -> None:
        cfg, ckpt = config.sam2_config, config.sam2_checkpoint
        overrides: tuple[str, ...] = ()
        if cfg is None:
            if ckpt is not None and not config.model_dir:
                raise ModelError("sam2_checkpoint needs sam2_config (or a model_dir with its config)")
            if not config.model_dir:
                raise ModelError("the sam2 plugin needs a model folder (model_dir with sam2/config.yaml "
                                 "and sam2/model.pt) or sam2_config and sam2_checkpoint")
            base = Path(config.model_dir) / "sam2"
            if (base / "config.yaml").is_file():
                cfg, ckpt = str(base / "config.yaml"), ckpt or str(base / "model.pt")
            elif (base / RELEASED_CHECKPOINT).is_file():
                cfg, ckpt = RELEASED_CONFIG, ckpt or str(base / RELEASED_CHECKPOINT)
                overrides = OFFICIAL_POSTPROCESSING
            else:
                raise ModelError(f"{base}: no config.yaml + model.pt and no {RELEASED_CHECKPOINT}")
            version = f"sam2-{Path(config.model_dir).resolve().name}-{Path(ckpt).stem}"
        else:
            if ckpt is None:
                # without weights sam2 would silently track with a randomly initialised model
                raise ModelError("sam2_config needs sam2_checkpoint")
            version = f"sam2-{Path(ckpt).stem}"
        # holes are filled as sam2's own builder sets it (EngineConfig.fill_hole_area, default 8)
        self.engine = config.engine_config()
        self.model = apply_precision(build_model(cfg, ckpt, overrides=overrides), self.engine)
        self._version = version

    def _loaded(self) -> torch.nn.Module:
        return self.require_loaded(self.model)

    def predict(self, video: VideoReader, prompts: list[ObjectPrompt],
                progress: Progress | None = None) -> list[ObjectTrack]:
        model = self._loaded()
        self.check_prompts(video, prompts)
        seen: set[tuple[int, int]] = set()
        for p in prompts:
            if p.frame is None:
                raise PromptError(f"object {p.obj_id}: the sam2 plugin needs the frame of the prompt")
            if p.mask is not None and (p.box is not None or p.points is not None):
                raise PromptError(f"object {p.obj_id}: give a mask or a box/points on frame {p.frame}, "
                                  "not both")
            if (int(p.obj_id), int(p.frame)) in seen:
                raise PromptError(f"object {p.obj_id} has two prompts on frame {p.frame}")
            seen.add((int(p.obj_id), int(p.frame)))

        by_obj: dict[int, list[ObjectPrompt]] = {}
        for p in prompts:
            by_obj.setdefault(int(p.obj_id), []).append(p)
        session = TrackingSession(model, video, resize=ResizeMode.SAM2, config=self.engine)
        try:
            for p in prompts:
                if p.mask is not None:
                    session.add_mask(int(p.obj_id), int(p.frame), np.asarray(p.mask, dtype=bool))
                else:
                    session.add_points(int(p.obj_id), int(p.frame), points=p.points,
                                       labels=p.point_labels, box=p.box)
            tracks = track_objects(session, progress)
        finally:
            session.close()

        results = []
        for obj_id, own in by_obj.items():
            track = tracks[obj_id]
            first = own[0]

            def conditioned(p: ObjectPrompt, track: Track = track) -> np.ndarray:
                return np.asarray(p.mask, dtype=bool) if p.mask is not None else track.mask(int(p.frame))

            score = track.score(int(first.frame))
            results.append(ObjectTrack(
                obj_id=obj_id,
                label=next((p.label for p in own if p.label is not None), None),
                track=track, keyframe=int(first.frame), keyframe_mask=conditioned(first),
                score=float(score) if score is not None else 0.0,
                details={"prompt_frames": [int(p.frame) for p in own],
                         "prompt_kinds": sorted(first.kinds())},
                corrections=[Correction(obj_id, int(p.frame), conditioned(p)) for p in own[1:]]))
        return results

    def correct(self, video: VideoReader, previous: list[ObjectTrack], corrections: list[Correction],
                progress: Progress | None = None) -> list[ObjectTrack]:
        return repropagate(self._loaded(), video, previous, corrections, resize=ResizeMode.SAM2,
                           isolated_passes=False, engine=self.engine, progress=progress)
