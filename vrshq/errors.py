"""The errors a user can act on: one small hierarchy, mapped to CLI exit codes and HTTP 4xx."""

from __future__ import annotations

import os


class VrshqError(Exception):
    """Base class: the message names the problem in words a user can act on."""


class VideoError(VrshqError):
    """A video file or frame folder that cannot be read."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class MaskFormatError(VrshqError):
    """A mask, RLE or palette image that does not decode to what it claims."""


class PromptError(VrshqError):
    """A prompt (mask, box, points, text) that does not fit the video or the session."""


class Cancelled(VrshqError):
    """The caller cancelled the work (a job's cancel): raised from a progress callback.

    Propagation catches it and stops, keeping the frames it finished (``TrackSet.cancelled``).
    """


class ModelError(VrshqError):
    """A model config or checkpoint that is missing, malformed or does not match."""


class EvaluationError(VrshqError):
    """Prediction and ground-truth folders that cannot be compared."""


def one_line(message: str, limit: int = 2000) -> str:
    """An error message as one line (a library's multi-line reason folded), at most ``limit`` chars."""
    text = " ".join(message.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


