"""Synthetic videos with exact per-pixel ground truth, for tests, benchmarks and the sample video.

The scene is drawn from its label map, so the ground truth is exact by construction:
object 1 is a disc that drifts slowly, object 2 a rectangle that sweeps right, leaves the
frame, comes back, and crosses object 1 twice (in front of it on the way out, behind it on
the way back). Objects 3.. are smaller ellipses on their own paths.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

# Saturated colours far from the grey-blue background and from each other.
_PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 40, 40),
    (40, 200, 60),
    (250, 210, 30),
    (200, 40, 220),
    (30, 220, 230),
    (250, 130, 20),
    (255, 255, 255),
    (20, 20, 20),
)

_CODEC_BY_EXT: dict[str, str] = {
    ".mp4": "libx264",
    ".mov": "libx264",
    ".mkv": "libx264",
    ".webm": "libvpx-vp9",
    ".avi": "mjpeg",
}


@dataclass
class SyntheticSpec:
    """What to render: size, length, frame rate, number of objects and which events happen."""

    num_frames: int = 40
    width: int = 160
    height: int = 120
    fps: float = 10.0
    num_objects: int = 2
    seed: int = 0
    occlusion: bool = True
    # object 2 leaves the frame mid-video and comes back (frames where it is absent)
    leave_frame: bool = True

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.width < 8 or self.height < 8:
            raise ValueError(f"frame size must be at least 8x8, got {self.width}x{self.height}")
        if not 1 <= self.num_objects <= 255:
            raise ValueError(f"num_objects must be in 1..255, got {self.num_objects}")
        if not self.fps > 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")


def object_colors(spec: SyntheticSpec) -> np.ndarray:
    """The RGB colour of each object, shape (num_objects + 1, 3); row 0 is unused (background)."""
    colors = np.zeros((spec.num_objects + 1, 3), dtype=np.uint8)
    rng = np.random.default_rng(spec.seed + 1)
    for k in range(1, spec.num_objects + 1):
        if k <= len(_PALETTE):
            colors[k] = _PALETTE[k - 1]
        else:
            colors[k] = rng.integers(0, 256, size=3)
    return colors


def _time(spec: SyntheticSpec, i: int) -> float:
    return i / (spec.num_frames - 1) if spec.num_frames > 1 else 0.0


def _label_map(spec: SyntheticSpec, i: int, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Paint the objects back to front; xs is (1, W) and ys is (H, 1) pixel centres."""
    w, h = spec.width, spec.height
    t = _time(spec, i)
    labels = np.zeros((h, w), dtype=np.uint8)

    # object 1: a disc drifting on a small loop
    r1 = 0.18 * min(w, h)
    cx1 = w * (0.45 + 0.10 * math.sin(2 * math.pi * t))
    cy1 = h * ((0.45 if spec.occlusion else 0.30) + 0.08 * math.cos(2 * math.pi * t))
    disc = (xs - cx1) ** 2 + (ys - cy1) ** 2 <= r1 * r1

    # object 2: a rectangle sweeping out to the right and back; it overlaps the disc
    # vertically only in part so neither object is ever fully hidden
    rw, rh = 0.22 * w, 0.30 * h
    sweep = 1.20 if spec.leave_frame else 0.60
    cx2 = w * (0.15 + sweep * (1 - math.cos(2 * math.pi * t)) / 2)
    cy2 = cy1 + 0.20 * h if spec.occlusion else 0.78 * h
    rect = (np.abs(xs - cx2) <= rw / 2) & (np.abs(ys - cy2) <= rh / 2)

    # extra objects first (furthest back), then the disc/rectangle in time-dependent order
    rng = np.random.default_rng(spec.seed + 1000)
    for k in range(3, spec.num_objects + 1):
        ax, ay, fx, fy, px, py = rng.uniform(0, 1, size=6)
        ex = w * (0.5 + (0.15 + 0.25 * ax) * math.sin(2 * math.pi * (t * (1 + fx) + px)))
        ey = h * (0.5 + (0.15 + 0.25 * ay) * math.sin(2 * math.pi * (t * (1 + fy) + py)))
        rx, ry = (0.05 + 0.05 * fx) * w, (0.05 + 0.05 * fy) * h
        labels[((xs - ex) / rx) ** 2 + ((ys - ey) / ry) ** 2 <= 1.0] = k

    rect_in_front = t < 0.5
    if spec.num_objects >= 2 and not rect_in_front:
        labels[rect] = 2
    labels[disc] = 1
    if spec.num_objects >= 2 and rect_in_front:
        labels[rect] = 2
    return labels


def _grids(spec: SyntheticSpec) -> tuple[np.ndarray, np.ndarray]:
    xs = (np.arange(spec.width, dtype=np.float32) + 0.5)[None, :]
    ys = (np.arange(spec.height, dtype=np.float32) + 0.5)[:, None]
    return xs, ys


def _background(spec: SyntheticSpec) -> np.ndarray:
    """A smooth gradient with a soft texture, int16 HxWx3, so SAM has something to ignore."""
    rng = np.random.default_rng(spec.seed)
    xs, ys = _grids(spec)
    u, v = xs / spec.width, ys / spec.height
    phase = rng.uniform(0, 2 * math.pi, size=2)
    texture = 12 * np.sin(2 * math.pi * 6 * u + phase[0]) * np.sin(2 * math.pi * 4 * v + phase[1])
    u, v = np.broadcast_arrays(u, v)
    base = np.stack([70 + 40 * u, 90 + 30 * v, 120 + 30 * (1 - u)], axis=-1)
    return np.rint(base + texture[..., None]).astype(np.int16)


def ground_truth(spec: SyntheticSpec) -> np.ndarray:
    """The label maps of every frame, (T, H, W) uint8 (0 = background, k = object k)."""
    xs, ys = _grids(spec)
    return np.stack([_label_map(spec, i, xs, ys) for i in range(spec.num_frames)])


def render_scene(spec: SyntheticSpec) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (frame HxWx3 uint8 RGB, label map HxW uint8) for every frame, in order."""
    xs, ys = _grids(spec)
    background = _background(spec)
    colors = object_colors(spec).astype(np.int16)
    rng = np.random.default_rng(spec.seed + 7)
    for i in range(spec.num_frames):
        labels = _label_map(spec, i, xs, ys)
        frame = background.copy()
        fg = labels > 0
        frame[fg] = colors[labels[fg]]
        frame += rng.integers(-3, 4, size=frame.shape, dtype=np.int16)
        yield np.clip(frame, 0, 255).astype(np.uint8), labels


def codec_for(path: str | os.PathLike) -> str:
    """The encoder write_video uses for a file name's extension."""
    ext = Path(path).suffix.lower()
    if ext not in _CODEC_BY_EXT:
        raise ValueError(f"{path}: no default codec for {ext!r}; pass codec=")
    return _CODEC_BY_EXT[ext]


def write_video(
    spec: SyntheticSpec,
    path: str | os.PathLike,
    codec: str | None = None,
    options: Mapping[str, str] | None = None,
) -> Path:
    """Encode the scene with PyAV at high quality and constant frame rate; return the path.

    codec defaults by extension (.mp4/.mov/.mkv: libx264, .webm: libvpx-vp9, .avi: mjpeg);
    options are encoder options laid over the high-quality defaults (e.g. {"g": "12"}).
    """
    import av  # lazily: encoding is the only place av is needed

    path = Path(path)
    codec = codec or codec_for(path)
    pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
    if pix_fmt.endswith("420p") and (spec.width % 2 or spec.height % 2):
        raise ValueError(
            f"{path}: {codec} needs an even frame size, got {spec.width}x{spec.height}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(spec.fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, pix_fmt
        stream.options = {**_quality_options(codec), **(options or {})}
        if codec in ("mjpeg", "mpeg4", "mpeg2video"):
            # ffmpeg's native encoders ignore crf; a low quantiser range keeps them near-lossless
            stream.codec_context.qmin = 1
            stream.codec_context.qmax = 2
        for frame, _ in render_scene(spec):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _quality_options(codec: str) -> dict[str, str]:
    if codec in ("libx264", "libx265"):
        return {"crf": "10", "preset": "veryfast"}
    if codec.startswith("libvpx"):
        # b=0 makes crf a pure constant-quality mode for vpx
        return {"crf": "10", "b": "0", "deadline": "realtime", "cpu-used": "8"}
    return {}


def write_frame_folder(spec: SyntheticSpec, directory: str | os.PathLike, ext: str = "png") -> Path:
    """Write the frames as 00000.<ext>, 00001.<ext>, ... (ext "png" or "jpg"); return the folder."""
    from PIL import Image

    ext = ext.lower().lstrip(".")
    if ext not in ("png", "jpg", "jpeg"):
        raise ValueError(f"ext must be 'png' or 'jpg', got {ext!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for i, (frame, _) in enumerate(render_scene(spec)):
        options = {"quality": 95} if ext != "png" else {"compress_level": 1}
        Image.fromarray(frame).save(directory / f"{i:05d}.{ext}", **options)
    return directory


def write_ground_truth(spec: SyntheticSpec, directory: str | os.PathLike) -> Path:
    """Write the label maps as palette PNGs 00000.png ... (pixel value = object id)."""
    from PIL import Image

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    palette = object_colors(spec).reshape(-1).tolist()
    for i, labels in enumerate(ground_truth(spec)):
        # frombytes keeps the raw values as palette indices (convert("P") would remap them)
        image = Image.frombytes("P", (spec.width, spec.height), labels.tobytes())
        image.putpalette(palette)
        image.save(directory / f"{i:05d}.png")
    return directory
