"""Corrections for every plugin: re-propagate corrected objects with the SAM-2 engine.

Each corrected object gets a fresh session with its previous keyframe mask and every correction
(earlier ones included) as conditioning frames, then is tracked through the video again; objects
without a new correction keep their previous track. Object ids, labels, keyframes, scores and
details carry over. A cancelled re-propagation keeps the frames it finished and the previous
track everywhere else.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from vrshq.plugins.base import (
    CORRECTION_KINDS,
    Correction,
    ObjectTrack,
    Progress,
    check_corrections,
)
from vrshq.engine import EngineConfig, TrackingSession
from vrshq.masks.track import Track
from vrshq.tracking import collect_tracks, expected_steps
from vrshq.video.reader import VideoReader
from vrshq.video.transforms import ResizeMode


def normalized(c: Correction) -> Correction:
    """``c`` with plain types: an int frame, a bool mask, a float box, float points, int labels."""
    return Correction(
        int(c.obj_id), int(c.frame),
        mask=None if c.mask is None else np.asarray(c.mask, dtype=bool),
        box=None if c.box is None else tuple(float(v) for v in np.asarray(c.box, float).reshape(-1)),
        points=None if c.points is None else [(float(x), float(y)) for x, y in c.points],
        point_labels=None if c.point_labels is None else [int(v) for v in c.point_labels])


def merge_corrections(earlier: list[Correction], new: list[Correction]) -> list[Correction]:
    """One correction per frame, a later one replacing an earlier one on the same frame (whatever
    their kinds: a box after a mask on one frame is that frame's correction)."""
    by_frame: dict[int, Correction] = {}
    for c in list(earlier) + list(new):
        by_frame.pop(int(c.frame), None)  # keep the order in which frames were last corrected
        by_frame[int(c.frame)] = normalized(c)
    return list(by_frame.values())


def corrections_by_object(previous: list[ObjectTrack], corrections: list[Correction],
                          video: VideoReader, kinds: frozenset[str] = CORRECTION_KINDS,
                          ) -> dict[int, list[Correction]]:
    """Checked corrections, by object: each corrected object's earlier ones merged with the new.

    Every plugin's ``correct`` starts here, so all of them refuse the same bad corrections and
    keep an object's earlier fixes the same way; objects without a new correction are absent.
    """
    check_corrections(previous, corrections, video, kinds)
    new_by_obj: dict[int, list[Correction]] = {}
    for c in corrections:
        new_by_obj.setdefault(int(c.obj_id), []).append(c)
    return {t.obj_id: merge_corrections(t.corrections, new_by_obj[t.obj_id])
            for t in previous if t.obj_id in new_by_obj}


def add_correction(session: TrackingSession, c: Correction) -> None:
    """One correction into the session on its frame: a mask prompt, a box, or clicks.

    A prompt replaces the frame's earlier one (``add_points`` drops a mask input there and
    ``add_mask`` clicks), so a correction on the keyframe wins over the keyframe mask.
    """
    if c.mask is not None:
        session.add_mask(c.obj_id, c.frame, c.mask)
    elif c.box is not None:
        session.add_points(c.obj_id, c.frame, box=list(c.box))
    else:
        session.add_points(c.obj_id, c.frame, points=[list(p) for p in c.points or []],
                           labels=list(c.point_labels or []))


def track_objects(session: TrackingSession, progress: Progress | None = None):
    """Propagate ``session`` both ways and collect its TrackSet, reporting ("propagate", done, total)."""
    total = expected_steps(session, "both")
    done = [0]

    def step(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress("propagate", done[0], total)

    return collect_tracks(session, "both", progress=step)


def repropagate(model: torch.nn.Module, video: VideoReader, previous: list[ObjectTrack],
                corrections: list[Correction], *, resize: ResizeMode | str,
                isolated_passes: bool, engine: EngineConfig,
                progress: Progress | None = None) -> list[ObjectTrack]:
    """Every object of ``previous``, the corrected ones re-tracked with their corrections.

    Masks, boxes and clicks are all conditioning frames of the object's session. The engine's
    mask on a mask-corrected frame is its decoding of that prompt (the backend puts the drawn
    mask back); on a box- or click-corrected frame it is the tracker's mask from that prompt.
    """
    merged = corrections_by_object(previous, corrections, video)
    if not merged:
        return list(previous)
    session = TrackingSession(model, video, resize=ResizeMode(resize), config=engine,
                              isolated_passes=isolated_passes)
    try:
        for t in previous:
            if t.obj_id not in merged:
                continue
            session.add_mask(t.obj_id, t.keyframe, np.asarray(t.keyframe_mask, dtype=bool))
            for c in merged[t.obj_id]:
                add_correction(session, c)
        tracks = track_objects(session, progress)
    finally:
        session.close()
    if tracks.cancelled:
        for t in previous:
            if t.obj_id in merged:
                keep_unfinished(tracks[t.obj_id], t.track)
    return [replace(t, track=tracks[t.obj_id], corrections=merged[t.obj_id]) if t.obj_id in merged
            else t for t in previous]


def keep_unfinished(new: Track, old: Track) -> None:
    """Fill the frames a cancelled re-propagation did not reach with the previous track's."""
    for f in old.frames():
        if not new.has(f):
            new.set_rle(f, old.rle(f), score=old.score(f))
