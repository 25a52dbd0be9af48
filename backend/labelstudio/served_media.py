"""Generated media the backend serves itself, for tasks whose video it cannot write beside.

The keyframe images, thumbnail strips and overlay video go beside a local-file video
(:mod:`vrshq.backend.labelstudio.keyframes`, :mod:`vrshq.backend.labelstudio.overlay_files`).
A video that is not there (an ``http(s)://`` URL, cloud storage, an upload) has no folder the
backend can write and Label Studio serves. With ``VRSHQ_MEDIA_URL`` set (the backend's address as
the annotators' browsers reach it), such media go into ``<MODEL_DIR>/served-media/<project>-<task>/``
and the task data gets ``<VRSHQ_MEDIA_URL>/media/<project>-<task>/<kind>-<sha256[:32]>.<ext>``,
answered by the backend's read-only ``GET /media/...`` route (:mod:`vrshq.backend.http.media`).

* The names are unguessable: 128 bits of the file's SHA-256, so the route needs no credentials
  (a ``<video>``/``<img>`` on Label Studio's page cannot send the backend's basic auth); a new
  prediction that changes a picture gets a new URL (no stale browser cache).
* Writing one ``kind`` (``overlay``, ``keyframe-obj1``, ``strip-obj1``) removes the task's older
  files of that kind, once the new one is in place.
* Files are written through :func:`keyframes._write_inside` (no symlink followed, atomic rename).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from vrshq.backend.labelstudio.keyframes import _remove_others, _write_inside

MEDIA_DIR = "served-media"  # below the backend's data folder (its media/ is the download cache)
ROUTE = "/media"
# What the route serves: one folder level, then a name this module writes. Anything else
# (dots, slashes, other suffixes) is not ours and is answered 404 without touching the disk.
FOLDER_RE = re.compile(r"^[A-Za-z0-9_]{1,64}-[0-9]{1,20}$")
NAME_RE = re.compile(r"^[a-z0-9]{1,40}(?:-[a-z0-9]{1,40}){0,4}-[0-9a-f]{32}\.(?:mp4|jpg)$")
KIND_RE = re.compile(r"^[a-z0-9]{1,40}(?:-[a-z0-9]{1,40}){0,4}$")
CONTENT_TYPES = {".mp4": "video/mp4", ".jpg": "image/jpeg"}


def _digest(data: bytes | Path) -> str:
    h = hashlib.sha256()
    if isinstance(data, Path):
        with open(data, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    else:
        h.update(data)
    return h.hexdigest()


class MediaStore:
    """The backend's own folder of served media and the public URLs of its files."""

    def __init__(self, data_dir: str | Path, base_url: str) -> None:
        self.root = Path(data_dir) / MEDIA_DIR
        self.base_url = base_url.rstrip("/")

    def folder(self, project: str | int, task: str | int) -> str:
        """The task's folder name: ``<project>-<task>`` (a project's dots become underscores)."""
        name = f"{str(project).replace('.', '_')}-{int(task)}"
        if not FOLDER_RE.match(name):
            raise ValueError(f"project {project!r} / task {task!r} make no media folder name")
        return name

    def put(self, project: str | int, task: str | int, kind: str, data: bytes | Path, suffix: str) -> str:
        """Store ``data`` (bytes or a file to copy) as the task's newest ``kind``; its public URL."""
        if not KIND_RE.match(kind) or suffix not in CONTENT_TYPES:
            raise ValueError(f"not a media kind/suffix: {kind!r} {suffix!r}")
        folder = self.folder(project, task)
        name = f"{kind}-{_digest(data)[:32]}{suffix}"
        self.root.mkdir(parents=True, exist_ok=True)
        _write_inside(self.root, folder, name, data)
        _remove_others(self.root, folder, name, f"{kind}-", suffix)
        return f"{self.base_url}{ROUTE}/{folder}/{name}"

    def find(self, folder: str, name: str) -> Path | None:
        """The file the route answers for ``folder/name``; None for any other name, a missing
        file, or a symlink anywhere below the media folder."""
        if not FOLDER_RE.match(folder) or not NAME_RE.match(name):
            return None
        path = self.root / folder / name
        # No link followed: neither the task folder nor the file may be one (a real folder of
        # ours, as _write_inside makes them).
        if not (self.root / folder).is_dir() or (self.root / folder).is_symlink() or path.is_symlink():
            return None
        return path if path.is_file() else None


__all__ = ["CONTENT_TYPES", "MEDIA_DIR", "ROUTE", "MediaStore"]
