"""Track prompted objects through a video and write the results: masks, track.json, Label Studio JSON."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from vrshq.engine import EngineConfig, TrackingSession
from vrshq.errors import Cancelled, PromptError
from vrshq.masks import (
    TrackSet,
    labels_from_masks,
    read_palette_png,
    write_palette_png,
)
from vrshq.video.reader import VideoReader
from vrshq.video.transforms import ResizeMode


@dataclass(frozen=True)
class MaskPrompt:
    """A mask for one object on one frame (0-based)."""

    obj_id: int
    frame_idx: int
    mask: np.ndarray


def read_mask_prompts(path: str | os.PathLike, frame_idx: int, hw: tuple[int, int]) -> list[MaskPrompt]:
    """Prompts from a mask PNG: a palette/label PNG (pixel value = object id) or a 0/255 mask (object 1)."""
    if not Path(path).is_file():
        raise PromptError(f"{path}: mask file not found")
    try:
        labels = read_palette_png(path)
    except (OSError, SyntaxError) as exc:  # PIL: unidentified or damaged image, permission denied
        reason = getattr(exc, "strerror", None) or "not an image, or a damaged one"
        raise PromptError(f"{path}: not a readable mask PNG ({reason})") from None
    if labels.shape != hw:
        raise PromptError(f"{path}: mask is {labels.shape[1]}x{labels.shape[0]} but the video is "
                          f"{hw[1]}x{hw[0]} (width x height)")
    values = set(np.unique(labels).tolist()) - {0}
    if not values:
        raise PromptError(f"{path}: the mask has no object pixels")
    if values == {255}:
        return [MaskPrompt(1, frame_idx, labels == 255)]
    return [MaskPrompt(v, frame_idx, labels == v) for v in sorted(values)]


def add_prompts(session: TrackingSession, prompts: Iterable[MaskPrompt]) -> None:
    """Add every mask prompt to the session (several on one object are corrections)."""
    for p in prompts:
        session.add_mask(p.obj_id, p.frame_idx, p.mask)


def collect_tracks(session: TrackingSession, direction: str = "both",
                   progress: Callable[[int], None] | None = None) -> TrackSet:
    """Propagate the session's prompts and collect one RLE track per object.

    A progress callback that raises :class:`Cancelled` stops the propagation; the frames
    finished before are returned, with ``cancelled`` set on the TrackSet.
    """
    height, width = session.orig_hw
    tracks = TrackSet(height=height, width=width, num_frames=session.num_frames,
                      fps=session.reader.fps)
    for obj_id in session.object_ids:
        tracks.new_track(obj_id)
    try:
        for result in session.propagate(direction):
            for obj_id, of in result.objects.items():
                tracks[obj_id].set(result.frame_idx, of.mask(), score=of.score)
            if progress is not None:
                progress(1)  # may raise Cancelled: the frames set so far are kept
    except Cancelled:
        tracks.cancelled = True
    return tracks


def expected_steps(session: TrackingSession, direction: str) -> int:
    """How many frame results ``propagate`` will yield (for a progress bar)."""
    prompted = [session.prompted_frames(o) for o in session.object_ids]
    if not prompted:
        return 0
    n = session.num_frames
    firsts = [min(p) for p in prompted]
    if direction == "forward":
        return n - min(firsts)
    if direction == "backward":
        return max(max(p) for p in prompted) + 1
    return (n - min(firsts)) + max(firsts)


def write_outputs(tracks: TrackSet, out_dir: str | os.PathLike,
                  labelstudio_task: Mapping[str, Any]) -> dict[str, Path]:
    """Write ``masks/<frame>.png``, ``track.json`` and ``labelstudio.json`` under ``out_dir``.

    ``labelstudio.json`` is a list holding ``labelstudio_task``: Label Studio imports a list of tasks.
    """
    out = Path(out_dir)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    hw = (tracks.height, tracks.width)
    num_frames = tracks.num_frames or 0
    for frame_idx in range(num_frames):
        masks = {t.obj_id: t.mask(frame_idx) for t in tracks if t.has(frame_idx)}
        write_palette_png(out / "masks" / f"{frame_idx:05d}.png", labels_from_masks(masks, hw))
    tracks.save(out / "track.json")
    (out / "labelstudio.json").write_text(json.dumps([labelstudio_task], indent=1))
    return {"masks": out / "masks", "track": out / "track.json", "labelstudio": out / "labelstudio.json"}


def open_session(model, reader: VideoReader, resize: str, config: EngineConfig | None = None) -> TrackingSession:
    """A tracking session with the given resize mode."""
    return TrackingSession(model, reader, resize=ResizeMode(resize), config=config)
