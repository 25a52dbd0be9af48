"""Corrections for the ``sam3`` plugin: re-propagate an object with SAM 3's own tracker.

``Sam3TrackerVideoModel`` loads from the same checkpoint as ``Sam3VideoModel`` (it skips the
detector). Each corrected object gets its own session: its keyframe mask and every correction
(earlier ones included, a later one replacing an earlier one on its frame) as mask prompts,
then the tracker runs forward from the first prompted frame and backward from it. The answer
carries each corrected mask exactly on its frame; objects without a new correction keep their
previous track.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vrshq.masks.track import Track
from vrshq.plugins.base import Correction, ObjectTrack, Progress
from vrshq.plugins.repropagate import corrections_by_object
from vrshq.plugins.sam3_session import OutputPruner, memory_window, open_session
from vrshq.video.reader import VideoReader


def load_tracker(model_path: Path, device: torch.device,
                 dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """SAM 3's tracker model and processor from the plugin's checkpoint folder, in ``dtype``."""
    from transformers import Sam3TrackerVideoModel, Sam3TrackerVideoProcessor

    model = Sam3TrackerVideoModel.from_pretrained(model_path, dtype=dtype).to(device).eval()
    return model, Sam3TrackerVideoProcessor.from_pretrained(model_path)


def track_from_masks(model: Any, processor: Any, video: VideoReader,
                     prompts: dict[int, np.ndarray], obj_id: int,
                     progress: Progress | None = None, stats: dict | None = None) -> Track:
    """Track one object through ``video`` from mask prompts {frame: HxW bool}, both ways.

    Frames are read on demand and spent outputs dropped (:mod:`vrshq.plugins.sam3_session`);
    ``stats`` (when given) gets the counts.
    """
    height, width, count = video.height, video.width, len(video)
    weights = next(model.parameters())
    session = open_session(processor, video, weights.device, weights.dtype)
    start = min(prompts)
    # forward from the first prompt to the end, then back from it to frame 0
    pruner = OutputPruner(memory_window(model), [(start, count - 1, False), (start, 0, True)])
    with torch.inference_mode():
        for frame, mask in sorted(prompts.items()):
            processor.add_inputs_to_inference_session(session, frame_idx=frame, obj_ids=obj_id,
                                                      input_masks=mask.astype(np.float32))
            # the tracker needs its output on a prompted frame before propagating from it
            model(inference_session=session, frame_idx=frame)
        track = Track(obj_id, height, width)
        done = 0
        for index, reverse in enumerate((False, True)):
            for out in model.propagate_in_video_iterator(session, start_frame_idx=start, reverse=reverse):
                frame = int(out.frame_idx)
                pruner.after_frame(session, index, frame)
                if reverse and frame == start:
                    continue  # the forward pass already gave the start frame
                mask = processor.post_process_masks([out.pred_masks], original_sizes=[[height, width]],
                                                    binarize=True)[0]
                score = out.object_score_logits
                track.set(frame, mask[0, 0].cpu().numpy().astype(bool),
                          score=float(score.reshape(-1)[0]) if score is not None else None)
                done += 1
                if progress is not None:
                    progress("propagate", done, count)
    if stats is not None:
        stats.update(decoded=session.processed_frames.decoded, dropped=pruner.dropped,
                     peak_kept=pruner.peak_kept, window=pruner.window)
    return track


def repropagate_sam3(tracker: tuple[Any, Any], video: VideoReader, previous: list[ObjectTrack],
                     corrections: list[Correction],
                     progress: Progress | None = None) -> list[ObjectTrack]:
    """Every object of ``previous``, the corrected ones re-tracked by SAM 3's tracker."""
    by_obj = corrections_by_object(previous, corrections, video)
    if not by_obj:
        return list(previous)
    model, processor = tracker
    results = []
    for t in previous:
        if t.obj_id not in by_obj:
            results.append(t)
            continue
        merged = by_obj[t.obj_id]
        prompts = {int(t.keyframe): np.asarray(t.keyframe_mask, dtype=bool)}
        prompts.update({c.frame: c.mask for c in merged})  # a correction wins on the keyframe
        track = track_from_masks(model, processor, video, prompts, t.obj_id, progress)
        for c in merged:
            track.set(c.frame, c.mask, score=track.score(c.frame))  # exactly as corrected
        results.append(replace(t, track=track, corrections=merged))
    return results
