"""The one Track type: per-frame masks of one object, stored as COCO RLE, and its JSON file.

A :class:`Track` holds, for each frame that was set explicitly, the object's mask as COCO
RLE and an optional presence score (the model's object logit). A frame that was set with
an empty mask means "the object is absent there"; a frame never set means "not tracked".
Frame indices are 0-based decoder indices.

A :class:`TrackSet` groups the tracks of one video. Its JSON document (``track.json``) is::

    {
      "version": 1,
      "height": 1080, "width": 1920,        # original video size; every mask has it
      "num_frames": 3000,                   # frames in the video, or null if unknown
      "fps": 25.0,                          # frame rate, or null if unknown
      "objects": {
        "1": {                              # object id (a positive int) as a string
          "frames": {
            "0": {"rle": {"size": [1080, 1920], "counts": "..."}, "score": 9.8},
            "1": {"rle": {...}}             # "score" is left out when there is none
          }
        }
      }
    }

``Track.to_json()`` gives one object on its own: ``{"obj_id", "height", "width", "frames"}``
with ``frames`` as above. Readers ignore keys they do not know.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vrshq.errors import MaskFormatError
from vrshq.masks.boxes import PercentBox, box_to_percent
from vrshq.masks.rle import (
    CocoRle,
    PixelBox,
    decode_rle,
    encode_rle,
    ensure_mask,
    normalize_rle,
    rle_area,
    rle_size,
    rle_to_bbox,
)

FORMAT_VERSION = 1


@dataclass(eq=False)
class Track:
    """Masks of one object over the frames of a video, kept as COCO RLE."""

    obj_id: int
    height: int
    width: int
    _rles: dict[int, CocoRle] = field(default_factory=dict, init=False, repr=False)
    _scores: dict[int, float | None] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        _check_positive_int("object id", self.obj_id)
        _check_positive_int("track height", self.height)
        _check_positive_int("track width", self.width)

    def set(self, frame_idx: int, mask: Any, score: float | None = None) -> None:
        """Store the object's mask (HxW at the video size) and presence score for a frame."""
        frame = _check_frame(frame_idx)
        rle = encode_rle(ensure_mask(mask, (self.height, self.width)))
        self._rles[frame] = rle
        self._scores[frame] = _check_score(score)

    def set_rle(self, frame_idx: int, rle: Mapping[str, Any], score: float | None = None) -> None:
        """Store a frame's mask given as COCO RLE (any form :func:`decode_rle` reads)."""
        frame = _check_frame(frame_idx)
        canonical = normalize_rle(rle)
        if tuple(canonical["size"]) != (self.height, self.width):
            raise MaskFormatError(
                f"frame {frame}: RLE size {canonical['size']} differs from the track's {[self.height, self.width]}"
            )
        self._rles[frame] = canonical
        self._scores[frame] = _check_score(score)

    def remove(self, frame_idx: int) -> None:
        """Forget a frame, so that it counts as not tracked; KeyError if it was not set."""
        del self._rles[frame_idx]
        del self._scores[frame_idx]

    def has(self, frame_idx: int) -> bool:
        """Whether the frame was set (with a mask that may be empty)."""
        return frame_idx in self._rles

    __contains__ = has

    def is_present(self, frame_idx: int) -> bool:
        """Whether the frame was set with a non-empty mask."""
        return frame_idx in self._rles and rle_area(self._rles[frame_idx]) > 0

    def mask(self, frame_idx: int) -> np.ndarray:
        """The frame's boolean HxW mask; KeyError if the frame was never set."""
        return decode_rle(self._rles[frame_idx])

    def rle(self, frame_idx: int) -> CocoRle:
        """A copy of the frame's COCO RLE; KeyError if the frame was never set."""
        rle = self._rles[frame_idx]
        return {"size": list(rle["size"]), "counts": rle["counts"]}

    def score(self, frame_idx: int) -> float | None:
        """The frame's presence score (logit), or None; KeyError if the frame was never set."""
        return self._scores[frame_idx]

    def frames(self) -> list[int]:
        """Sorted indices of the frames that were set."""
        return sorted(self._rles)

    def present_frames(self) -> list[int]:
        """Sorted indices of the frames set with a non-empty mask."""
        return [f for f in self.frames() if rle_area(self._rles[f]) > 0]

    def box(self, frame_idx: int) -> PixelBox | None:
        """Pixel box (x0, y0, x1, y1), x1/y1 exclusive, of a frame; None when the mask is empty."""
        return rle_to_bbox(self._rles[frame_idx])

    def percent_box(self, frame_idx: int) -> PercentBox | None:
        """Label Studio percent box of a frame; None when the mask is empty."""
        box = self.box(frame_idx)
        return None if box is None else box_to_percent(box, self.height, self.width)

    def __len__(self) -> int:
        return len(self._rles)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Track):
            return NotImplemented
        if (self.obj_id, self.height, self.width) != (other.obj_id, other.height, other.width):
            return False
        if self._scores != other._scores:
            return False
        for frame, rle in self._rles.items():
            theirs = other._rles[frame]
            # Equal strings are equal masks; different strings may still decode alike.
            if rle["counts"] != theirs["counts"] and not np.array_equal(decode_rle(rle), decode_rle(theirs)):
                return False
        return True

    __hash__ = None  # type: ignore[assignment]  # mutable

    def to_json(self) -> dict[str, Any]:
        """This track as a JSON-ready dict: ``{"obj_id", "height", "width", "frames"}``."""
        return {"obj_id": self.obj_id, "height": self.height, "width": self.width, "frames": self._frames_json()}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Track:
        """Rebuild a track from :meth:`to_json` output, checking every field."""
        if not isinstance(doc, Mapping):
            raise MaskFormatError(f"a track must be a JSON object, got {type(doc).__name__}")
        for key in ("obj_id", "height", "width", "frames"):
            if key not in doc:
                raise MaskFormatError(f"a track needs {key!r}")
        track = cls(_json_int("obj_id", doc["obj_id"]), _json_int("height", doc["height"]), _json_int("width", doc["width"]))
        track._load_frames(doc["frames"])
        return track

    def _frames_json(self) -> dict[str, Any]:
        frames: dict[str, Any] = {}
        for frame in self.frames():
            entry: dict[str, Any] = {"rle": self.rle(frame)}
            if self._scores[frame] is not None:
                entry["score"] = self._scores[frame]
            frames[str(frame)] = entry
        return frames

    def _load_frames(self, frames: Any) -> None:
        if not isinstance(frames, Mapping):
            raise MaskFormatError(f"object {self.obj_id}: 'frames' must be a JSON object")
        for key, entry in frames.items():
            frame = _json_frame_key(key)
            if not isinstance(entry, Mapping) or "rle" not in entry:
                raise MaskFormatError(f"object {self.obj_id}, frame {key}: needs an 'rle'")
            if rle_size(entry["rle"]) != (self.height, self.width):
                raise MaskFormatError(
                    f"object {self.obj_id}, frame {key}: RLE size {entry['rle']['size']} differs "
                    f"from the video's {[self.height, self.width]}"
                )
            self.set_rle(frame, entry["rle"], entry.get("score"))


@dataclass
class TrackSet:
    """The tracks of one video, keyed by object id, and the ``track.json`` document."""

    height: int
    width: int
    num_frames: int | None = None
    fps: float | None = None
    tracks: dict[int, Track] = field(default_factory=dict)
    # Set when propagation was cancelled: the tracks hold only the frames finished before.
    cancelled: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        _check_positive_int("video height", self.height)
        _check_positive_int("video width", self.width)
        if self.num_frames is not None and (not _is_int(self.num_frames) or self.num_frames < 0):
            raise MaskFormatError(f"num_frames must be a non-negative int or None, got {self.num_frames!r}")
        if self.fps is not None and not (_is_number(self.fps) and math.isfinite(self.fps) and self.fps > 0):
            raise MaskFormatError(f"fps must be a positive number or None, got {self.fps!r}")
        tracks, self.tracks = self.tracks, {}
        for obj_id, track in tracks.items():
            if obj_id != track.obj_id:
                raise MaskFormatError(f"track of object {track.obj_id} is keyed as {obj_id}")
            self.add(track)

    def add(self, track: Track) -> Track:
        """Add a track (replacing one with the same object id) after checking its size."""
        if (track.height, track.width) != (self.height, self.width):
            raise MaskFormatError(
                f"track {track.obj_id} is {track.height}x{track.width}, the video is {self.height}x{self.width}"
            )
        self.tracks[track.obj_id] = track
        return track

    def new_track(self, obj_id: int) -> Track:
        """Create, add and return an empty track of the video's size."""
        return self.add(Track(obj_id, self.height, self.width))

    def obj_ids(self) -> list[int]:
        """Sorted object ids."""
        return sorted(self.tracks)

    def __getitem__(self, obj_id: int) -> Track:
        return self.tracks[obj_id]

    def __contains__(self, obj_id: object) -> bool:
        return obj_id in self.tracks

    def __iter__(self) -> Iterator[Track]:
        return (self.tracks[obj_id] for obj_id in self.obj_ids())

    def __len__(self) -> int:
        return len(self.tracks)

    def to_json(self) -> dict[str, Any]:
        """The ``track.json`` document described in the module docstring."""
        return {
            "version": FORMAT_VERSION,
            "height": self.height,
            "width": self.width,
            "num_frames": self.num_frames,
            "fps": self.fps,
            "objects": {str(t.obj_id): {"frames": t._frames_json()} for t in self},
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> TrackSet:
        """Rebuild a track set from a ``track.json`` document, checking every field."""
        if not isinstance(doc, Mapping):
            raise MaskFormatError(f"a track file must hold a JSON object, got {type(doc).__name__}")
        version = doc.get("version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise MaskFormatError(f"track file version {version!r} is not supported (expected {FORMAT_VERSION})")
        for key in ("height", "width", "objects"):
            if key not in doc:
                raise MaskFormatError(f"a track file needs {key!r}")
        num_frames = doc.get("num_frames")
        fps = doc.get("fps")
        tracks = cls(
            _json_int("height", doc["height"]),
            _json_int("width", doc["width"]),
            None if num_frames is None else _json_int("num_frames", num_frames),
            None if fps is None else float(_json_number("fps", fps)),
        )
        objects = doc["objects"]
        if not isinstance(objects, Mapping):
            raise MaskFormatError("'objects' must be a JSON object keyed by object id")
        for key, obj in objects.items():
            if not isinstance(obj, Mapping) or "frames" not in obj:
                raise MaskFormatError(f"object {key}: needs 'frames'")
            obj_id = _json_obj_key(key)
            if obj_id in tracks:
                raise MaskFormatError(f"object {obj_id} appears twice in 'objects'")
            track = tracks.new_track(obj_id)
            track._load_frames(obj["frames"])
        return tracks

    def save(self, path: str | os.PathLike) -> None:
        """Write the ``track.json`` document, atomically."""
        target = Path(path)
        # Write-then-rename so a crash never leaves a truncated file behind.
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(self.to_json(), fh, separators=(",", ":"))
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrackSet:
        """Read a ``track.json`` document."""
        try:
            with open(path, encoding="utf-8") as fh:
                doc = json.load(fh)
        except json.JSONDecodeError as exc:
            raise MaskFormatError(f"{path}: not valid JSON: {exc}") from exc
        return cls.from_json(doc)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _check_positive_int(what: str, value: Any) -> None:
    if not _is_int(value) or value < 1:
        raise MaskFormatError(f"{what} must be a positive int, got {value!r}")


def _check_frame(frame_idx: Any) -> int:
    if not _is_int(frame_idx) or frame_idx < 0:
        raise MaskFormatError(f"frame index must be a non-negative int, got {frame_idx!r}")
    return int(frame_idx)


def _check_score(score: Any) -> float | None:
    if score is None:
        return None
    if not _is_number(score) or not math.isfinite(score):
        raise MaskFormatError(f"presence score must be a finite number or None, got {score!r}")
    return float(score)


def _json_int(what: str, value: Any) -> int:
    if not _is_int(value):
        raise MaskFormatError(f"{what!r} must be an int, got {value!r}")
    return int(value)


def _json_number(what: str, value: Any) -> float:
    if not _is_number(value):
        raise MaskFormatError(f"{what!r} must be a number, got {value!r}")
    return float(value)


def _json_frame_key(key: Any) -> int:
    if not isinstance(key, str) or not (key.isascii() and key.isdigit()):
        raise MaskFormatError(f"frame key {key!r} must be a 0-based frame index as a string")
    return int(key)


def _json_obj_key(key: Any) -> int:
    if not isinstance(key, str) or not (key.isascii() and key.isdigit()) or int(key) < 1:
        raise MaskFormatError(f"object key {key!r} must be a positive object id as a string")
    return int(key)
