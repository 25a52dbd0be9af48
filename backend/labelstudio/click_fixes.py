"""Clicks are a correction: an annotator's keypoints on a mask page -> one clicks correction per page.

The rule:

* A ``keypointlabels`` result of the config's ``<KeyPointLabels>`` (``clicks_name``) on page
  ``item_index`` of the mask pager is a click on that page's object and frame (the pager's
  order, :func:`vrshq.backend.labelstudio.pages.all_pages`).
* ``value.x`` / ``value.y`` are percent of the page image, which is the video frame at its own
  size, so a click is at ``(x * width / 100, y * height / 100)`` pixels of the video; its label
  is 1 (positive) or 0 (negative) by the label's name (``CLICK_KINDS``: Include / Exclude).
* All clicks of one page, in the annotation's order, are ONE correction of its object on its
  frame (the prompt SAM's ``add_points`` takes); clicks of the same object and frame on two
  pages are merged in page order.
* A click on the on-demand placeholder page (the one after the pager's pages) is left out: that
  page shows no object yet.
* Bad clicks are refused with a reason (:class:`ValueError`, a 400 through ``malformed_input``):
  a page outside the pager, a point outside the image (0..100 %), an unknown or missing label.
* The backend echoes each applied clicks correction back on its page (:func:`click_results`),
  so a click set equal to the one the task's state carries on that frame is the backend's own,
  not an edit (:func:`vrshq.backend.labelstudio.box_fixes.carried`); the annotation diff
  decides that, and that a mask edited on the same page and frame wins over the clicks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from vrshq.backend.labelstudio.labelconfig import CLICK_KINDS, LabelConfigInfo
from vrshq.plugins.base import Correction, ObjectTrack

POINT_WIDTH = 0.6  # percent of the image: the size Label Studio draws an echoed point at


def click_kind(label: str) -> int:
    """1 (positive) or 0 (negative) for a click label; ValueError for any other label."""
    kind = CLICK_KINDS.get(str(label).strip().lower())
    if kind is None:
        raise ValueError(f"a click's label must be Include or Exclude, got {label!r}")
    return kind


def _click(result: Mapping[str, Any], pages: int, info: LabelConfigInfo) -> tuple[int, float, float, int]:
    """(page, x %, y %, kind) of one keypoint result, checked."""
    page = result.get("item_index", 0)
    if isinstance(page, bool) or not isinstance(page, int) or not 0 <= page < pages:
        raise ValueError(f"a click is on page {page!r} of the mask pages, which has 0..{pages - 1}")
    value = result.get("value")
    if not isinstance(value, Mapping):
        raise ValueError("a click has no 'value' object")
    xy = []
    for key in ("x", "y"):
        v = value.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= 100:
            raise ValueError(f"a click's {key} must be a number in 0..100 (percent of the image), got {v!r}")
        xy.append(float(v))
    labels = value.get("keypointlabels")
    if not isinstance(labels, Sequence) or isinstance(labels, str) or len(labels) != 1:
        raise ValueError(f"a click needs exactly one label of {list(info.click_labels)}, got {labels!r}")
    if labels[0] not in info.click_labels:
        raise ValueError(f"a click's label {labels[0]!r} is not one of {list(info.click_labels)}")
    return page, xy[0], xy[1], click_kind(labels[0])


def click_fixes(results: Sequence[Any], info: LabelConfigInfo, pages: Sequence[tuple[int, int]],
                size: tuple[int, int]) -> dict[tuple[int, int], Correction]:
    """(object id, 0-based frame) -> the clicks correction (pixels) of the annotation's clicks.

    ``pages`` is the pager: (object id, frame) per page; ``size`` the video's (height, width).
    """
    if info.clicks_name is None:
        return {}
    height, width = size
    out: dict[tuple[int, int], tuple[list, list]] = {}
    for r in results or []:
        if not (isinstance(r, Mapping) and str(r.get("type", "")).lower() == "keypointlabels"
                and r.get("from_name") == info.clicks_name):
            continue
        # the page after the pager's is the on-demand placeholder (demand_page.py): it shows no
        # object, so a click there corrects nothing and is left out rather than refusing the rest
        page, x, y, kind = _click(r, len(pages) + 1, info)
        if page == len(pages):
            continue
        points, labels = out.setdefault((int(pages[page][0]), int(pages[page][1])), ([], []))
        points.append((x * width / 100, y * height / 100))
        labels.append(kind)
    return {key: Correction(key[0], key[1], points=p, point_labels=lb)
            for key, (p, lb) in sorted(out.items())}


def applied_clicks(obj: ObjectTrack, frame: int) -> Correction | None:
    """The clicks correction the object's page on ``frame`` shows: its newest correction there,
    when that is clicks (a later mask or box on the frame replaced them)."""
    newest = next((c for c in reversed(obj.corrections) if int(c.frame) == int(frame)), None)
    return newest if newest is not None and newest.points is not None else None


def click_results(obj: ObjectTrack, frame: int, page: int, region_id: str,
                  info: LabelConfigInfo) -> list[dict[str, Any]]:
    """The ``keypointlabels`` results echoing the object's applied clicks on ``frame`` (on page
    ``page``), so they stay in sight and a re-submission sends back what the state carries."""
    clicks = applied_clicks(obj, frame)
    if info.clicks_name is None or info.keyframes_name is None or clicks is None:
        return []
    names = {kind: next((lb for lb in info.click_labels if click_kind(lb) == kind), None) for kind in (0, 1)}
    height, width = int(obj.track.height), int(obj.track.width)
    out = []
    for k, ((x, y), kind) in enumerate(zip(clicks.points or [], clicks.point_labels or [])):
        if names[int(kind)] is None:
            continue  # the config has no label of that kind: not shown
        out.append({
            "id": f"{region_id}-click-f{int(frame) + 1}-{k}", "from_name": info.clicks_name,
            "to_name": info.keyframes_name, "type": "keypointlabels", "item_index": int(page),
            "original_width": width, "original_height": height, "image_rotation": 0,
            "value": {"x": 100 * float(x) / width, "y": 100 * float(y) / height, "width": POINT_WIDTH,
                      "keypointlabels": [names[int(kind)]]}})
    return out


__all__ = ["applied_clicks", "click_fixes", "click_kind", "click_results"]
