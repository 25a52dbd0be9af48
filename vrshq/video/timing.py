"""A video file's frame timing from its container: the real frame rate, and whether it is constant.

Label Studio shows frame N of a video at time (N-1)/fps and never reads the file's timestamps, so
a prediction is only placed right on a constant-frame-rate (CFR) file whose fps is known. The
timestamps are read by demuxing the stream's packets with PyAV (no pixel is decoded) and
compared as integers in the stream's own time base, so the verdict never hangs on a float tie.

The rule (``CFR_TOLERANCE``): a file is constant-rate when every frame's timestamp lies within a
quarter of a frame period, plus one tick of the time base, of the evenly spaced grid through its
first and last frame. One tick absorbs the rounding of timestamps to the time base (29.97 fps in
a millisecond time base, as in Matroska and WebM, alternates 33 and 34 ms frames); a quarter
frame accepts capture jitter, and refuses a dropped or repeated frame (half a frame or more
off somewhere) and a rate that changes along the video (the grid drifts away from it).
"""

from __future__ import annotations

import math
import os
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from vrshq.errors import VideoError

CFR_TOLERANCE = Fraction(1, 4)  # of a frame period, beyond one tick of the time base
# Two rates are the same when they differ by at most this share: 29.97 and 30000/1001 are
# (1e-6), 30 and 29.97 are not (1e-3). At 1e-5 an hour at 30 fps drifts by about one frame.
FPS_RTOL = 1e-5


class VariableFrameRateError(VideoError):
    """A video whose frames are not evenly spaced in time: Label Studio would misplace them."""


@dataclass(frozen=True)
class FrameTiming:
    """What a video stream's timestamps say: frame count, rate, and how far from constant."""

    frames: int
    fps: Fraction  # the declared rate when the timestamps agree with it, else the measured one
    constant: bool
    worst_frame: int  # 0-based, in presentation order: the frame farthest from the CFR grid
    worst_offset: float  # that frame's distance from the grid, in frame periods
    shortest: float  # the shortest, typical (median) and longest frame duration, in seconds
    typical: float
    longest: float


def timing_from_pts(
    pts: Iterable[int], time_base: Fraction, declared: Sequence[Fraction | None] = ()
) -> FrameTiming | None:
    """The timing of frames presented at ``pts`` (ticks of ``time_base``, any order); None
    for fewer than two frames or a zero span. ``declared``: the container's rates, tried first."""
    ticks = np.sort(np.fromiter(pts, dtype=np.int64))  # ffmpeg's timestamps are int64
    n = len(ticks)
    span = int(ticks[-1] - ticks[0]) if n else 0
    if n < 2 or span <= 0:
        return None
    # The grid's period is span / (n - 1) ticks; measured in ticks * (n - 1), every offset from
    # it is an integer, and so is the bound: tolerance * span + one tick.
    steps = n - 1
    tol = CFR_TOLERANCE
    # int64 when every product fits (it does for hours of video), else Python's exact ints
    exact = object if span * steps * tol.denominator >= 2**62 else np.int64
    ticks = ticks.astype(exact) if exact is object else ticks
    offsets = (ticks - ticks[0]) * steps - np.arange(n, dtype=exact) * span
    distance = np.abs(offsets)
    worst = int(np.argmax(distance))
    constant = bool(distance[worst] * tol.denominator <= span * tol.numerator + steps * tol.denominator)
    durations = np.diff(ticks)
    tb = float(time_base)
    return FrameTiming(
        frames=n,
        fps=_rate(span, steps, time_base, declared),
        constant=constant,
        worst_frame=worst,
        worst_offset=float(Fraction(int(distance[worst]), span)),
        shortest=int(durations.min()) * tb,
        typical=float(np.median(durations.astype(float))) * tb,
        longest=int(durations.max()) * tb,
    )


def _rate(span: int, steps: int, time_base: Fraction, declared: Sequence[Fraction | None]) -> Fraction:
    """A declared rate that puts the last frame within one tick of its timestamp, else the
    measured one (declared rates are exact: 30000/1001, where ticks of 1 ms only come close)."""
    for rate in declared:
        if rate is not None and rate > 0:
            expected = Fraction(steps) / (Fraction(rate) * time_base)  # the span, in ticks
            if abs(expected - span) <= 1:
                return Fraction(rate)
    return Fraction(steps) / (span * time_base)


def probe_timing(path: str | os.PathLike) -> FrameTiming | None:
    """The timing of a video file's first video stream, from its packets' timestamps (PyAV
    demux, no decoding); None when it cannot be told (no stream, no timestamps, one frame, a
    file PyAV cannot open): the decoder's verdict and the container's average rate stand then."""
    try:
        import av

        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            time_base = stream.time_base
            declared = [_fraction(stream.average_rate), _fraction(stream.guessed_rate)]
            pts = []
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue  # the demuxer's end-of-stream marker
                stamp = packet.pts if packet.pts is not None else packet.dts
                if stamp is None:
                    return None  # a raw stream without timestamps: nothing to measure
                pts.append(stamp)
    except Exception:  # noqa: BLE001 - any probe failure: the decoder reports the file itself
        return None
    if time_base is None or time_base <= 0:
        return None
    return timing_from_pts(pts, Fraction(time_base), declared)


def _fraction(rate: object) -> Fraction | None:
    try:
        value = Fraction(rate)  # type: ignore[arg-type]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return value if value > 0 else None


def check_constant_rate(path: str | os.PathLike) -> FrameTiming | None:
    """The file's timing (see :func:`probe_timing`); VariableFrameRateError when it is not CFR."""
    timing = probe_timing(path)
    if timing is not None and not timing.constant:
        raise VariableFrameRateError(path, variable_rate_reason(path, timing))
    return timing


def variable_rate_reason(path: str | os.PathLike, timing: FrameTiming) -> str:
    """One line: what is variable, why it matters, and the ffmpeg command that fixes it."""
    target = max(1, math.floor(1 / timing.typical + 0.5))  # the rate most frames were made at
    return (f"variable frame rate: frames last {timing.shortest * 1000:.4g} to "
            f"{timing.longest * 1000:.4g} ms, and frame {timing.worst_frame} is "
            f"{timing.worst_offset:.2f} frames away from where an even {format_rate(timing.fps)} "
            "fps puts it; Label Studio draws frame N at (N-1)/fps, so convert the video to a "
            "constant rate first (an H.264 MP4, as Label Studio's video docs recommend): "
            f"{cfr_command(path, target)}")


def cfr_command(path: str | os.PathLike, fps: float | Fraction) -> str:
    """The ffmpeg command that re-encodes ``path`` at a constant ``fps`` next to it (*_cfr.mp4)."""
    name = os.path.basename(str(path))
    out = os.path.splitext(name)[0] + "_cfr.mp4"
    return (f"ffmpeg -i {shlex.quote(name)} -vf fps={format_rate(fps)} -c:v libx264 "
            f"-pix_fmt yuv420p -c:a aac {shlex.quote(out)}")


def same_rate(a: float | Fraction, b: float | Fraction, rtol: float = FPS_RTOL) -> bool:
    """Whether two frame rates are the same within ``rtol`` (relative, ``FPS_RTOL`` = 1e-5)."""
    a, b = float(a), float(b)
    if not (math.isfinite(a) and math.isfinite(b)) or a <= 0 or b <= 0:
        return False
    return abs(a - b) <= rtol * max(a, b)


def format_rate(fps: float | Fraction) -> str:
    """A rate as a user types it: 25, 29.97003 (30000/1001), 12.5."""
    return f"{float(fps):.7g}"


__all__ = ["CFR_TOLERANCE", "FPS_RTOL", "FrameTiming", "VariableFrameRateError", "cfr_command",
           "check_constant_rate", "format_rate", "probe_timing", "same_rate", "timing_from_pts",
           "variable_rate_reason"]
