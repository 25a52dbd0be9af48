"""Mask pages on demand: ``frame N`` typed into the prompt box adds the page of frame N.

An annotator who sees a bad mask on Label Studio frame N (the overlay, the strips) types
``frame N`` into the task's prompt TextArea and submits it, as for a new prompt; Label Studio
sends it to ``/predict`` with a ``context`` (auto-annotation). The backend adds, for every object
(or the one named: ``frame N Car`` by label, ``frame N #2`` by object id), a mask page on frame N
(:func:`vrshq.backend.labelstudio.pages.request_page`), writes its image, puts the longer page list
into the task's data in Label Studio and answers those objects' results, the new pages' brush
masks included: the current mask on frame N, ready to edit (an edit there is a correction on
frame N). Only a number after ``frame`` makes a request (``frame of the door`` stays a prompt).

An open editor does not re-read the page list; the new pages show there on the pager's last
page, the on-demand page (:mod:`vrshq.backend.labelstudio.demand_page`): frame N is written into
its image and the new pages' results are answered on its index.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from vrshq.backend.labelstudio import demand_page
from vrshq.backend.labelstudio.labelconfig import LabelConfigInfo
from vrshq.backend.labelstudio.pages import all_pages, page_caption, page_image, request_page
from vrshq.backend.labelstudio.predictions import page_region_id
from vrshq.backend.labelstudio.results import object_label, object_region_id, state_prediction
from vrshq.backend.tasks.inputs import RequestError

_REQUEST = re.compile(r"^\s*frame\s+([+-]?[0-9]+)(?:\s+(.*?))?\s*$", re.IGNORECASE)


def frame_requests(texts: list[str], tid: int) -> list[tuple[int, str | None]]:
    """The ``frame N [object]`` requests among the typed texts: (LS frame N, object or None);
    [] when there are none. Requests and prompts in one submission are refused."""
    found = [_REQUEST.match(t) for t in texts]
    if not any(found):
        return []
    if not all(found):
        raise RequestError(f"task {tid}: 'frame N' requests and new prompts in one submission; "
                           "send them one at a time")
    return [(int(m.group(1)), m.group(2) or None) for m in found if m is not None]


def _objects(state: Any, info: LabelConfigInfo, which: str | None, tid: int) -> list[Any]:
    """The objects a request names: all, ``#<id>``, or those whose label is ``which``."""
    if which is None:
        return list(state.objects)
    if which.startswith("#") and which[1:].isdigit():
        chosen = [o for o in state.objects if o.obj_id == int(which[1:])]
    else:
        chosen = [o for o in state.objects if object_label(o, info).lower() == which.lower()]
    if not chosen:
        have = ", ".join(f"#{o.obj_id} {object_label(o, info)}" for o in state.objects) or "none"
        raise RequestError(f"task {tid}: no object {which!r} to show (objects: {have})")
    return chosen


def show_frames(backend: Any, tid: int, data: Mapping[str, Any], info: LabelConfigInfo,
                project: str, requests: list[tuple[int, str | None]]) -> dict[str, Any]:
    """Add the requested pages (see the module docstring); the requested objects' prediction."""
    if not info.has_masks or info.keyframes_key is None:
        raise RequestError(f"task {tid}: 'frame N' needs mask pages, and the label config has no "
                           "<BrushLabels> on an <Image valueList>")
    if not backend.writer(project).configured:
        raise RequestError(f"task {tid}: 'frame N' adds a page to the task's image list in Label "
                           "Studio: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY (or connect it "
                           "from Label Studio)")
    with backend.states.lock(project, tid):
        state = backend.states.load(project, tid)
        if state is None:
            raise RequestError(f"task {tid} has no prediction from this backend: predict it first")
        ids: set[int] = set()
        shown = len(all_pages(state))  # the on-demand page's index in the editor's list
        before = {(o.obj_id, f) for o, f in all_pages(state)}
        for frame, which in requests:
            if not 1 <= frame <= state.frames_count:
                raise RequestError(f"task {tid}: frame {frame} is outside the video's frames "
                                   f"1..{state.frames_count}")
            for obj in _objects(state, info, which, tid):
                request_page(state, obj.obj_id, frame - 1)
                ids.add(obj.obj_id)
        new = [(o, f) for o, f in all_pages(state) if (o.obj_id, f) not in before]
        slot = demand_page.take(state) if new else ""
        video = backend.open_video(project, tid, state.video, state.fps)
        try:
            # The task data read afresh, not the request's: the open editor's copy may hold an
            # overlay URL that a fix's overlay job has replaced (and removed) since it loaded.
            backend.write_pages(state, video, info, None, reuse=True)
            if slot:
                _fill(backend, state, video, info, slot, new)
        finally:
            video.close()
        backend.states.save(state)
        answer = state_prediction(state, info, ids)
        if slot:  # the first new frame's pages, on the on-demand page of the asking editor
            on_slot = {page_region_id(object_region_id(state, o), f) for o, f in new if f == new[0][1]}
            for result in answer["result"]:
                if result.get("id") in on_slot:
                    result["item_index"] = shown
        return answer


def _fill(backend: Any, state: Any, video: Any, info: LabelConfigInfo, slot: str, new: list) -> None:
    """Write the first new frame, captioned with its new pages' objects, into the on-demand page."""
    frame = new[0][1]
    caption = ", ".join(page_caption(object_label(o, info), o.obj_id, f).rsplit(" F", 1)[0]
                        for o, f in new if f == frame) + f" F{frame + 1}"
    image = page_image(video.frame(frame), caption)
    demand_page.fill(state, slot, image, tuple(backend.config.local_roots), backend.config.keyframe_quality,
                     backend.media)


__all__ = ["frame_requests", "show_frames"]
