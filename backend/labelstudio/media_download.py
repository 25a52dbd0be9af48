"""Downloading media from Label Studio (or its presigned bucket redirect): streamed into the cache
folder, size-checked, renamed atomically, marked complete; the token only ever sent to Label Studio."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import requests

from vrshq.backend.labelstudio.media_source import (
    MediaConfig,
    MediaError,
    Progress,
    is_ls_origin,
    ls_base,
    origin,
)

log = logging.getLogger(__name__)


_CHUNK = 1 << 20
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()
_MAX_REDIRECTS = 5


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


def download(
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
        if is_ls_origin(current, config):
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
            if not is_ls_origin(location, config) and not cross_origin:
                raise MediaError(url, f"refusing a redirect from Label Studio to {_origin_text(location)}")
            current = location
            continue
        if response.status_code != 200:
            response.close()
            raise MediaError(url, _status_reason(response.status_code, current, config), response.status_code)
        return response
    raise MediaError(url, f"more than {_MAX_REDIRECTS} redirects")


def _origin_text(url: str) -> str:
    scheme, host, port = origin(url)
    return f"{scheme}://{host}:{port}"


def _status_reason(status: int, fetched: str, config: MediaConfig) -> str:
    where = "Label Studio" if is_ls_origin(fetched, config) else _origin_text(fetched)
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
        endpoint = f"{ls_base(self._config, self._url)}/api/token/refresh/"
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
