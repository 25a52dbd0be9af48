"""Label Studio predictions for tracked objects, and reading a submitted annotation back.

Each object becomes two results with paired region ids (the track's id, and the same id with
``-mask`` for the mask: Label Studio's editor merges results that share an id into one region,
which hid the masks when both used one id, seen in a browser on 1.23.2):

* a ``videorectangle`` track (``from_name`` = the VideoRectangle, ``to_name`` = the Video),
  with the object's own label in ``value.labels`` (one label per object, not the label that
  happens to be selected in the editor: label-studio-ml-backend issue #664);
* when the config has keyframe masks (see :mod:`vrshq.backend.labelstudio.labelconfig`), a ``brushlabels``
  result on the keyframe image list, page ``item_index``, holding the object's mask on its
  keyframe as Label Studio brush RLE.

Region ids are deterministic (:func:`region_id`), so predicting a task again replaces its
regions in the editor instead of adding copies. Frames follow Label Studio: LS frame N
(1-based) is decoded frame N - 1 and ``time`` = N / fps (done by
:func:`vrshq.masks.track_to_videorectangle`).
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vrshq.backend.answers import shorten
from vrshq.backend.labelstudio.labelconfig import LabelConfigError, LabelConfigInfo
from vrshq.errors import MaskFormatError
from vrshq.masks import (
    PercentBox,
    Track,
    decode_brush,
    decode_touches,
    encode_brush,
    ensure_mask,
    track_to_videorectangle,
    videorectangle_to_boxes,
)

MASK_SUFFIX = "-mask"
# A mask page beyond the keyframe: ``<track id>-mask-f<N>``, N the page's 1-based LS frame.
_PAGE_SUFFIX = re.compile(r"-mask-f([1-9][0-9]{0,8})$")


def mask_region_id(track_region_id: str) -> str:
    """The id of an object's keyframe-mask result, paired with its track's id."""
    return f"{track_region_id}{MASK_SUFFIX}"


def page_region_id(track_region_id: str, frame: int) -> str:
    """The id of an object's mask on the extra page of 0-based ``frame`` (LS frame ``frame + 1``)."""
    return f"{track_region_id}{MASK_SUFFIX}-f{int(frame) + 1}"


def page_frame(result_id: str) -> int | None:
    """The 0-based frame of an extra mask page's result id, None for any other id."""
    match = _PAGE_SUFFIX.search(result_id)
    return int(match.group(1)) - 1 if match else None


def track_region_id(result_id: str) -> str:
    """The track id a result belongs to: a mask's paired id (keyframe or extra page) without its
    suffix, others as they are."""
    match = _PAGE_SUFFIX.search(result_id)
    if match:
        return result_id[: match.start()]
    return result_id[: -len(MASK_SUFFIX)] if result_id.endswith(MASK_SUFFIX) else result_id


def region_id(task_id: int | str, obj_id: int | str) -> str:
    """The region id of object ``obj_id`` in task ``task_id``: the same on every prediction."""
    return f"vrshq-{task_id}-{obj_id}"


def object_results(
    track: Track,
    keyframe: int,
    keyframe_mask: np.ndarray,
    label: str,
    region_id: str,
    info: LabelConfigInfo,
    fps: float,
    frames_count: int,
    item_index: int,
    score: float,
    tolerance: float = 0.5,
    meta: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The results of one object: its track and, when the config has masks, its keyframe mask.

    ``keyframe`` is the 0-based decoded frame the mask belongs to (its LS frame is
    ``keyframe + 1``; the task's ``keyframe_frames`` records it for the correction path).
    ``item_index`` is the object's page in the keyframe image list. ``score`` (0..1) is set
    on both results. ``tolerance`` is the track compression in percentage points. ``meta``
    (e.g. ``{"label_rule": "predicted_values"}``) becomes both results' ``meta``: Label Studio
    keeps a result's meta with its region.
    """
    info.check_label(label)
    _check_score(score)
    if isinstance(item_index, bool) or not isinstance(item_index, numbers.Integral) or item_index < 0:
        raise ValueError(f"item_index must be an int >= 0, got {item_index!r}")
    if isinstance(keyframe, bool) or not isinstance(keyframe, numbers.Integral) or keyframe < 0:
        raise ValueError(f"keyframe must be a 0-based frame index >= 0, got {keyframe!r}")
    track_result = track_to_videorectangle(
        track,
        fps,
        frames_count,
        labels=[label],
        tolerance=tolerance,
        region_id=region_id,
        from_name=info.box_name,
        to_name=info.video_name,
    )
    track_result["score"] = float(score)
    results = [track_result]
    if info.has_masks:
        mask = ensure_mask(keyframe_mask)
        height, width = mask.shape
        if (height, width) != (track.height, track.width):
            raise MaskFormatError(
                f"keyframe mask is {height}x{width}, the track's video is {track.height}x{track.width}"
            )
        results.append(brush_result(mask, label, mask_region_id(region_id), info, item_index, score))
    if meta:
        for result in results:
            result["meta"] = dict(meta)
    return results


def brush_result(mask: np.ndarray, label: str, result_id: str, info: LabelConfigInfo,
                 item_index: int, score: float, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A ``brushlabels`` result: ``mask`` on page ``item_index`` of the keyframe image list."""
    mask = ensure_mask(mask)
    height, width = mask.shape
    out = {
        "id": result_id,
        "from_name": info.mask_name,
        "to_name": info.keyframes_name,
        "type": "brushlabels",
        "item_index": int(item_index),
        "original_width": int(width),
        "original_height": int(height),
        "image_rotation": 0,
        "value": {"format": "rle", "rle": encode_brush(mask), "brushlabels": [label]},
        "score": float(score),
    }
    if meta:
        out["meta"] = dict(meta)
    return out


def prediction(results: list[dict[str, Any]], model_version: str, score: float) -> dict[str, Any]:
    """One Label Studio prediction: ``{"result", "model_version", "score"}``."""
    _check_score(score)
    return {"result": list(results), "model_version": str(model_version), "score": float(score)}


@dataclass
class ParsedRegion:
    """One object read back from an annotation: its label, the boxes LS shows, its keyframe mask."""

    label: str | None = None
    boxes: dict[int, PercentBox] = field(default_factory=dict)  # 0-based frame -> percent box
    keyframe_item_index: int | None = None  # page of the keyframe image list
    mask: np.ndarray | None = None  # boolean HxW keyframe mask
    keyframe: int | None = None  # 0-based decoded frame of the mask, when the task says
    has_track: bool = False  # a videorectangle result was seen for this id
    # Extra mask pages (results ``<id>-mask-f<N>``): 0-based frame -> boolean HxW mask, and
    # 0-based frame -> the page (item_index) it was on.
    pages: dict[int, np.ndarray] = field(default_factory=dict)
    page_items: dict[int, int] = field(default_factory=dict)


def parse_annotation(
    annotation_result: Sequence[Mapping[str, Any]],
    info: LabelConfigInfo,
    keyframe_frames: Sequence[int] | None = None,
    frame_size: tuple[int, int] | None = None,
    frames_count: int | None = None,
) -> dict[str, ParsedRegion]:
    """Tracks and keyframe masks of a submitted annotation (or a prediction), by region id.

    Reads the ``videorectangle`` results of the config's VideoRectangle and the
    ``brushlabels`` results of its BrushLabels; other results are skipped. A brush region
    the annotator drew anew has an id of its own and comes back as a region without boxes.
    ``keyframe_frames`` (the task's ``keyframe_frames``: 1-based LS frame per keyframe image)
    fills :attr:`ParsedRegion.keyframe`. With ``frame_size`` (the task's video, height and
    width), a brush result that declares another size is refused before its RLE is decoded: the
    declared size decides how much the decoder allocates. With ``frames_count`` (the task's
    video), box tracks are read for that many frames, whatever ``framesCount`` they declare.
    """
    regions: dict[str, ParsedRegion] = {}
    for result in annotation_result or []:
        if not isinstance(result, Mapping):
            continue
        kind = str(result.get("type", "")).lower()
        name = result.get("from_name")
        rid = result.get("id")
        value = result.get("value")
        if rid is None or not isinstance(value, Mapping):
            continue
        if kind == "videorectangle" and name == info.box_name:
            region = regions.setdefault(str(rid), ParsedRegion())
            region.boxes = videorectangle_to_boxes(value, frames_count=frames_count)
            region.has_track = True
            labels = value.get("labels") or []
            if isinstance(labels, list) and labels and region.label is None:
                region.label = str(labels[0])
        elif kind == "brushlabels" and info.has_masks and name == info.mask_name:
            region = regions.setdefault(track_region_id(str(rid)), ParsedRegion())
            if value.get("format", "rle") != "rle":
                raise MaskFormatError(f"region {rid}: brush format {value.get('format')!r} is not 'rle'")
            height, width = result.get("original_height"), result.get("original_width")
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in (height, width)):
                raise MaskFormatError(f"region {rid}: a brush result needs int original_width/original_height")
            if frame_size is not None and (height, width) != tuple(frame_size):
                raise MaskFormatError(f"region {shorten(rid, 80)}: the brush mask declares {_dims(width, height)}"
                                      f" but the task's video is {frame_size[1]}x{frame_size[0]}")
            touches = value.get("touches")
            if isinstance(touches, list) and touches:  # strokes not drawn into rle yet (a draft's)
                base = decode_brush(value["rle"], height, width) if value.get("rle") else None
                mask = decode_touches(touches, height, width, base)
            else:
                mask = decode_brush(value.get("rle") or [], height, width)
            index = result.get("item_index", 0)
            index = int(index) if isinstance(index, int) and not isinstance(index, bool) else 0
            frame = page_frame(str(rid))
            if frame is not None:  # an extra page: the frame is in the id, the page may move
                region.pages[frame] = mask
                region.page_items[frame] = index
                continue
            region.mask = mask
            region.keyframe_item_index = index
            if keyframe_frames is not None and 0 <= region.keyframe_item_index < len(keyframe_frames):
                region.keyframe = int(keyframe_frames[region.keyframe_item_index]) - 1
            labels = value.get("brushlabels") or []
            if isinstance(labels, list) and labels and region.label is None:
                region.label = str(labels[0])
    return regions


def _dims(width: int, height: int) -> str:
    return f"{shorten(width, 20)}x{shorten(height, 20)}"


def _check_score(score: Any) -> None:
    if isinstance(score, bool) or not isinstance(score, numbers.Real) or not (0.0 <= float(score) <= 1.0) or math.isnan(score):
        raise ValueError(f"score must be a number in [0, 1] (Label Studio rejects others), got {score!r}")


__all__ = [
    "LabelConfigError",
    "ParsedRegion",
    "object_results",
    "parse_annotation",
    "prediction",
    "brush_result",
    "mask_region_id",
    "page_frame",
    "page_region_id",
    "region_id",
    "track_region_id",
]
