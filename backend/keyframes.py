"""Keyframe images: the frame each object's mask is drawn on, as an image Label Studio can show.

The label config shows each object's keyframe mask on a page of ``<Image valueList="$keyframes">``;
the backend writes the images and the list. Two ways, chosen per task:

* the video is a Label Studio local file (``/data/local-files/?d=clips/a.mp4``) under a root the
  backend can write: the JPEG goes next to it (``clips/vrshq-keyframes/<project>-<task>/...``)
  and is served by the same local-files storage (Label Studio serves a file only below a
  storage path of the project, which the video's folder is);
* otherwise a ``data:image/jpeg;base64`` URL, which Label Studio's content security policy
  allows for images and which needs no shared disk.

File names carry the frame number, so a new keyframe gets a new URL (no stale browser cache).
"""

from __future__ import annotations

import base64
import io
import os
import posixpath
from pathlib import Path
from urllib.parse import quote

import numpy as np
from PIL import Image

from backend.media import local_files_path

KEYFRAME_DIR = "vrshq-keyframes"


def jpeg_bytes(frame: np.ndarray, quality: int) -> bytes:
    """An RGB HxWx3 uint8 frame as JPEG bytes."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame)).save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def data_url(frame: np.ndarray, quality: int) -> str:
    """The frame as a ``data:image/jpeg;base64,...`` URL."""
    return "data:image/jpeg;base64," + base64.b64encode(jpeg_bytes(frame, quality)).decode("ascii")


def _writable_root(rel: str, roots: tuple[str, ...]) -> Path | None:
    for root in roots:
        base = Path(root).resolve()
        target = (base / rel).resolve()
        if target.is_relative_to(base) and target.is_file() and os.access(target.parent, os.W_OK):
            return base
    return None


def keyframe_url(video_url: str, project: str | int, task: str | int, obj_id: int, frame: int,
                 image: np.ndarray, roots: tuple[str, ...], quality: int = 90) -> str:
    """Write one object's keyframe image and return the URL to put in the task's keyframe list."""
    rel = local_files_path(video_url)
    base = _writable_root(rel, roots) if rel else None
    if base is None or rel is None:
        return data_url(image, quality)
    rel_dir = posixpath.join(posixpath.dirname(rel), KEYFRAME_DIR, f"{project}-{task}")
    name = f"obj{int(obj_id)}-f{int(frame) + 1}.jpg"
    out_dir = base / rel_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{name}.tmp"
    tmp.write_bytes(jpeg_bytes(image, quality))
    os.replace(tmp, out_dir / name)
    return "/data/local-files/?d=" + quote(posixpath.join(rel_dir, name), safe="/")


__all__ = ["KEYFRAME_DIR", "data_url", "jpeg_bytes", "keyframe_url"]
