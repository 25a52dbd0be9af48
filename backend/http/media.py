"""``GET /media/<folder>/<name>``: the generated media of remote-video tasks, read-only.

What is served and why it needs no credentials: :mod:`vrshq.backend.labelstudio.served_media`.
werkzeug's ``send_file(conditional=True)`` answers ``Range`` requests (206 with
``Content-Range``; 416 past the end) and ``If-None-Match``/``If-Modified-Since``, so the
browser can seek in an overlay video before it has downloaded it.
"""

from __future__ import annotations

from pathlib import Path

from flask import Response, send_file

from vrshq.backend.labelstudio.demand_page import PREFIX as DEMAND_PREFIX
from vrshq.backend.labelstudio.served_media import CONTENT_TYPES, MediaStore

# Content-hashed names never change content: cache for a year. nosniff: the type is ours.
HEADERS = {"Cache-Control": "public, max-age=31536000, immutable", "X-Content-Type-Options": "nosniff",
           # Label Studio's page is another origin; a <video crossorigin> needs this to load it.
           "Access-Control-Allow-Origin": "*"}


def media_response(store: MediaStore | None, folder: str, name: str) -> Response | None:
    """The file's response (ranges answered), or None when there is no such media file."""
    path = store.find(folder, name) if store is not None else None
    if path is None:
        return None
    response = send_file(path, mimetype=CONTENT_TYPES[Path(name).suffix], conditional=True, etag=True,
                         max_age=31536000)
    response.headers.update(HEADERS)
    if name.startswith(DEMAND_PREFIX):  # the on-demand page: its picture changes once, when filled
        response.headers["Cache-Control"] = "no-cache"
    return response


__all__ = ["media_response"]
