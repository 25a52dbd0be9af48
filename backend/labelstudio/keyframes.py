"""Keyframe images: the frame each object's mask is drawn on, as an image Label Studio can show.

The label config shows each object's keyframe mask on a page of ``<Image valueList="$keyframes">``;
the backend writes the images and the list. Two ways, chosen per task:

* the video is a Label Studio local file (``/data/local-files/?d=clips/a.mp4``) under a root the
  backend can write: the JPEG goes next to it (``clips/vrshq-keyframes/<project>-<task>/...``)
  and is served by the same local-files storage (Label Studio serves a file only below a
  storage path of the project, which the video's folder is);
* otherwise, with ``VRSHQ_MEDIA_URL`` set, a file the backend serves itself
  (:mod:`vrshq.backend.labelstudio.served_media`);
* otherwise a ``data:image/jpeg;base64`` URL, which Label Studio's content security policy
  allows for images and which needs no shared disk.

File names carry the frame number, so a new keyframe gets a new URL (no stale browser cache).
"""

from __future__ import annotations

import base64
import io
import logging
import os
import posixpath
import shutil
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

import numpy as np
from PIL import Image

from vrshq.backend.labelstudio.media import local_files_path


class MediaStore(Protocol):
    """Where media go when the video has no writable folder (served_media.MediaStore)."""

    def put(self, project: str | int, task: str | int, kind: str, data: bytes | Path, suffix: str) -> str:
        """Store ``data`` as the task's newest ``kind``; its public URL."""

KEYFRAME_DIR = "vrshq-keyframes"
log = logging.getLogger(__name__)


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


class UnsafePath(OSError):
    """A folder on the way to a keyframe image is a symlink or not a folder: not written."""


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def _open_dirs(base: Path, parts: list[str]) -> int:
    """A descriptor of ``base/parts...``, made as needed, one component at a time, never
    following a symlink (``O_NOFOLLOW``): a link placed anywhere below the root is refused,
    wherever it points. The caller closes it."""
    fd = os.open(base, _DIR_FLAGS)
    try:
        for part in parts:
            if part in ("", ".", "..") or "/" in part or "\\" in part:
                raise UnsafePath(f"unsafe path component {part!r}")
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:  # ELOOP / ENOTDIR: a symlink or a file in the way
                raise UnsafePath(f"{part!r} is a symlink or not a folder") from exc
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def _write_inside(base: Path, rel_dir: str, name: str, data: bytes | Path) -> None:
    """Write ``base/rel_dir/name`` without leaving ``base``: no symlinked folder is followed,
    the temp file is created exclusively and not through a link, and the rename replaces
    whatever entry (a planted link included) has the final name, inside the folder.
    ``data``: the bytes, or a file (outside the root) to copy, for what is too big to hold."""
    fd = _open_dirs(base, [p for p in rel_dir.split("/") if p])
    try:
        tmp = f".{name}.{os.getpid()}.tmp"
        try:
            os.unlink(tmp, dir_fd=fd)
        except FileNotFoundError:
            pass
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644,
                      dir_fd=fd)
        try:
            with os.fdopen(out, "wb") as fh:
                if isinstance(data, Path):
                    with open(data, "rb") as src:
                        shutil.copyfileobj(src, fh, 1 << 20)
                else:
                    fh.write(data)
        except BaseException:
            os.unlink(tmp, dir_fd=fd)
            raise
        os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
    finally:
        os.close(fd)


def _remove_others(base: Path, rel_dir: str, keep: str | set[str], prefix: str | tuple[str, ...],
                   suffix: str) -> list[str]:
    """Remove the files ``prefix*suffix`` in ``base/rel_dir`` other than ``keep`` (an older
    version of the same file; a set: the names to keep), through the same no-symlink walk; the
    names removed."""
    keep = {keep} if isinstance(keep, str) else set(keep)
    fd = _open_dirs(base, [p for p in rel_dir.split("/") if p])
    removed = []
    try:
        for entry in os.listdir(fd):
            if entry not in keep and entry.startswith(prefix) and entry.endswith(suffix):
                try:
                    os.unlink(entry, dir_fd=fd)  # unlink never follows a link: removes the link
                    removed.append(entry)
                except (FileNotFoundError, IsADirectoryError, PermissionError):
                    pass  # gone already (another worker), or not ours to remove
    finally:
        os.close(fd)
    return removed


def keyframe_url(video_url: str, project: str | int, task: str | int, obj_id: int, frame: int,
                 image: np.ndarray, roots: tuple[str, ...], quality: int = 90,
                 media: MediaStore | None = None) -> str:
    """Write one object's keyframe image and return the URL to put in the task's keyframe list.

    The image is written beside the video only through real folders inside the root (the same
    containment as reads, and no symlink below the root followed); where that is not possible
    it is served by the backend (``media``) or becomes a ``data:`` URL.
    """
    return image_url(video_url, project, task, f"obj{int(obj_id)}-f{int(frame) + 1}.jpg", image,
                     roots, quality, media=media, kind=f"keyframe-obj{int(obj_id)}")


def image_url(video_url: str, project: str | int, task: str | int, name: str, image: np.ndarray,
              roots: tuple[str, ...], quality: int = 90, replaces: str | None = None,
              media: MediaStore | None = None, kind: str | None = None) -> str:
    """Write a task's image ``name`` beside the video (as :func:`keyframe_url`); its URL, or a
    served one (``media``, as the task's newest ``kind``), or a ``data:`` URL. ``replaces``: a
    name prefix whose other images in the folder are removed."""
    rel = local_files_path(video_url)
    base = _writable_root(rel, roots) if rel else None
    if base is None or rel is None:
        if media is not None and kind is not None:
            return media.put(project, task, kind, jpeg_bytes(image, quality), ".jpg")
        return data_url(image, quality)
    rel_dir = posixpath.join(posixpath.dirname(rel), KEYFRAME_DIR, f"{project}-{task}")
    try:
        _write_inside(base, rel_dir, name, jpeg_bytes(image, quality))
        if replaces:
            _remove_others(base, rel_dir, name, replaces, ".jpg")
    except UnsafePath as exc:
        log.warning("task %s: image %s not written under the media root (%s); sent as a "
                    "data: URL instead", task, name, exc)
        return data_url(image, quality)
    return "/data/local-files/?d=" + quote(posixpath.join(rel_dir, name), safe="/")


def remove_stale_images(video_url: str, project: str | int, task: str | int, keep: set[str],
                        prefixes: tuple[str, ...], roots: tuple[str, ...]) -> list[str]:
    """Remove a task's images (beside the video) named ``<prefix>*.jpg`` that are not in
    ``keep`` (pages no longer shown); the names removed ([] for ``data:`` URL tasks)."""
    rel = local_files_path(video_url)
    base = _writable_root(rel, roots) if rel else None
    if base is None or rel is None:
        return []
    rel_dir = posixpath.join(posixpath.dirname(rel), KEYFRAME_DIR, f"{project}-{task}")
    try:
        return _remove_others(base, rel_dir, keep, prefixes, ".jpg")
    except (UnsafePath, FileNotFoundError) as exc:
        log.warning("task %s: old page images not removed (%s)", task, exc)
        return []


__all__ = ["KEYFRAME_DIR", "data_url", "image_url", "jpeg_bytes", "keyframe_url", "remove_stale_images"]
