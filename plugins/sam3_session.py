"""Bounded memory for transformers' SAM 3 sessions on long videos.

transformers' ``Sam3VideoInferenceSession`` and ``Sam3TrackerVideoInferenceSession`` (upstream
``models/sam3_video/modeling_sam3_video.py``, ``models/sam3_tracker_video/modeling_sam3_tracker_video.py``)
hold the whole preprocessed video (``processed_frames``) and every frame's tracker outputs
(``output_dict_per_obj[obj]["non_cond_frame_outputs"]``: memory features, masks, object pointer)
for as long as the session lives. Here:

* :class:`LazyFrames` stands in for ``processed_frames``: frames are decoded from our
  :class:`VideoReader` and preprocessed when the model asks (``session.get_frame``), one at a
  time, by the same video processor and settings ``init_video_session`` uses;
* :class:`OutputPruner` drops the non-conditioning outputs no frame still to be processed can
  read. The tracker reads a frame's non-conditioning outputs only from the frames within
  ``num_maskmem - 1`` (memory) and ``max_object_pointers_in_encoder - 1`` (object pointers) of
  it in its direction of travel (``_gather_memory_frame_outputs`` / ``_get_object_pointers``
  upstream); conditioning outputs are all kept, as our SAM-2 engine keeps its prompted frames.

Masks stay bit-identical to the documented loop: the model computes on the same inputs and reads
the same memory; only entries it never reads again are gone.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

import numpy as np
import torch

from vrshq.masks.rle import decode_rle, encode_rle
from vrshq.plugins.sam3_features import recording
from vrshq.video.reader import VideoReader


class LazyFrames(Mapping):
    """``processed_frames`` of a SAM 3 session, decoded and preprocessed on demand.

    The model reads each frame once or twice in a row (a prompt frame, then propagation), so
    one preprocessed frame is kept.
    """

    def __init__(self, video: VideoReader, video_processor: Any, dtype: torch.dtype,
                 storage_device: torch.device | str = "cpu") -> None:
        self.video, self.video_processor = video, video_processor
        self.dtype, self.storage_device = dtype, storage_device
        self._last: tuple[int, torch.Tensor] | None = None
        self.decoded = 0  # how many frames were decoded (a frame read again costs again)

    def __len__(self) -> int:
        return len(self.video)

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self.video)))

    def __contains__(self, frame: object) -> bool:
        return isinstance(frame, int) and 0 <= frame < len(self.video)

    def __getitem__(self, frame: int) -> torch.Tensor:
        if self._last is not None and self._last[0] == frame:
            return self._last[1]
        if frame not in self:
            raise KeyError(frame)
        # a one-frame video: the processor resizes and normalizes frame by frame, so this is
        # the frame init_video_session would have stored
        pixels = self.video_processor(videos=[self.video.frame(frame)], device="cpu",
                                      return_tensors="pt").pixel_values_videos[0][0]
        pixels = pixels.to(self.storage_device, dtype=self.dtype)
        self.decoded += 1
        self._last = (frame, pixels)
        return pixels


def open_session(processor: Any, video: VideoReader, device: torch.device,
                 dtype: torch.dtype = torch.float32) -> Any:
    """A SAM 3 (video or tracker) inference session over ``video`` whose frames load on demand."""
    session = processor.init_video_session(inference_device=device, processing_device="cpu",
                                           video_storage_device="cpu", dtype=dtype)
    session.processed_frames = LazyFrames(video, processor.video_processor, dtype)
    session.video_height, session.video_width = video.height, video.width
    return session


def memory_window(tracker_model: Any) -> int:
    """How many frames back (in the direction of travel) the tracker reads a frame's outputs."""
    return max(int(tracker_model.num_maskmem) - 1,
               int(tracker_model.config.max_object_pointers_in_encoder) - 1, 0)


class OutputPruner:
    """Drops the non-conditioning outputs of frames no frame still to be processed will read.

    ``passes`` are the propagation passes in order, each ``(first, last, reverse)``: frame
    ``x`` of a forward pass reads outputs of ``[x - window, x - 1]``, of a reverse pass
    ``[x + 1, x + window]``.
    """

    def __init__(self, window: int, passes: list[tuple[int, int, bool]]) -> None:
        self.window, self.passes = window, list(passes)
        self.dropped = 0  # outputs dropped so far (tests and the bench read it)
        self.peak_kept = 0  # the most non-conditioning outputs one object held after a prune

    def _still_read(self, pass_index: int, done: int) -> list[tuple[int, int]]:
        """The frame ranges [lo, hi] still read once frame ``done`` of pass ``pass_index`` is done."""
        ranges = []
        for i, (first, last, reverse) in enumerate(self.passes[pass_index:], start=pass_index):
            if not reverse:
                lo = done + 1 if i == pass_index else first
                if lo <= last:
                    ranges.append((lo - self.window, last - 1))
            else:
                hi = done - 1 if i == pass_index else first
                if hi >= last:
                    ranges.append((last + 1, hi + self.window))
        return ranges

    def after_frame(self, session: Any, pass_index: int, done: int) -> None:
        """Prune ``session`` once every frame up to ``done`` of pass ``pass_index`` is processed."""
        ranges = self._still_read(pass_index, done)
        for per_obj in session.output_dict_per_obj.values():
            outputs = per_obj["non_cond_frame_outputs"]
            for frame in [f for f in outputs if not any(lo <= f <= hi for lo, hi in ranges)]:
                del outputs[frame]
                self.dropped += 1
            self.peak_kept = max(self.peak_kept, len(outputs))


class RleMasks(MutableMapping):
    """Frame -> HxW bool mask, kept as COCO RLE (a long video's masks stay compact)."""

    def __init__(self) -> None:
        self._rles: dict[int, dict] = {}

    def __setitem__(self, frame: int, mask: np.ndarray) -> None:
        self._rles[frame] = encode_rle(np.asarray(mask, dtype=bool))

    def __getitem__(self, frame: int) -> np.ndarray:
        return decode_rle(self._rles[frame])

    def __delitem__(self, frame: int) -> None:
        del self._rles[frame]

    def __iter__(self) -> Iterator[int]:
        return iter(self._rles)

    def __len__(self) -> int:
        return len(self._rles)


def concept_frames(model: Any, processor: Any, video: VideoReader, concept: str,
                   stats: dict | None = None) -> Iterator[tuple[int, dict]]:
    """transformers' ``Sam3VideoModel`` loop for one text concept over ``video``, bounded.

    Yields ``(frame, postprocessed outputs)`` in frame order, as the documented loop does
    (``propagate_in_video_iterator`` then ``postprocess_outputs``), with frames read on demand
    and spent outputs dropped after each frame. ``stats`` (when given) gets the counts.
    """
    dtype = next(model.parameters()).dtype
    session = open_session(processor, video, next(model.parameters()).device, dtype)
    session = processor.add_text_prompt(session, concept)
    # one forward pass over the whole video; frames come out hotstart_delay late, so pruning
    # by the frame that came out keeps a little more than the model still reads
    pruner = OutputPruner(memory_window(model.tracker_model), [(0, len(video) - 1, False)])
    # the tracker features this pass computes are kept for the task's corrections
    with torch.inference_mode(), recording(session, model, processor, video):
        for out in model.propagate_in_video_iterator(inference_session=session):
            frame = int(out.frame_idx)
            yield frame, processor.postprocess_outputs(session, out)
            pruner.after_frame(session, 0, frame)
    if stats is not None:
        stats.update(decoded=session.processed_frames.decoded, dropped=pruner.dropped,
                     peak_kept=pruner.peak_kept, window=pruner.window)
