"""SAM 3 tracker features kept per task: the concept pass writes them, a correction reads them.

What transformers 5.25 does (upstream files under ``transformers/models/``):

* ``sam3_tracker_video/modeling_sam3_tracker_video.py``: ``Sam3TrackerVideoModel._prepare_vision_features``
  asks ``inference_session.cache.get_vision_features(frame_idx)`` first and runs
  ``get_image_features`` (``vision_encoder`` = ViT backbone + ``neck``, then
  ``mask_decoder.conv_s0`` / ``conv_s1`` on levels 0 and 1, flattened to HW x N x C, the last
  level dropped) only when it answers None; the session's ``cache`` (a
  ``Sam3TrackerVideoInferenceCache``, one frame by default) is a public attribute of the session.
* ``sam3_video/modeling_sam3_video.py``: ``Sam3VideoModel._det_track_one_frame`` runs the
  detector's ``get_vision_features`` once per frame and hands the backbone output to
  ``get_vision_features_for_tracker`` (``tracker_neck`` + the tracker's ``conv_s0`` / ``conv_s1``),
  then stores the result with ``inference_session.cache.cache_vision_features``.
* ``conversion_mapping.py`` (``"sam3_tracker"``): the tracker loaded from the same checkpoint
  takes ``detector_model.vision_encoder.backbone.*`` as its backbone and ``tracker_neck.*`` as
  its neck. So the concept pass computes, with the same weights and the same operations, the very
  tensors the tracker needs (checked bit for bit in ``tests/test_sam3_features.py``).

So no internals are copied or patched: :func:`recording` wraps a concept session's ``cache`` to
keep every frame's tracker features (write slot), and :func:`tracker_features` wraps a tracker
session's ``cache`` so frames found in the task's folder are answered from it (read slot) and the
vision encoder never runs for them. Where nothing usable is stored, the first tracker session
records what it encodes, for the other sessions of the same slot and (through
:meth:`FeatureSlot.fill`) for the task's later corrections. The store is the SAM-2 one (:mod:`vrshq.engine.persist`:
``VRSHQ_FEATURE_CACHE_MB``, keying, eviction, atomic writes); the key adds what these features
depend on: the weights that compute them, the video processor's settings, dtype and device.

The positional encodings depend only on the feature-map shapes (``Sam3SinePositionEmbedding``),
so they are stored once; a recording whose frames disagree there is not stored at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Any, Iterator

import torch

from vrshq.engine.persist import StoredFeatures, current_slot, params_fingerprint
from vrshq.engine.store import Tier, TieredStore
from vrshq.video.reader import VideoReader

MiB = 1024 * 1024
# RAM the recorder keeps before spilling to a scratch file (a 1008-px frame is about 20 MiB)
RECORD_RAM_BYTES = 512 * MiB


def _processor_digest(video_processor: Any) -> str:
    """SHA-256 of the video processor's settings (size, mean, std, resampling: the pixels)."""
    settings = json.dumps(video_processor.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(settings.encode()).hexdigest()


def feature_key(modules: list[torch.nn.Module], image_size: int, video_processor: Any,
                video: VideoReader) -> dict[str, Any]:
    """The session part of the stored key: ``modules`` are the backbone, the tracker's neck,
    ``conv_s0`` and ``conv_s1`` (the weights the features come from), in that order."""
    first = next(modules[0].parameters())
    return {"kind": "sam3-tracker", "image_size": int(image_size),
            "processor": _processor_digest(video_processor), "dtype": str(first.dtype),
            "device": first.device.type, "frames": len(video), "hw": [video.height, video.width],
            "weights": params_fingerprint(modules)}


def concept_key(model: Any, processor: Any, video: VideoReader) -> dict[str, Any]:
    """The key of the tracker features a ``Sam3VideoModel`` concept pass computes."""
    tracker = model.tracker_model
    modules = [model.detector_model.vision_encoder.backbone, model.tracker_neck,
               tracker.mask_decoder.conv_s0, tracker.mask_decoder.conv_s1]
    return feature_key(modules, tracker.config.image_size, processor.video_processor, video)


def tracker_key(model: Any, processor: Any, video: VideoReader) -> dict[str, Any]:
    """The key of the features a ``Sam3TrackerVideoModel`` computes itself."""
    modules = [model.vision_encoder.backbone, model.vision_encoder.neck,
               model.mask_decoder.conv_s0, model.mask_decoder.conv_s1]
    return feature_key(modules, model.config.image_size, processor.video_processor, video)


class FeatureRecorder:
    """Every frame's tracker features of one concept pass, for :meth:`FeatureSlot.commit`.

    Offers what the slot reads of a SAM-2 ``FeatureCache`` (``snapshot_size``, ``iter_cached``,
    ``close``). Frames past ``budget_bytes`` are not kept (the slot would not write them).
    """

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._store = TieredStore([Tier(torch.device("cpu"), RECORD_RAM_BYTES)], spill_to_disk=True)
        self._pos_enc: list[torch.Tensor] | None = None
        self._frame_bytes = 0
        self.consistent = True  # False: frames' positional encodings differed; nothing is stored

    def record(self, frame_idx: int, features: dict[str, Any]) -> None:
        """Keep one frame's ``{"vision_feats", "vision_pos_embeds"}`` as the model computed them."""
        feats = [t.detach().cpu().clone() for t in features["vision_feats"]]
        pos = [t.detach().cpu() for t in features["vision_pos_embeds"]]
        if self._pos_enc is None:
            self._pos_enc = [t.clone() for t in pos]
            self._frame_bytes = sum(t.numel() * t.element_size() for t in feats)
        elif len(pos) != len(self._pos_enc) or not all(
                a.shape == b.shape and torch.equal(a, b) for a, b in zip(pos, self._pos_enc)):
            self.consistent = False
        kept = len(self._store.keys())
        if frame_idx not in self._store and (kept + 1) * self._frame_bytes > self.budget_bytes:
            return  # first frames first, as the SAM-2 slot keeps them
        self._store.put(int(frame_idx), feats)

    @property
    def pos_enc(self) -> list[torch.Tensor]:
        """The positional encodings every recorded frame shares."""
        return self._pos_enc or []

    def get(self, frame_idx: int) -> tuple[torch.Tensor, ...] | None:
        """One recorded frame's features (CPU), or None."""
        return self._store.get(int(frame_idx))

    def snapshot_size(self) -> tuple[int, int, list[torch.Tensor] | None]:
        """Frames kept, bytes per frame, and the positional encodings (0 frames: store nothing)."""
        count = len(self._store.keys()) if self.consistent else 0
        return count, self._frame_bytes, self._pos_enc

    def iter_cached(self) -> Iterator[tuple[int, tuple[torch.Tensor, ...]]]:
        """Every kept frame's features in frame order."""
        for key in sorted(self._store.keys()):
            feats = self._store.get(key)
            if feats is not None:
                yield int(key), feats

    def close(self) -> None:
        """Drop the kept features and the scratch file."""
        self._store.close()


class _RecordingCache:
    """A session's cache that also hands each frame's features (as computed) to a recorder."""

    def __init__(self, inner: Any, recorder: FeatureRecorder) -> None:
        self._inner, self._recorder = inner, recorder

    def cache_vision_features(self, frame_idx: int, features: dict) -> None:
        self._recorder.record(frame_idx, features)
        self._inner.cache_vision_features(frame_idx, features)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@contextlib.contextmanager
def _recording_into(session: Any, budget_bytes: int) -> Iterator[FeatureRecorder]:
    """Record every frame's features the session computes inside the block (its ``cache``
    wrapped). A failed block closes the recorder (a partial recording is never kept); one that
    ends well gives the session its own cache back and the caller the recorder to keep."""
    recorder = FeatureRecorder(budget_bytes)
    session.cache = _RecordingCache(session.cache, recorder)
    try:
        yield recorder
    except BaseException:
        recorder.close()
        raise
    session.cache = session.cache._inner


@contextlib.contextmanager
def recording(session: Any, model: Any, processor: Any,
              video: VideoReader) -> Iterator[FeatureRecorder | None]:
    """Record a concept pass's tracker features into the current write slot.

    The recorder goes to the slot only when the block finishes (a failed or abandoned pass
    stores nothing), and only the first pass of a prediction records (every pass computes the
    same features). None when there is no write slot.
    """
    slot = current_slot()
    if slot is None or slot.mode != "write" or slot.budget_bytes <= 0 or slot.adopted:
        yield None
        return
    with _recording_into(session, slot.budget_bytes) as recorder:
        yield recorder
    slot.adopt(recorder, concept_key(model, processor, video))


class _StoredCache:
    """A tracker session's cache that answers frames it lacks from stored or recorded features."""

    def __init__(self, inner: Any, source: StoredFeatures | FeatureRecorder) -> None:
        self._inner, self._source = inner, source
        self._pos: list[torch.Tensor] | None = None
        self.reads = 0

    def get_vision_features(self, frame_idx: int) -> dict | None:
        got = self._inner.get_vision_features(frame_idx)
        if got:
            return got
        feats = self._source.get(frame_idx)
        if feats is None:
            return None  # not kept (past the budget): the model encodes the frame
        device = self._inner.inference_device
        if self._pos is None:
            self._pos = [t.to(device) for t in self._source.pos_enc]
        self.reads += 1
        return {"vision_feats": [t.to(device) for t in feats], "vision_pos_embeds": list(self._pos)}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _recorded(slot: Any, key: dict[str, Any]) -> FeatureRecorder | None:
    """A complete recording of this slot's with the same key (an earlier session's), or None."""
    for cache, cache_key in slot.adopted:
        if isinstance(cache, FeatureRecorder) and cache.consistent and cache_key == key:
            return cache
    return None


@contextlib.contextmanager
def tracker_features(session: Any, model: Any, processor: Any,
                     video: VideoReader) -> Iterator[_StoredCache | None]:
    """Feed a tracker session from the task's features, or record them for the next sessions.

    With a reading slot: the stored folder when its key matches; else what an earlier session
    of this correction recorded; else this session records (the encoder runs) and, if it ends
    well, the slot takes the recording (:meth:`FeatureSlot.fill`), so the other objects of the
    correction and the task's later corrections read it. With a writing slot (objects drawn in
    a prediction): the concept pass's or an earlier drawn object's recording, else record.
    Yields the reading cache (its ``reads`` count), or None when the session encodes.
    """
    slot = current_slot()
    if slot is None or slot.budget_bytes <= 0:
        yield None
        return
    key = tracker_key(model, processor, video)
    source = slot.open(key) if slot.mode == "read" else None
    source = source or _recorded(slot, key)
    if source is not None:
        session.cache = _StoredCache(session.cache, source)
        yield session.cache
        return
    if slot.adopted:  # another recording (other key) is kept: leave it
        yield None
        return
    with _recording_into(session, slot.budget_bytes) as recorder:
        yield None
    taken = slot.fill(recorder, key) if slot.mode == "read" else slot.adopt(recorder, key)
    if not taken:
        recorder.close()
