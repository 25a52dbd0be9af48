"""One correction: an annotator's fix of one object on one frame, validated on construction."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any

from vrshq.errors import MaskFormatError
from vrshq.masks.rle import normalize_rle, rle_size

EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "interactive", "SYNC")
BOX_KEYS = ("frame", "x", "y", "width", "height")
BOX_OPTIONAL_KEYS = ("enabled", "rotation", "time")  # kept when Label Studio sends them

Id = int | str
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def utc_now() -> str:
    """The current UTC time as ISO 8601 with microseconds and ``+00:00``."""
    return datetime.now(UTC).isoformat(timespec="microseconds")




@dataclass(frozen=True)
class Correction:
    """One corrected object on one frame; validated and normalised on construction.

    Ids are ints or strings as Label Studio gives them; a string of decimal digits becomes
    an int, so a value reads back the same from any database. ``predicted_mask`` and
    ``corrected_mask`` are COCO RLE dicts (``{"size": [h, w], "counts": str}``) or None;
    ``predicted_boxes`` and ``corrected_boxes`` are lists of ``{frame, x, y, width, height}``
    (Label Studio percentages, optionally ``enabled``/``rotation``/``time``) or None;
    ``corrected_clicks`` the annotator's clicks on ``frame`` as ``{x, y, label}`` (pixels of the
    video, label 1 positive / 0 negative; labelstudio/click_fixes.py) or None.
    ``id`` and ``created_at`` are set by :meth:`CorrectionsLog.append`.
    """

    project: Id
    task: Id
    annotation: Id | None
    annotator: Id | None
    video_path: str
    video_sha256: str | None
    fps: float | None
    prompt: str
    obj_id: Id
    label: str
    frame: int
    predicted_mask: dict[str, Any] | None
    corrected_mask: dict[str, Any] | None
    predicted_boxes: list[dict[str, Any]] | None
    corrected_boxes: list[dict[str, Any]] | None
    model_version: str
    plugin: str
    event: str
    annotated_at: str | None = None  # Label Studio's created/updated time of the annotation
    corrected_clicks: list[dict[str, Any]] | None = None  # clicks on ``frame``, pixels
    created_at: str | None = None  # set by the log (UTC, ISO 8601)
    id: int | None = None  # set by the log

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        put("project", norm_id("project", self.project))
        put("task", norm_id("task", self.task))
        put("annotation", norm_id("annotation", self.annotation, optional=True))
        put("annotator", norm_id("annotator", self.annotator, optional=True))
        put("obj_id", norm_id("obj_id", self.obj_id))
        for name in ("video_path", "prompt", "label"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {type(getattr(self, name)).__name__}")
        if not self.video_path:
            raise ValueError("video_path must not be empty")
        for name in ("model_version", "plugin"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        if self.video_sha256 is not None:
            if not isinstance(self.video_sha256, str) or not _SHA256.match(self.video_sha256.lower()):
                raise ValueError(f"video_sha256 must be 64 hex digits, got {self.video_sha256!r}")
            put("video_sha256", self.video_sha256.lower())
        if self.fps is not None:
            if isinstance(self.fps, bool) or not isinstance(self.fps, (int, float)) \
                    or not math.isfinite(self.fps) or self.fps <= 0:
                raise ValueError(f"fps must be a positive finite number or None, got {self.fps!r}")
            put("fps", float(self.fps))
        put("frame", norm_frame("frame", self.frame))
        if self.event not in EVENTS:
            raise ValueError(f"event must be one of {', '.join(EVENTS)}, got {self.event!r}")
        sizes = {}
        for name in ("predicted_mask", "corrected_mask"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise ValueError(f"{name} must be a COCO RLE dict or None, got {type(value).__name__}")
            try:
                put(name, normalize_rle(value))
                sizes[name] = rle_size(value)
            except MaskFormatError as exc:
                raise ValueError(f"{name}: {exc}") from None
        if len(sizes) == 2 and sizes["predicted_mask"] != sizes["corrected_mask"]:
            raise ValueError(f"predicted_mask is {sizes['predicted_mask']} but corrected_mask is "
                             f"{sizes['corrected_mask']}: the RLE sizes must agree")
        for name in ("predicted_boxes", "corrected_boxes"):
            put(name, _norm_boxes(name, getattr(self, name)))
        put("corrected_clicks", _norm_clicks(self.corrected_clicks))
        for name in ("annotated_at", "created_at"):
            value = getattr(self, name)
            if value is not None:
                try:
                    datetime.fromisoformat(value)
                except (TypeError, ValueError):
                    raise ValueError(f"{name} must be an ISO 8601 time or None, got {value!r}") from None
        if self.id is not None and (isinstance(self.id, bool) or not isinstance(self.id, int)):
            raise ValueError(f"id must be an int or None, got {self.id!r}")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (RLE masks included)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Correction:
        """The inverse of :meth:`to_json`; unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def norm_id(name: str, value: Any, optional: bool = False) -> Id | None:
    """A Label Studio id as stored: ints stay ints, digit strings become ints, other text stays."""
    if value is None:
        if optional:
            return None
        raise ValueError(f"{name} is required")
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{name} must be an int or a string, got {type(value).__name__}")
    if isinstance(value, str):
        value = value.strip()
        if not value:
            raise ValueError(f"{name} must not be empty")
        if value.isascii() and value.isdigit():
            value = int(value)
    if isinstance(value, int) and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def norm_frame(name: str, value: Any) -> int:
    """A 0-based frame index, checked."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def _norm_clicks(clicks: Any) -> list[dict[str, Any]] | None:
    """Clicks as stored: a non-empty list of ``{x, y, label}``, x/y finite pixels >= 0, label 0 or 1."""
    if clicks is None:
        return None
    if isinstance(clicks, (str, bytes, Mapping)) or not isinstance(clicks, Iterable):
        raise ValueError("corrected_clicks must be a list of clicks or None")
    out = []
    for i, click in enumerate(clicks):
        where = f"corrected_clicks[{i}]"
        if not isinstance(click, Mapping) or set(click) != {"x", "y", "label"}:
            raise ValueError(f"{where} must be a dict of x, y and label, got {click!r}")
        for key in ("x", "y"):
            v = click[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{where}.{key} must be a finite number >= 0 (pixels), got {v!r}")
        if click["label"] not in (0, 1) or isinstance(click["label"], bool):
            raise ValueError(f"{where}.label must be 1 (positive) or 0 (negative), got {click['label']!r}")
        out.append({"x": float(click["x"]), "y": float(click["y"]), "label": int(click["label"])})
    if not out:
        raise ValueError("corrected_clicks must hold at least one click (None for no clicks)")
    return out


def _norm_boxes(name: str, boxes: Any) -> list[dict[str, Any]] | None:
    if boxes is None:
        return None
    if isinstance(boxes, (str, bytes, Mapping)) or not isinstance(boxes, Iterable):
        raise ValueError(f"{name} must be a list of boxes or None")
    out = []
    for i, box in enumerate(boxes):
        where = f"{name}[{i}]"
        if not isinstance(box, Mapping):
            raise ValueError(f"{where} must be a dict, got {type(box).__name__}")
        missing = [k for k in BOX_KEYS if k not in box]
        if missing:
            raise ValueError(f"{where} lacks {', '.join(missing)}")
        unknown = sorted(set(box) - set(BOX_KEYS) - set(BOX_OPTIONAL_KEYS))
        if unknown:
            raise ValueError(f"{where} has unknown keys {', '.join(map(str, unknown))}")
        clean: dict[str, Any] = {"frame": norm_frame(f"{where}.frame", box["frame"])}
        for key in ("x", "y", "width", "height", "rotation", "time"):
            if key not in box:
                continue
            v = box[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{where}.{key} must be a finite number, got {v!r}")
            if key in ("width", "height") and v < 0:
                raise ValueError(f"{where}.{key} must be >= 0, got {v}")
            clean[key] = float(v)
        if "enabled" in box:
            if not isinstance(box["enabled"], bool):
                raise ValueError(f"{where}.enabled must be true or false, got {box['enabled']!r}")
            clean["enabled"] = box["enabled"]
        out.append(clean)
    return out


