"""The overlay video: the task's video with every object's mask drawn in, for a synced ``<Video>``.

Label Studio OSS cannot draw masks on a ``<Video>``, but two ``<Video>`` tags that name each other
in ``sync`` play, seek and step together (checked in LS 1.23.2). So the backend encodes a second
video, frame for frame the task's video with the masks drawn in, and the config shows it under
the main one::

    <Video name="video" value="$video" frameRate="$fps" sync="overlay"/>
    <Video name="overlay" value="$overlay" frameRate="$fps" sync="video"/>

The rules that keep it in step (the browser seeks both by time, so the times must agree):

* overlay frame i is decoded frame i of the task's video (Label Studio frame i + 1), and there are
  exactly as many frames;
* constant frame rate: the source file's own rate when it agrees with the task's fps (its
  timestamps are what the browser plays), else the task's fps as a fraction with a denominator
  up to 1001 (29.97 -> 30000/1001, see :func:`overlay_rate`); frame i at time i / rate;
* H.264, yuv420p, ``+faststart`` (the index first, so the browser can seek before the download
  ends), no B-frames (no edit list: the first frame is at time 0, as in most sources);
* yuv420p needs even sizes: an odd width or height is padded by one pixel (a copy of the last
  column/row) on the right/bottom, so pixel (x, y) stays where it was and the picture is at most
  one pixel larger than the video's.

Drawing: each object's mask blended at ``ALPHA`` in its label's colour, then a ``OUTLINE``-pixel
outline in the full colour; objects drawn in the state's order (a later one on top). The colour
of a label is its ``<Label background="#rrggbb">`` in the label config (any colour PIL reads);
a label without one, or an object without a label, takes ``PALETTE[obj_id % len(PALETTE)]``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import ImageColor

from vrshq.plugins.base import ObjectTrack
from vrshq.video.base import VideoReader
from vrshq.video.timing import probe_timing, same_rate

ALPHA = 0.45  # share of the label colour inside a mask: the picture stays visible under it
OUTLINE = 2  # pixels of full colour along the mask's edge, so thin masks still show
CRF = 20  # x264 quality: marks and edges stay crisp; the overlay is for looking, not measuring
# Fixed colours for objects whose label has no background (Label Studio's own label colours).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (67, 99, 216), (245, 130, 49),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (188, 246, 12), (0, 128, 128),
)


def label_color(label: str | None, obj_id: int, colors: Mapping[str, str]) -> tuple[int, int, int]:
    """An object's RGB colour: its label's ``background`` from the config, else the palette's."""
    value = colors.get(label) if label is not None else None
    if value:
        try:
            rgb = ImageColor.getrgb(str(value).strip())
            return int(rgb[0]), int(rgb[1]), int(rgb[2])
        except ValueError:
            pass  # a colour PIL cannot read: the palette's, rather than no overlay
    return PALETTE[int(obj_id) % len(PALETTE)]


def overlay_rate(fps: float, path: str | None = None) -> Fraction:
    """The overlay's exact frame rate: the file's own when it agrees with ``fps``, else ``fps``
    as a fraction (denominator up to 1001, so 29.97 -> 30000/1001, 23.976 -> 24000/1001)."""
    timing = probe_timing(path) if path and os.path.isfile(path) else None
    if timing is not None and same_rate(timing.fps, fps):
        return Fraction(timing.fps)
    ntsc = Fraction(round(fps * 1001 / 1000) * 1000, 1001)
    if ntsc > 0 and same_rate(ntsc, fps):
        return ntsc
    return Fraction(fps).limit_denominator(1001)


def even_size(width: int, height: int) -> tuple[int, int]:
    """The overlay's size: the video's, one pixel larger where it is odd."""
    return width + width % 2, height + height % 2


def draw_masks(frame: np.ndarray, masks: Sequence[tuple[np.ndarray, tuple[int, int, int]]]) -> np.ndarray:
    """A copy of an RGB frame with each (mask, colour) blended in and outlined, in order."""
    # Float arithmetic on the masks' pixels only, the outline eroded within each mask's box:
    # the same values as blending the whole frame in float32 (every other pixel round-trips
    # unchanged, and outside the box the mask is 0 like the erosion's border), at a fraction
    # of the cost: the overlay draws every frame of every object after each correction.
    drawn = [(mask, color) for mask, color in masks if mask.any()]
    out = frame.copy()
    if not drawn:
        return out
    union = np.logical_or.reduce([mask for mask, _ in drawn])
    # Masks over much of the frame (an untrained model's speckle): the whole frame costs less
    # than gathering and scattering the pixels.
    pixels = np.flatnonzero(union) if union.mean() < 0.25 else slice(None)
    flat = out.reshape(-1, 3)
    values = flat[pixels].astype(np.float32)
    for mask, color in drawn:
        c = np.asarray(color, dtype=np.float32)
        inside = mask.reshape(-1)[pixels]
        values[inside] = values[inside] * (1 - ALPHA) + c * ALPHA
        values[_edge(mask).reshape(-1)[pixels]] = c
    flat[pixels] = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return out


def _edge(mask: np.ndarray) -> np.ndarray:
    """The mask's pixels within ``OUTLINE`` of its outside (or the frame's border)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    edge = np.zeros_like(mask)
    inner = mask[box]
    edge[box] = inner & ~_eroded(inner, OUTLINE)
    return edge


def _eroded(mask: np.ndarray, iterations: int) -> np.ndarray:
    """scipy's ``binary_erosion(mask, iterations=..., border_value=0)`` (the 4-neighbour cross),
    by shifted ANDs: a pixel stays while it and its 4 neighbours are set, outside counting 0."""
    out = mask.copy()
    for _ in range(iterations):
        prev = out.copy()
        out[1:] &= prev[:-1]
        out[:-1] &= prev[1:]
        out[:, 1:] &= prev[:, :-1]
        out[:, :-1] &= prev[:, 1:]
        out[0] = out[-1] = False
        out[:, 0] = out[:, -1] = False
    return out


def overlay_frame(video: VideoReader, index: int, objects: Sequence[ObjectTrack],
                  colors: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """Decoded frame ``index`` with the masks the objects' tracks have there, at an even size."""
    return _overlay_drawn(video.frame(index), index, objects, colors)


def _overlay_drawn(frame: np.ndarray, index: int, objects: Sequence[ObjectTrack],
                   colors: Sequence[tuple[int, int, int]]) -> np.ndarray:
    masks = [(o.track.mask(index), c) for o, c in zip(objects, colors) if o.track.is_present(index)]
    drawn = draw_masks(frame, masks)
    h, w = drawn.shape[:2]
    ew, eh = even_size(w, h)
    if (ew, eh) != (w, h):
        drawn = np.pad(drawn, ((0, eh - h), (0, ew - w), (0, 0)), mode="edge")
    return drawn


def encode_overlay(video: VideoReader, objects: Sequence[ObjectTrack],
                   colors: Sequence[tuple[int, int, int]], fps: float, out: str | os.PathLike,
                   on_frame: Callable[[int, np.ndarray], None] | None = None) -> Path:
    """Encode the overlay of ``video`` (every frame, in order) as an H.264 MP4 at ``out``;
    ``on_frame(i, frame)`` sees each decoded frame first (the strips' thumbnails)."""
    import av  # lazily: only the overlay encodes

    rate = overlay_rate(fps, getattr(video, "path", None))
    width, height = even_size(video.width, video.height)
    out = Path(out)
    with av.open(str(out), mode="w", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # bf=0: no B-frames, so no edit list shifts the first frame off time 0; a keyframe
        # about every second keeps seeking quick.
        stream.options = {"crf": str(CRF), "preset": "veryfast", "bf": "0",
                          "g": str(max(1, round(float(rate))))}
        stream.codec_context.time_base = 1 / rate
        for i in range(len(video)):
            decoded = video.frame(i)
            if on_frame is not None:
                on_frame(i, decoded)
            frame = av.VideoFrame.from_ndarray(_overlay_drawn(decoded, i, objects, colors),
                                               format="rgb24")
            frame.pts, frame.time_base = i, 1 / rate  # constant rate: frame i at i / rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out


__all__ = ["ALPHA", "OUTLINE", "PALETTE", "draw_masks", "encode_overlay", "even_size",
           "label_color", "overlay_frame", "overlay_rate"]
