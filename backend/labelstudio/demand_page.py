"""The on-demand page: the pager's last page, held free for a frame asked for in an open editor.

Label Studio 1.23.2 builds the pages of ``<Image valueList>`` once, from the task data it loaded
(``createImageEntities`` in web/libs/editor/src/tags/object/Image/Image.js, at attach), so a
page that ``frame N`` adds to the task's ``keyframes`` shows only when the task is loaded again.
What an open editor does show is a *new picture behind a page it already has*, as long as it
has not loaded that page's picture yet: it loads a page's image when the page is shown and
preloads the three pages on either side but never the last page (``preloadImages``, same file),
then keeps each image by URL for the session (web/libs/core/src/lib/utils/ImageCache.ts).

So, when the config has a prompt box, every page list ends with one more page: a placeholder
image under a new, unguessable name (``demand-<32 hex>.jpg``). ``frame N`` writes frame N (its
caption naming the objects) into that same file, answers the new pages' brush results on that
page's index, and the list written back gets the new pages in its place and a fresh
placeholder at its end; the filled file stays until the next fill, for the editor that asked.
Limits (the README says them): one frame per loading of the task; a placeholder opened before
asking stays a placeholder in that editor; an editor loaded before the page list last grew
(a re-propagation adds pages) has the placeholder at another index.
"""

from __future__ import annotations

import secrets
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from vrshq.backend.labelstudio.keyframes import (
    _remove_others,
    _writable_root,
    _write_inside,
    image_url,
    jpeg_bytes,
    remove_stale_images,
)
from vrshq.backend.labelstudio.media import local_files_path
from vrshq.backend.tasks.state import TaskState

PREFIX = "demand-"
HELP = ("On-demand page.", "Type  frame N  (frame N #1, frame N Car)",
        "in the prompt box with Auto-Annotation on,", "then open this page: it shows frame N.",
        "Opened before asking, it stays like this", "until the task is loaded again.")


def placeholder(height: int, width: int) -> np.ndarray:
    """The picture of an unfilled on-demand page: grey, with the gesture written on it."""
    img = Image.new("RGB", (int(width), int(height)), (96, 96, 96))
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(HELP):
        draw.text((6, 6 + 14 * i), line, fill=(255, 255, 255))
    return np.asarray(img)


def _write(state: TaskState, name: str, image: np.ndarray, roots: tuple[str, ...], quality: int,
           media: Any) -> str | None:
    """Write ``name`` as the task's page image and drop older on-demand files but the state's
    two; its URL, or None where no file can be rewritten later (a ``data:`` URL task)."""
    keep = {n for n in (name, state.demand_name, state.demand_filled) if n}
    rel = local_files_path(state.video)
    if rel is not None and _writable_root(rel, roots) is not None:
        url = image_url(state.video, state.project, state.task, name, image, roots, quality)
        if url.startswith("data:"):
            return None
        remove_stale_images(state.video, state.project, state.task, keep, (PREFIX,), roots)
        return url
    if media is None:
        return None
    folder = media.folder(state.project, state.task)
    media.root.mkdir(parents=True, exist_ok=True)
    _write_inside(media.root, folder, name, jpeg_bytes(image, quality))
    _remove_others(media.root, folder, keep, PREFIX, ".jpg")
    return f"{media.base_url}/media/{folder}/{name}"


def current(state: TaskState, size: tuple[int, int], roots: tuple[str, ...], quality: int,
            media: Any, fresh: bool = False) -> str | None:
    """The URL of the task's unfilled on-demand page (a new placeholder when it has none, or
    with ``fresh``: a new page list, whose indices moved); None when its images are ``data:``
    URLs (nothing to rewrite: no on-demand page)."""
    if state.demand_name and state.demand_url and not fresh:
        return state.demand_url
    name = f"{PREFIX}{secrets.token_hex(16)}.jpg"
    if fresh:
        state.demand_name = state.demand_url = ""
    url = _write(state, name, placeholder(*size), roots, quality, media)
    if url is None:
        return None
    state.demand_name, state.demand_url = name, url
    return url


def take(state: TaskState) -> str:
    """Hand the unfilled page over to a request (the next write makes a fresh one); its file
    name, or "" when the task has none."""
    name = state.demand_name
    if name:
        state.demand_filled = name
    state.demand_name, state.demand_url = "", ""
    return name


def fill(state: TaskState, name: str, image: np.ndarray, roots: tuple[str, ...], quality: int,
         media: Any) -> None:
    """Write ``image`` into the on-demand page ``name`` (taken with :func:`take`), same URL."""
    _write(state, name, image, roots, quality, media)


def reset(state: TaskState) -> None:
    """Forget the on-demand pages (a new prediction writes a fresh one; older files go then)."""
    state.demand_name, state.demand_url, state.demand_filled = "", "", ""


__all__ = ["HELP", "PREFIX", "current", "fill", "placeholder", "reset", "take"]
