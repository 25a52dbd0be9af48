"""A task's video reference -> a verified local file.

Label Studio puts one of these in ``task["data"][<video>]`` (brief §1.6):

* ``/data/local-files/?d=REL`` (maybe with the LS origin in front): read from an allowed local root
  when one is configured, otherwise downloaded from Label Studio;
* ``/data/upload/...`` or ``upload/...``: downloaded from Label Studio;
* ``http(s)://...``: downloaded, but only from the Label Studio origin;
* ``s3://``, ``gs://``, ``azure-blob://``: downloaded through ``{LS}/tasks/{id}/presign/``, which
  redirects to the bucket (the one place a redirect may leave the Label Studio origin);
* a plain filesystem path: allowed only inside an allowed local root.

Every local path is checked after ``os.path.realpath``: it must lie inside its root (no ``..``,
no symlink out) and be a regular file. Downloads stream into a temp file in ``cache_dir``, are
size-checked against ``max_bytes`` and ``Content-Length``, and are renamed atomically to
``<sha256(source)[:16]>__<name>``. A cached file is reused only when its ``.ok`` marker (written
after the rename, holding the byte count) matches, so a truncated download is never reused: the
SDK's ``get_local_path`` caches truncated files forever. The API token is sent only to the Label
Studio origin and never appears in a message or a log line.
"""

from __future__ import annotations

import base64
import logging
import os
import re
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from vrshq.backend.labelstudio.media_download import cache_path, download
from vrshq.backend.labelstudio.media_source import (
    CLOUD_SCHEMES,
    PRESIGN_PATH,
    MediaConfig,
    MediaError,
    Progress,
    is_ls_origin,
    local_files_path,
    ls_base,
    same_origin,
)

log = logging.getLogger(__name__)


def resolve_media(
    url: str,
    config: MediaConfig,
    task_id: int | None = None,
    progress: Progress | None = None,
) -> Path:
    """Turn a task's video reference into a local regular file, or raise :class:`MediaError`."""
    if not isinstance(url, str) or not url.strip():
        raise MediaError(str(url), "the task has no media URL")
    if "\x00" in url:
        raise MediaError(url, "the media URL contains a NUL byte")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https") and ("@" in parts.netloc or "\\" in url.split("?", 1)[0]):
        # urlsplit and requests disagree on the host of "http://evil\\@ls/..." (credentials,
        # backslashes): refuse them, or the Label Studio key could go to another host.
        raise MediaError(url, "a media URL may not carry credentials or backslashes in its host")

    rel = local_files_path(url)
    if rel is not None:
        if scheme and config.label_studio_url and not is_ls_origin(url, config):
            raise MediaError(url, "media is fetched only from the Label Studio URL or the allowed local roots")
        if config.local_roots:
            return _find_in_roots(url, rel, config.local_roots)
        fetch = f"{ls_base(config, url)}/data/local-files/?d={quote(rel, safe='/')}"
        return download(url, fetch, config, name=rel, progress=progress)

    if scheme in CLOUD_SCHEMES:
        if task_id is None:
            raise MediaError(url, f"{scheme}:// media needs the task id to be presigned by Label Studio")
        fileuri = base64.urlsafe_b64encode(url.encode()).decode()
        fetch = f"{ls_base(config, url)}/tasks/{int(task_id)}/presign/?fileuri={fileuri}"
        return download(url, fetch, config, name=parts.path, key=url, cross_origin=True, progress=progress)

    if scheme in ("http", "https"):
        if not is_ls_origin(url, config):
            if not config.label_studio_url:
                ls_base(config, url)  # raises: says to set LABEL_STUDIO_URL
            raise MediaError(url, "media is fetched only from the Label Studio URL or the allowed local roots")
        presign = bool(PRESIGN_PATH.match(parts.path))
        return download(url, url, config, name=_name_for(parts), cross_origin=presign, progress=progress)

    if not scheme and not parts.netloc:
        if url.startswith(("/data/upload/", "upload/")):
            path = url if url.startswith("/") else "/data/" + url
            return download(url, ls_base(config, url) + path, config, name=path, progress=progress)
        if PRESIGN_PATH.match(parts.path) and parts.query:
            fetch = ls_base(config, url) + url
            return download(url, fetch, config, name=_name_for(parts), cross_origin=True, progress=progress)
        return _find_plain_path(url, url, config.local_roots)

    if scheme == "file":
        return _find_plain_path(url, unquote(parts.path), config.local_roots)
    raise MediaError(url, f"unsupported media URL scheme {scheme!r}")


def _name_for(parts) -> str:
    """The file name a URL stands for: its ``d=``/``fileuri=`` value when it has one, else its path."""
    query = parse_qs(parts.query)
    if "d" in query:
        return query["d"][0]
    if "fileuri" in query:
        try:
            return urlsplit(base64.urlsafe_b64decode(query["fileuri"][0] + "==").decode()).path
        except (ValueError, UnicodeDecodeError):
            pass
    return parts.path


# --- local files -------------------------------------------------------------------------------


def _inside(root: str, path: str) -> str | None:
    """``realpath(path)`` when it lies inside ``realpath(root)`` and is a regular file, else None."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if os.path.commonpath([real_root, real]) != real_root:
        return None
    return real


def _check_file(url: str, real: str) -> Path:
    if not os.path.exists(real):
        raise MediaError(url, "file not found in the allowed local roots")
    if not os.path.isfile(real):
        raise MediaError(url, "not a regular file")
    return Path(real)


def _find_in_roots(url: str, rel: str, roots: tuple[str, ...]) -> Path:
    """``rel`` (relative, no ``..``) joined to the first root that holds it, checked after realpath."""
    if "\x00" in rel:
        raise MediaError(url, "the path contains a NUL byte")
    if not rel or rel.startswith(("/", "\\")) or os.path.isabs(rel) or re.match(r"^[A-Za-z]:", rel):
        raise MediaError(url, "the local file path must be relative to the local files root")
    if ".." in re.split(r"[\\/]", rel):
        raise MediaError(url, "the local file path must not contain '..'")
    escaped = False
    for root in roots:
        real = _inside(root, os.path.join(root, rel))
        if real is None:
            escaped = escaped or os.path.lexists(os.path.join(root, rel))
            continue
        if os.path.exists(real):
            return _check_file(url, real)
    if escaped:
        raise MediaError(url, "the path leaves the allowed local roots (symlink)")
    raise MediaError(url, "file not found in the allowed local roots")


def _find_plain_path(url: str, path: str, roots: tuple[str, ...]) -> Path:
    if not roots:
        raise MediaError(url, "media is fetched only from the Label Studio URL or the allowed local roots")
    if "\x00" in path:
        raise MediaError(url, "the path contains a NUL byte")
    if not os.path.isabs(path):
        return _find_in_roots(url, path, roots)
    for root in roots:
        real = _inside(root, path)
        if real is not None:
            return _check_file(url, real)
    raise MediaError(url, "media is fetched only from the Label Studio URL or the allowed local roots")


# --- downloads -----------------------------------------------------------------------------------



__all__ = ["MediaConfig", "MediaError", "cache_path", "local_files_path", "resolve_media", "same_origin"]
