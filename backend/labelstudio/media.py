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
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urljoin, urlsplit

import requests

from vrshq.backend.answers import shorten
from vrshq.errors import VrshqError

log = logging.getLogger(__name__)

Progress = Callable[[int, "int | None"], None]

CLOUD_SCHEMES = ("s3", "gs", "azure-blob")
_CHUNK = 1 << 20
_MAX_REDIRECTS = 5
_PRESIGN_PATH = re.compile(r"^/tasks/\d+/(presign|resolve)/$")


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
    return _origin(a) == _origin(b)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is None:
        port = {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def _ls_base(config: MediaConfig, url: str) -> str:
    ls = (config.label_studio_url or "").strip()
    if not ls:
        raise MediaError(url, "this media is served by Label Studio; set LABEL_STUDIO_URL so the backend can fetch it")
    parts = urlsplit(ls)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise MediaError(url, f"LABEL_STUDIO_URL must look like http://host:port, not {ls!r}")
    return ls.rstrip("/")


def _is_ls_origin(url: str, config: MediaConfig) -> bool:
    return bool(config.label_studio_url) and _origin(url) == _origin(config.label_studio_url)


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
        if scheme and config.label_studio_url and not _is_ls_origin(url, config):
            raise MediaError(url, "media is fetched only from the Label Studio URL or the allowed local roots")
        if config.local_roots:
            return _find_in_roots(url, rel, config.local_roots)
        fetch = f"{_ls_base(config, url)}/data/local-files/?d={quote(rel, safe='/')}"
        return _download(url, fetch, config, name=rel, progress=progress)

    if scheme in CLOUD_SCHEMES:
        if task_id is None:
            raise MediaError(url, f"{scheme}:// media needs the task id to be presigned by Label Studio")
        fileuri = base64.urlsafe_b64encode(url.encode()).decode()
        fetch = f"{_ls_base(config, url)}/tasks/{int(task_id)}/presign/?fileuri={fileuri}"
        return _download(url, fetch, config, name=parts.path, key=url, cross_origin=True, progress=progress)

    if scheme in ("http", "https"):
        if not _is_ls_origin(url, config):
            if not config.label_studio_url:
                _ls_base(config, url)  # raises: says to set LABEL_STUDIO_URL
            raise MediaError(url, "media is fetched only from the Label Studio URL or the allowed local roots")
        presign = bool(_PRESIGN_PATH.match(parts.path))
        return _download(url, url, config, name=_name_for(parts), cross_origin=presign, progress=progress)

    if not scheme and not parts.netloc:
        if url.startswith(("/data/upload/", "upload/")):
            path = url if url.startswith("/") else "/data/" + url
            return _download(url, _ls_base(config, url) + path, config, name=path, progress=progress)
        if _PRESIGN_PATH.match(parts.path) and parts.query:
            fetch = _ls_base(config, url) + url
            return _download(url, fetch, config, name=_name_for(parts), cross_origin=True, progress=progress)
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

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock_for(path: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(path, threading.Lock())


def _safe_name(name: str) -> str:
    base = re.split(r"[\\/]", unquote(name).rstrip("/\\"))[-1]
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).lstrip(".")[-100:]
    return base or "media"


def cache_path(source: str, name: str, cache_dir: str) -> Path:
    """Where a download of ``source`` is cached: ``<sha256(source)[:16]>__<safe basename of name>``."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    return Path(cache_dir) / f"{digest}__{_safe_name(name)}"


def _cached(path: Path) -> bool:
    try:
        expected = json.loads(Path(str(path) + ".ok").read_text())["bytes"]
        return path.is_file() and path.stat().st_size == expected
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _download(
    url: str,
    fetch: str,
    config: MediaConfig,
    *,
    name: str,
    key: str | None = None,
    cross_origin: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Download ``fetch`` (on behalf of the task's ``url``) into the cache, or reuse a complete copy."""
    target = cache_path(key or fetch, name, config.cache_dir)
    if _cached(target):
        return target
    with _lock_for(str(target)):  # one download per file in this process; others wait and reuse it
        if _cached(target):
            return target
        return _fetch_to(url, fetch, target, config, cross_origin=cross_origin, progress=progress)


def _fetch_to(
    url: str,
    fetch: str,
    target: Path,
    config: MediaConfig,
    *,
    cross_origin: bool,
    progress: Progress | None,
) -> Path:
    """Stream ``fetch`` into a unique temp file next to ``target``, verify it, rename it, mark it."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MediaError(url, f"cannot create the media cache folder {target.parent}: {e.strerror}") from None
    auth = _Auth(config, url)
    with requests.Session() as session:
        session.trust_env = False  # no proxies or .netrc credentials picked up behind our back
        response = _get_following_redirects(session, url, fetch, config, auth, cross_origin)
        with response:
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as out:
                    done = _stream(response, out, url, config, progress)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, target)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
    marker = str(target) + ".ok"
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".ok.part")
    with os.fdopen(fd, "w") as out:
        json.dump({"bytes": done}, out)
    os.replace(tmp, marker)
    log.info("downloaded %s (%d bytes) to %s", url, done, target)
    return target


def _stream(response: requests.Response, out, url: str, config: MediaConfig, progress: Progress | None) -> int:
    encoded = response.headers.get("Content-Encoding", "identity").lower() not in ("", "identity")
    total: int | None = None
    length = response.headers.get("Content-Length")
    if length is not None and not encoded:
        try:
            total = int(length)
        except ValueError:
            raise MediaError(url, f"the server sent an invalid Content-Length {length!r}") from None
        if total > config.max_bytes:
            raise MediaError(url, f"the file is {total} bytes, over the limit of {config.max_bytes} bytes")
    done = 0
    try:
        for chunk in response.iter_content(_CHUNK):
            done += len(chunk)
            if done > config.max_bytes:
                raise MediaError(url, f"the file is over the limit of {config.max_bytes} bytes")
            out.write(chunk)
            if progress is not None:
                progress(done, total)
    except requests.RequestException as e:
        raise MediaError(url, f"the download broke off after {done} bytes ({type(e).__name__})") from None
    if total is not None and done != total:
        raise MediaError(url, f"the download is truncated: got {done} of {total} bytes")
    return done


def _get_following_redirects(
    session: requests.Session,
    url: str,
    fetch: str,
    config: MediaConfig,
    auth: _Auth,
    cross_origin: bool,
) -> requests.Response:
    """GET ``fetch``; redirects stay on the LS origin unless ``cross_origin`` (presign -> bucket)."""
    current = fetch
    for _ in range(_MAX_REDIRECTS + 1):
        headers = {"Accept-Encoding": "identity"}
        if _is_ls_origin(current, config):
            headers.update(auth.header())
        try:
            response = session.get(
                current, headers=headers, stream=True, allow_redirects=False, timeout=config.timeout_s
            )
        except requests.RequestException as e:
            raise MediaError(url, f"cannot reach {_origin_text(current)} ({type(e).__name__})") from None
        if response.is_redirect:
            location = urljoin(current, response.headers["Location"])
            response.close()
            if urlsplit(location).scheme not in ("http", "https"):
                raise MediaError(url, "Label Studio redirected to a non-HTTP URL")
            if not _is_ls_origin(location, config) and not cross_origin:
                raise MediaError(url, f"refusing a redirect from Label Studio to {_origin_text(location)}")
            current = location
            continue
        if response.status_code != 200:
            response.close()
            raise MediaError(url, _status_reason(response.status_code, current, config), response.status_code)
        return response
    raise MediaError(url, f"more than {_MAX_REDIRECTS} redirects")


def _origin_text(url: str) -> str:
    scheme, host, port = _origin(url)
    return f"{scheme}://{host}:{port}"


def _status_reason(status: int, fetched: str, config: MediaConfig) -> str:
    where = "Label Studio" if _is_ls_origin(fetched, config) else _origin_text(fetched)
    reason = f"HTTP {status} from {where}"
    if status in (401, 403) and where == "Label Studio":
        reason += " (check LABEL_STUDIO_API_KEY and the user's access to the project)"
    elif status == 404:
        reason += " (the file is not there)"
    return reason


# --- Label Studio auth -------------------------------------------------------------------------


def _jwt_claims(token: str) -> dict | None:
    """The unverified payload of a well-formed JWT, else None."""
    pieces = token.split(".")
    if len(pieces) != 3:
        return None
    try:
        header = json.loads(base64.urlsafe_b64decode(pieces[0] + "=" * (-len(pieces[0]) % 4)))
        claims = json.loads(base64.urlsafe_b64decode(pieces[1] + "=" * (-len(pieces[1]) % 4)))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(header, dict) or "alg" not in header or not isinstance(claims, dict):
        return None
    return claims


class _Auth:
    """The Authorization header for Label Studio, built on first use (one download at most).

    A legacy token gives ``Token <key>``; an access JWT gives ``Bearer <key>``; a personal access
    token (a JWT with ``token_type: refresh``) is exchanged at ``/api/token/refresh/`` first.
    """

    def __init__(self, config: MediaConfig, url: str) -> None:
        self._config = config
        self._url = url
        self._header: dict[str, str] | None = None

    def header(self) -> dict[str, str]:
        if self._header is None:
            self._header = self._build()
        return self._header

    def _build(self) -> dict[str, str]:
        key = (self._config.api_key or "").strip()
        if not key:
            return {}
        if key.startswith(("Token ", "Bearer ")):
            return {"Authorization": key}
        claims = _jwt_claims(key)
        if claims is None:
            return {"Authorization": f"Token {key}"}
        if claims.get("token_type") == "refresh":
            key = self._refresh(key)
        return {"Authorization": f"Bearer {key}"}

    def _refresh(self, refresh_token: str) -> str:
        endpoint = f"{_ls_base(self._config, self._url)}/api/token/refresh/"
        try:
            response = requests.post(
                endpoint, json={"refresh": refresh_token}, timeout=self._config.timeout_s, allow_redirects=False
            )
        except requests.RequestException as e:
            reason = f"cannot reach Label Studio to refresh the API token ({type(e).__name__})"
            raise MediaError(self._url, reason) from None
        with response:
            if response.status_code != 200:
                raise MediaError(
                    self._url,
                    "Label Studio refused the personal access token at /api/token/refresh/ "
                    f"(HTTP {response.status_code}); check LABEL_STUDIO_API_KEY",
                    response.status_code,
                )
            try:
                access = response.json().get("access")
            except (ValueError, AttributeError):
                access = None
        if not isinstance(access, str) or not access:
            raise MediaError(self._url, "Label Studio's /api/token/refresh/ answer has no access token")
        return access
