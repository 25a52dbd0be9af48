"""Where a task's media may come from: the Label Studio origin, cloud schemes through its presign
route, local roots; the settings (:class:`MediaConfig`) and the one error (:class:`MediaError`)."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from vrshq.backend.answers import shorten
from vrshq.errors import VrshqError

log = logging.getLogger(__name__)

Progress = Callable[[int, "int | None"], None]

CLOUD_SCHEMES = ("s3", "gs", "azure-blob")
PRESIGN_PATH = re.compile(r"^/tasks/\d+/(presign|resolve)/$")


def _default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "vrshq", "media")


@dataclass(frozen=True)
class MediaConfig:
    """Where media may come from, and where downloads go."""

    label_studio_url: str | None = None  # the only remote origin we fetch from
    api_key: str | None = None  # legacy token, access JWT, or personal access (refresh) JWT
    local_roots: tuple[str, ...] = ()  # folders we may read directly
    cache_dir: str = field(default_factory=_default_cache_dir)
    max_bytes: int = 4 * 1024**3
    timeout_s: float = 30.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> MediaConfig:
        """The variables the SDK reads (brief §1.6). A document root of ``/`` is ignored, as SDK 2.1.2 does."""
        env = os.environ if environ is None else environ
        roots = []
        for name in ("LOCAL_FILES_DOCUMENT_ROOT", "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"):
            root = env.get(name)
            if root and os.path.realpath(root) != "/" and root not in roots:
                roots.append(root)
        values = {
            "label_studio_url": env.get("LABEL_STUDIO_URL") or env.get("LABEL_STUDIO_HOST") or None,
            "api_key": env.get("LABEL_STUDIO_API_KEY") or env.get("LABEL_STUDIO_ACCESS_TOKEN") or None,
            "local_roots": tuple(roots),
        }
        values.update(overrides)
        return cls(**values)


class MediaError(VrshqError):
    """A task's media reference that cannot be turned into a local file (HTTP 4xx for callers)."""

    def __init__(self, url: str, reason: str, status: int | None = None) -> None:
        self.url = url
        self.reason = reason
        self.status = status  # the HTTP status Label Studio (or the bucket) answered, if any
        super().__init__(f"{shorten(url)}: {reason}")  # the URL cut short: answers echo it


# --- classifying the reference -----------------------------------------------------------------


def local_files_path(url: str) -> str | None:
    """``/data/local-files/?d=clips/a.mp4`` (with or without an origin) -> ``clips/a.mp4``, else None.

    The value is URL-decoded the way Django's ``request.GET`` decodes it. It is not validated here.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("", "http", "https"):
        return None
    if parts.scheme == "" and parts.netloc:
        return None
    if parts.path.rstrip("/") != "/data/local-files":
        return None
    values = parse_qs(parts.query, keep_blank_values=True).get("d")
    return values[0] if values else None


def same_origin(a: str | None, b: str | None) -> bool:
    """Whether two URLs have the same scheme, host and port (absent or empty: never)."""
    if not a or not b:
        return False
    return origin(a) == origin(b)


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is None:
        port = {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def ls_base(config: MediaConfig, url: str) -> str:
    ls = (config.label_studio_url or "").strip()
    if not ls:
        raise MediaError(url, "this media is served by Label Studio; set LABEL_STUDIO_URL so the backend can fetch it")
    parts = urlsplit(ls)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise MediaError(url, f"LABEL_STUDIO_URL must look like http://host:port, not {ls!r}")
    return ls.rstrip("/")


def is_ls_origin(url: str, config: MediaConfig) -> bool:
    return bool(config.label_studio_url) and origin(url) == origin(config.label_studio_url)
