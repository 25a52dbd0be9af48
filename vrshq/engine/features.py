"""Per-frame SAM-2 image features: computed once per frame, kept within budgets, spilled or recomputed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from vrshq.engine.config import EngineConfig
from vrshq.engine.persist import StoredFeatures
from vrshq.engine.store import Tier, TieredStore
from vrshq.video.reader import VideoReader
from vrshq.video.transforms import FrameTransform


@dataclass
class FrameFeatures:
    """What sam2's tracking step takes for one frame (batch of one)."""

    vision_feats: list[torch.Tensor]
    vision_pos_embeds: list[torch.Tensor]
    feat_sizes: list[tuple[int, int]]


@dataclass
class FeatureStats:
    """Counters the benchmarks and tests read."""

    encoder_calls: int = 0
    frames_decoded: int = 0
    cache_hits: int = 0
    stored_reads: int = 0  # frames taken from a task's stored features (vrshq.engine.persist)


class FeatureCache:
    """Runs the image encoder on demand, once per frame while the features stay cached."""

    def __init__(self, model: torch.nn.Module, reader: VideoReader, transform: FrameTransform,
                 config: EngineConfig, stored: StoredFeatures | None = None) -> None:
        self.model = model
        # A prediction's features of this task, read instead of running the encoder.
        self._stored = stored
        self.reader = reader
        self.transform = transform
        self.device = config.resolved_device()
        self._dtype = config.dtype()
        tiers = [Tier(self.device, config.feature_budget_bytes)]
        if self.device.type != "cpu":
            tiers.append(Tier(torch.device("cpu"), config.cpu_feature_budget_bytes))
        self._store = TieredStore(tiers, spill_to_disk=config.feature_spill == "disk",
                                  directory=config.spill_dir())
        # The positional encodings depend only on the feature-map shapes: one copy per session.
        self._pos_enc: list[torch.Tensor] | None = None
        self._frame_bytes: int | None = None
        if stored is not None:
            self._pos_enc = [t.to(self.device) for t in stored.pos_enc]
            self._frame_bytes = stored.frame_bytes
        self.stats = FeatureStats()

    def get(self, frame_idx: int) -> FrameFeatures:
        """The features of ``frame_idx``, from the cache or by running the encoder."""
        fpn = self._store.get(frame_idx)
        if fpn is None:
            fpn = self._from_stored(frame_idx) or self._encode(frame_idx)
            self._store.put(frame_idx, fpn)
        else:
            self.stats.cache_hits += 1
        assert self._pos_enc is not None
        backbone_out = {
            "backbone_fpn": [t.to(self.device) for t in fpn],
            "vision_pos_enc": list(self._pos_enc),
        }
        # sam2_base.SAM2Base._prepare_backbone_features flattens NCHW -> (HW)NC.
        _, feats, pos, sizes = self.model._prepare_backbone_features(backbone_out)
        return FrameFeatures(feats, pos, sizes)

    def add_frame(self, frame_idx: int, frame) -> None:
        """Encode a frame someone else already decoded (no-op when cached).

        Lets a caller that reads the whole video anyway (VRS-HQ's CLIP anchor pass) fill the
        cache in the same pass, so each frame is decoded once for everything.
        """
        if frame_idx not in self._store:
            fpn = self._from_stored(frame_idx)
            if fpn is None:
                self.stats.frames_decoded += 1
                fpn = self._encode_frame(frame)
            self._store.put(frame_idx, fpn)

    def prefetch_range(self, start: int, stop: int) -> None:
        """Encode the uncached frames of ``[start, stop)``, decoding them in order.

        A backward pass asks for frames last to first; video decoders are fast only forwards,
        so the session prefetches each block of a backward pass in ascending order first.
        """
        missing = []
        for i in range(start, stop):
            if i not in self._store:
                fpn = self._from_stored(i)
                if fpn is None:
                    missing.append(i)
                else:
                    self._store.put(i, fpn)
        if not missing:
            return
        for frame_idx, frame in self.reader.iter_frames(missing[0], missing[-1] + 1):
            if frame_idx not in self._store:
                self.stats.frames_decoded += 1
                self._store.put(frame_idx, self._encode_frame(frame))

    def block_size(self, limit: int = 64) -> int:
        """How many frames' features fit the first tier's budget (at least 1, at most ``limit``)."""
        if self._frame_bytes is None:
            return 1
        return max(1, min(limit, self._store.tiers[0].budget_bytes // max(1, self._frame_bytes)))

    def _from_stored(self, frame_idx: int) -> tuple[torch.Tensor, ...] | None:
        if self._stored is None:
            return None
        fpn = self._stored.get(frame_idx)
        if fpn is not None:
            self.stats.stored_reads += 1
        return fpn

    def snapshot_size(self) -> tuple[int, int, list[torch.Tensor] | None]:
        """Frames cached (wherever held), bytes per frame, and the positional encodings."""
        return len(self._store.keys()), int(self._frame_bytes or 0), self._pos_enc

    def iter_cached(self) -> Iterator[tuple[int, tuple[torch.Tensor, ...]]]:
        """Every cached frame's features in frame order, read back one at a time."""
        for key in sorted(self._store.keys()):
            fpn = self._store.get(key)
            if fpn is not None:
                yield int(key), fpn

    def _encode(self, frame_idx: int) -> tuple[torch.Tensor, ...]:
        frame = self.reader.frame(frame_idx)
        self.stats.frames_decoded += 1
        return self._encode_frame(frame)

    def _encode_frame(self, frame) -> tuple[torch.Tensor, ...]:
        image = self.transform.prepare(frame).to(self.device).float().unsqueeze(0)
        with torch.inference_mode():
            backbone_out = self.model.forward_image(image)
        self.stats.encoder_calls += 1
        levels = self.model.num_feature_levels
        # sam2's FPN upsamples in float32; under the official plan the features are kept in
        # bf16, as the release's fork casts them before every step (L1273-1274 of
        # sam2/sam2_video_inference_.py), which also halves the cache.
        dtype = self._dtype
        if self._pos_enc is None:
            self._pos_enc = [t.to(dtype) for t in backbone_out["vision_pos_enc"][-levels:]]
        fpn = tuple(t.to(dtype) for t in backbone_out["backbone_fpn"][-levels:])
        if self._frame_bytes is None:
            self._frame_bytes = sum(t.numel() * t.element_size() for t in fpn)
        return fpn

    @property
    def store(self) -> TieredStore:
        """The underlying tiered store (for budgets and stats)."""
        return self._store

    def close(self) -> None:
        """Release cached features and the spill file."""
        self._store.close()
