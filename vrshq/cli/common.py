"""Options and model resolution shared by the subcommands."""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from vrshq.cli.folders import add_model_option, model_folder
from vrshq.engine import PRECISIONS, EngineConfig, apply_precision, build_model
from vrshq.errors import ModelError, VideoError, VrshqError
from vrshq.video.reader import VideoReader, open_video
from vrshq.video.timing import format_rate, same_rate

# --fps of `track` and `segment`: what it means on each kind of input
FPS_HELP = ("frame rate of a frame folder (default 30); on a video file it must agree with the "
            "file's own rate (an error otherwise): the frames' timing comes from the file")

MiB = 1024 * 1024


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--model / --sam2-config / --sam2-checkpoint / --device and the memory budget."""
    add_model_option(parser, "model folder with sam2/config.yaml and sam2/model.pt", old_flag=True)
    parser.add_argument("--sam2-config", help="sam2 hydra YAML, or a config name packaged with sam2")
    parser.add_argument("--sam2-checkpoint", help="sam2 checkpoint ({'model': state_dict})")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    add_precision_option(parser, default=os.environ.get("VRSHQ_PRECISION") or "auto")
    parser.add_argument("--feature-budget-mib", type=int, default=1024,
                        help="image features kept in memory; the rest spill to disk")
    parser.add_argument("--cache-dir", help="where spilled features go, made if missing "
                        "(default: system temp)")


def add_precision_option(parser: argparse.ArgumentParser, default: str | None) -> None:
    """--precision: the precision plan; ``default`` None leaves it to the backend's config."""
    parser.add_argument("--precision", choices=PRECISIONS, default=default,
                        help="official: the release's bf16 weights and arithmetic (VRS-HQ; sam3: on CUDA "
                        "only); fp32; "
                        "auto: official on CUDA, fp32 on a CPU (default $VRSHQ_PRECISION, else auto)")


def checked_precision(value: str) -> str:
    """``value`` of --precision (or of VRSHQ_PRECISION, its default), or a one-line error."""
    if value not in PRECISIONS:
        raise VrshqError(f"precision {value!r} (--precision or VRSHQ_PRECISION): choose from "
                         f"{', '.join(PRECISIONS)}")
    return value


def engine_config(args: argparse.Namespace) -> EngineConfig:
    """The engine config from the command-line options."""
    if args.feature_budget_mib < 0:
        raise ModelError("--feature-budget-mib must be >= 0")
    return EngineConfig(device=args.device, precision=checked_precision(args.precision),
                        feature_budget_bytes=args.feature_budget_mib * MiB,
                        cache_dir=checked_cache_dir(args.cache_dir))


def checked_cache_dir(path: str | None) -> str | None:
    """--cache-dir, made if missing and proven writable, or a one-line error.

    Checked before any model loads: the engine first spills there seconds into tracking.
    """
    if path is None:
        return None
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise VrshqError(f"--cache-dir {path}: cannot use it for spilled features "
                         f"({exc.strerror or exc})") from None
    return path


def load_sam2(args: argparse.Namespace, config: EngineConfig):
    """The sam2 model named by the options."""
    cfg, ckpt = args.sam2_config, args.sam2_checkpoint
    model_dir = model_folder(args, old_env=True)
    if cfg is None and ckpt is not None and not model_dir:
        raise ModelError("--sam2-checkpoint needs --sam2-config (or --model with its config)")
    if cfg is not None and ckpt is None:
        # without weights sam2 would silently track with a randomly initialised model
        raise ModelError("--sam2-config needs --sam2-checkpoint")
    if cfg is None:
        if not model_dir:
            raise ModelError("no model: pass --model (a folder made by `vrshq tiny-models` or "
                             "`vrshq download`; or set VRSHQ_MODEL) or --sam2-config and --sam2-checkpoint")
        if not Path(model_dir).is_dir():
            raise ModelError(f"--model {model_dir}: folder not found (the model folder, --model or VRSHQ_MODEL)")
        base = Path(model_dir) / "sam2"
        cfg, ckpt = str(base / "config.yaml"), ckpt or str(base / "model.pt")
        if not Path(cfg).is_file():
            raise ModelError(f"{cfg}: not found (expected a sam2 config in the model folder)")
    resolve_device(args, config)
    return apply_precision(build_model(cfg, ckpt), config)


def resolve_device(args: argparse.Namespace, config: EngineConfig) -> torch.device:
    """The device of --device, checked to exist here (torch fails late and with a traceback)."""
    usage = "use auto, cpu, cuda or cuda:N"
    try:
        device = config.resolved_device()
    except RuntimeError:
        raise ModelError(f"--device {args.device}: not a device ({usage})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(f"--device {args.device}: CUDA is not available on this machine")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ModelError(f"--device {args.device}: there are only {count} CUDA device(s)")
    elif device.type != "cpu":
        raise ModelError(f"--device {args.device}: not supported ({usage})")
    return device


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Drop what native code (ffmpeg, decord's logger) writes to file descriptor 2 meanwhile.

    decord prints its own lines on a bad file before raising; the CLI reports the error in
    one line of its own instead.
    """
    fd = 2
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), fd)
            try:
                yield
            finally:
                os.dup2(saved, fd)
    finally:
        os.close(saved)


def open_video_quietly(path: str, fps: float | None = None) -> VideoReader:
    """``open_video`` without decord's and ffmpeg's own stderr lines on a bad file; ``fps``
    (--fps) sets a frame folder's rate, and on a video file must be the file's own rate.

    On an error the half-opened decoder is freed before stderr comes back: ffmpeg logs
    again while it flushes, and the exception's tracebacks would keep it alive till later.
    """
    error: VrshqError | None = None
    with quiet_native_stderr():
        try:
            reader = open_video(path, fps=fps)
            _check_fps_option(reader, fps)
            return reader
        except VrshqError as exc:
            error, chained = exc, exc
            while chained is not None:
                chained.__traceback__ = None
                chained = chained.__context__
            error.__context__ = error.__cause__ = None
        gc.collect()
    raise error


def _check_fps_option(reader: VideoReader, fps: float | None) -> None:
    """A VideoError when --fps disagrees with a video file's own rate.

    An override would only re-time labelstudio.json, and Label Studio would then draw every
    box at the wrong moment of the real video: refused instead (FPS_HELP says so).
    """
    own = reader.file_fps
    if fps is None or own is None or same_rate(fps, own):
        return
    reader.close()
    raise VideoError(reader.path, f"--fps {fps:g} disagrees with the file's own rate, "
                     f"{format_rate(own)} fps: leave --fps out for a video file (it sets a frame "
                     f"folder's rate), or convert the video to {fps:g} fps first "
                     f"(ffmpeg -i in.mp4 -vf fps={fps:g} out.mp4)")
