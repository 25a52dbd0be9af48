"""Where the overlay video goes: beside a local-file video, served by Label Studio like the video.

The overlay (:mod:`vrshq.backend.labelstudio.overlay`) is written next to the task's video, in
``<video folder>/vrshq-overlays/<project>-<task>/overlay-<sha256[:16]>.mp4``, with the same
containment as the keyframe images (:mod:`vrshq.backend.labelstudio.keyframes`: only below a
media root the backend can write, through real folders, no symlink followed), and served by
Label Studio's local-files storage like the video itself. The name is the file's content hash,
so every new prediction or re-propagation that changes a mask gets a new URL (no stale browser
cache); the task's older overlays are removed once the new one is in place.

A video that is not a local file under a writable root (an http(s) URL, cloud storage, an
upload) gets its overlay served by the backend when ``VRSHQ_MEDIA_URL`` says where browsers
reach it (:mod:`vrshq.backend.labelstudio.served_media`). Without it there is no overlay (a
video is too big for a ``data:`` URL): the backend logs a warning and leaves the task's overlay
key alone (documented in the README).
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import tempfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from vrshq.backend.labelstudio.keyframes import UnsafePath, _remove_others, _writable_root, _write_inside
from vrshq.backend.labelstudio.media import local_files_path
from vrshq.backend.labelstudio.served_media import MediaStore

OVERLAY_DIR = "vrshq-overlays"
PREFIX, SUFFIX = "overlay-", ".mp4"
log = logging.getLogger(__name__)


def overlay_target(video_url: str, roots: tuple[str, ...]) -> tuple[Path, str] | None:
    """The media root and the video's path below it when an overlay can go beside the video."""
    rel = local_files_path(video_url)
    base = _writable_root(rel, roots) if rel else None
    return None if base is None or rel is None else (base, rel)


def write_overlay_file(video_url: str, project: str | int, task: str | int,
                       encode: Callable[[Path], object], roots: tuple[str, ...],
                       media: MediaStore | None = None) -> str | None:
    """Encode the overlay (``encode(path)``) and place it beside the video; its local-files URL.

    A video that is not a local file under a writable root: the overlay is served by the
    backend (``media``, its URL returned) or, without ``media``, None with a warning logged.
    """
    target = overlay_target(video_url, roots)
    if target is None and media is not None:
        with tempfile.TemporaryDirectory(prefix="vrshq-overlay-") as tmp:
            path = Path(tmp) / "overlay.mp4"
            encode(path)
            return media.put(project, task, "overlay", path, SUFFIX)
    if target is None:
        log.warning("task %s: no overlay video: %s is not a local file under a writable media "
                    "root (VRSHQ_MEDIA_ROOTS), and VRSHQ_MEDIA_URL is not set to serve it", task,
                    video_url)
        return None
    base, rel = target
    rel_dir = posixpath.join(posixpath.dirname(rel), OVERLAY_DIR, f"{project}-{task}")
    # Encoded outside the media root first: Label Studio never serves a half-written file.
    with tempfile.TemporaryDirectory(prefix="vrshq-overlay-") as tmp:
        path = Path(tmp) / "overlay.mp4"
        encode(path)
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        name = f"{PREFIX}{digest.hexdigest()[:16]}{SUFFIX}"
        try:
            _write_inside(base, rel_dir, name, path)
            _remove_others(base, rel_dir, name, PREFIX, SUFFIX)
        except UnsafePath as exc:
            log.warning("task %s: overlay video not written under the media root (%s)", task, exc)
            return None
    return "/data/local-files/?d=" + quote(posixpath.join(rel_dir, name), safe="/")


__all__ = ["OVERLAY_DIR", "overlay_target", "write_overlay_file"]
