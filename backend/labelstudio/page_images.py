"""Mask page images: each page's frame with its caption, written beside the video (or as ``data:``
URLs) like the keyframe images; the task data that lists the pages (see :mod:`.pages`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from vrshq.backend.labelstudio import demand_page
from vrshq.backend.labelstudio.keyframes import image_url, keyframe_url, remove_stale_images
from vrshq.backend.labelstudio.labelconfig import KEYFRAME_FRAMES_KEY, KEYFRAME_OBJECTS_KEY, LabelConfigInfo
from vrshq.backend.labelstudio.pages import extra_pages, page_caption, page_image, pages_data
from vrshq.backend.labelstudio.results import object_label
from vrshq.backend.labelstudio.served_media import MediaStore
from vrshq.backend.tasks.state import TaskState
from vrshq.plugins.base import ObjectTrack
from vrshq.video.reader import VideoReader


def write_page_images(state: TaskState, video: VideoReader, info: LabelConfigInfo,
                      roots: tuple[str, ...], quality: int, reuse: bool = False,
                      media: MediaStore | None = None, demand: bool = False) -> dict[str, Any]:
    """Write every page's image (keyframe pages, then extra pages: :mod:`.pages`), remove
    the images of pages no longer shown; the task data keys of the page list, ending with the
    on-demand page when ``demand`` (:mod:`.demand_page`; none for ``data:`` URL images). With
    ``reuse`` (same objects and keyframes, pages only appended since: a re-propagation, a
    requested frame) the images already written keep their URLs and only new pages are
    decoded and written."""
    if not info.has_masks or info.keyframes_key is None:
        return {}
    by_id = {o.obj_id: o for o in state.objects}
    extras = extra_pages(state)
    old_keys = state.keyframe_urls if reuse and len(state.keyframe_urls) == len(state.objects) else []
    old_pages = state.page_urls[:len(extras)] if reuse else []
    wanted = [(o, o.keyframe) for o in state.objects][len(old_keys):] + \
        [(by_id[p.obj_id], p.frame) for p in extras][len(old_pages):]
    # One ascending pass over the video for every image (a random seek decodes from the
    # previous key frame: several hundred ms per page on a long GOP).
    frames = dict(zip(sorted({f for _, f in wanted}), video.frames(sorted({f for _, f in wanted}))))

    def image(obj: ObjectTrack, frame: int) -> np.ndarray:
        return page_image(frames[frame], page_caption(object_label(obj, info), obj.obj_id, frame))

    state.keyframe_urls = list(old_keys) + [
        keyframe_url(state.video, state.project, state.task, o.obj_id, o.keyframe,
                     image(o, o.keyframe), roots, quality, media) for o in state.objects[len(old_keys):]]
    names = [f"page-obj{p.obj_id}-f{p.frame + 1}.jpg" for p in extras]
    state.page_urls = list(old_pages) + [
        image_url(state.video, state.project, state.task, name, image(by_id[p.obj_id], p.frame),
                  roots, quality, media=media, kind=name[:-len(".jpg")])
        for p, name in list(zip(extras, names))[len(old_pages):]]
    if not reuse:
        keep = set(names) | {f"obj{o.obj_id}-f{o.keyframe + 1}.jpg" for o in state.objects}
        remove_stale_images(state.video, state.project, state.task, keep, ("obj", "page-obj"), roots)
    listed = pages_data(state)
    urls = state.keyframe_urls + state.page_urls
    slot = demand_page.current(state, (video.height, video.width), roots, quality, media,
                               fresh=not reuse) if demand else None
    if slot is not None:  # no frame, no object (yet): 0 in both lists
        urls, listed = urls + [slot], {k: v + [0] for k, v in listed.items()}
    return {info.keyframes_key: urls, KEYFRAME_FRAMES_KEY: listed["frames"], KEYFRAME_OBJECTS_KEY: listed["objects"]}


__all__ = ["write_page_images"]
