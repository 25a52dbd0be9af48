"""Corrections for the ``sam3`` plugin: re-propagate an object with SAM 3's own tracker.

``Sam3TrackerVideoModel`` loads from the same checkpoint as ``Sam3VideoModel`` (it skips the
detector). Each corrected object gets its own session: its keyframe mask and every correction
(earlier ones included, a later one replacing an earlier one on its frame) as prompts on their
frames (a mask as ``input_masks``, a box as ``input_boxes``, clicks as ``input_points`` with
``input_labels``), then the tracker runs forward from the first prompted frame and backward
from it. The answer carries each corrected mask exactly on its frame (a box or clicks: the
tracker's mask from that prompt there); objects without a new correction keep their previous
track.

New objects drawn by the annotator (box or mask prompts on a frame, :func:`geometry_tracks`)
are tracked the same way: one session per object, its prompts added as transformers documents
for ``Sam3TrackerVideoModel`` (``input_boxes=[[[x0, y0, x1, y1]]]`` or ``input_masks``), then
both ways from its first prompted frame.

Each session reads the frames the prediction's concept pass stored for the task instead of
encoding them again, when a reading feature slot is current (:mod:`vrshq.plugins.sam3_features`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vrshq.masks.track import Track
from vrshq.errors import PromptError
from vrshq.plugins.base import Correction, ObjectPrompt, ObjectTrack, Progress
from vrshq.plugins.repropagate import corrections_by_object
from vrshq.plugins.sam3_features import tracker_features
from vrshq.plugins.sam3_session import OutputPruner, memory_window, open_session
from vrshq.video.reader import VideoReader


def load_tracker(model_path: Path, device: torch.device,
                 dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """SAM 3's tracker model and processor from the plugin's checkpoint folder, in ``dtype``."""
    from transformers import Sam3TrackerVideoModel, Sam3TrackerVideoProcessor

    model = Sam3TrackerVideoModel.from_pretrained(model_path, dtype=dtype).to(device).eval()
    return model, Sam3TrackerVideoProcessor.from_pretrained(model_path)


Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Clicks:
    """Clicks on one frame: (x, y) pixels and their labels (1 positive, 0 negative)."""

    points: tuple[tuple[float, float], ...]
    labels: tuple[int, ...]


Prompt = np.ndarray | Box | Clicks


def correction_prompt(c: Correction) -> Prompt:
    """A (checked) correction as a tracker prompt: its mask, its box or its clicks."""
    if c.mask is not None:
        return np.asarray(c.mask, dtype=bool)
    if c.box is not None:
        return tuple(float(v) for v in c.box)  # type: ignore[return-value]
    return Clicks(tuple((float(x), float(y)) for x, y in c.points or []),
                  tuple(int(v) for v in c.point_labels or []))


def _add_prompt(processor: Any, session: Any, frame: int, obj_id: int, prompt: Prompt) -> None:
    """One frame's prompt into the session: an HxW mask, an (x0, y0, x1, y1) box or clicks, in pixels."""
    if isinstance(prompt, Clicks):
        # one image, one object, its points ([[[[x, y], ...]]]) and labels ([[[1, 0, ...]]]),
        # as transformers documents Sam3TrackerVideoProcessor's point prompts
        processor.add_inputs_to_inference_session(
            session, frame_idx=frame, obj_ids=obj_id,
            input_points=[[[list(p) for p in prompt.points]]], input_labels=[[list(prompt.labels)]])
    elif np.ndim(prompt) == 2:
        processor.add_inputs_to_inference_session(session, frame_idx=frame, obj_ids=obj_id,
                                                  input_masks=np.asarray(prompt).astype(np.float32))
    else:
        # one image, one object, one box (the processor scales it from the video's size)
        processor.add_inputs_to_inference_session(session, frame_idx=frame, obj_ids=obj_id,
                                                  input_boxes=[[[float(v) for v in prompt]]])


def track_from_masks(model: Any, processor: Any, video: VideoReader,
                     prompts: dict[int, Prompt], obj_id: int,
                     progress: Progress | None = None, stats: dict | None = None) -> Track:
    """Track one object through ``video`` from its prompts {frame: HxW bool mask, box or clicks}, both ways.

    Frames are read on demand and spent outputs dropped (:mod:`vrshq.plugins.sam3_session`);
    ``stats`` (when given) gets the counts.
    """
    height, width, count = video.height, video.width, len(video)
    weights = next(model.parameters())
    session = open_session(processor, video, weights.device, weights.dtype)
    start = min(prompts)
    # forward from the first prompt to the end, then back from it to frame 0
    pruner = OutputPruner(memory_window(model), [(start, count - 1, False), (start, 0, True)])
    # the task's stored features when kept, else recorded for the next sessions
    with torch.inference_mode(), tracker_features(session, model, processor, video) as stored:
        for frame in sorted(prompts):
            _add_prompt(processor, session, frame, obj_id, prompts[frame])
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
                     peak_kept=pruner.peak_kept, window=pruner.window,
                     stored_reads=stored.reads if stored is not None else 0)
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
        prompts: dict[int, Prompt] = {int(t.keyframe): np.asarray(t.keyframe_mask, dtype=bool)}
        prompts.update({c.frame: correction_prompt(c) for c in merged})  # a correction wins on the keyframe
        track = track_from_masks(model, processor, video, prompts, t.obj_id, progress)
        for c in merged:
            if c.mask is not None:  # a box or clicks: the tracker's mask from them stays
                track.set(c.frame, c.mask, score=track.score(c.frame))  # exactly as corrected
        results.append(replace(t, track=track, corrections=merged))
    return results


def check_geometry(prompts: list[ObjectPrompt]) -> None:
    """PromptError for a drawn-object prompt the tracker cannot take: no frame, a mask with a box,
    two prompts of one object on one frame."""
    seen: set[tuple[int, int]] = set()
    for p in prompts:
        if p.frame is None:
            raise PromptError(f"object {p.obj_id}: a sam3 box or mask prompt needs its frame")
        if p.mask is not None and p.box is not None:
            raise PromptError(f"object {p.obj_id}: give a mask or a box on frame {p.frame}, not both")
        if (int(p.obj_id), int(p.frame)) in seen:
            raise PromptError(f"object {p.obj_id} has two prompts on frame {p.frame}")
        seen.add((int(p.obj_id), int(p.frame)))


def geometry_tracks(tracker: tuple[Any, Any], video: VideoReader, prompts: list[ObjectPrompt],
                    progress: Progress | None = None) -> list[ObjectTrack]:
    """One track per drawn object (first-prompt order), from its box or mask prompts.

    The object's first prompt is its keyframe (its mask there: the mask prompt itself, or the
    tracker's mask from the box); later prompts are kept as its corrections, as sam2's are.
    """
    model, processor = tracker
    by_obj: dict[int, list[ObjectPrompt]] = {}
    for p in prompts:
        by_obj.setdefault(int(p.obj_id), []).append(p)
    results = []
    for obj_id, own in by_obj.items():
        frames = {int(p.frame): (np.asarray(p.mask, dtype=bool) if p.mask is not None else p.box)
                  for p in own}
        track = track_from_masks(model, processor, video, frames, obj_id, progress)

        def shown(p: ObjectPrompt, track: Track = track) -> np.ndarray:
            return np.asarray(p.mask, dtype=bool) if p.mask is not None else track.mask(int(p.frame))

        for p in own:
            if p.mask is not None:
                track.set(int(p.frame), shown(p), score=track.score(int(p.frame)))  # exactly as drawn
        first = own[0]
        score = track.score(int(first.frame))
        results.append(ObjectTrack(
            obj_id=obj_id, label=next((p.label for p in own if p.label is not None), None),
            track=track, keyframe=int(first.frame), keyframe_mask=shown(first),
            score=float(score) if score is not None else 0.0,
            details={"prompt_frames": [int(p.frame) for p in own], "prompt_kinds": sorted(first.kinds())},
            corrections=[Correction(obj_id, int(p.frame), shown(p)) for p in own[1:]]))
    return results
