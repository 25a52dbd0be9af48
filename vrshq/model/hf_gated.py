"""Fetch a gated Hugging Face model repo (facebook/sam3) with the user's token, sent only to the Hub.

The Hub answers ``/{repo}/resolve/{revision}/{file}`` for large files with a redirect to a storage
host (a signed URL that needs no token). urllib would carry the ``Authorization`` header there
too; :class:`_SameOriginAuth` drops it on any redirect that leaves the Hub's origin (scheme, host
and port), as ``requests`` does (its ``should_strip_auth``), and keeps it on the Hub's own
redirects, which gated files need.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote, urlsplit

from tqdm import tqdm

from vrshq.errors import ModelError

HUB = "https://huggingface.co"
# What transformers reads from the release: configs, tokenizer files and safetensors weights;
# not Meta's own sam3.pt (the same weights again, 3.4 GB) nor the model card's pictures.
KEEP_SUFFIXES = (".json", ".safetensors", ".txt")


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


class _SameOriginAuth(urllib.request.HTTPRedirectHandler):
    """Follow redirects, carrying the token only while they stay on the origin it was meant for."""

    def __init__(self, origin: tuple[str, str, int | None]) -> None:
        self.origin = origin

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 - urllib's signature
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _origin(new.full_url) != self.origin:
            for held in (new.headers, new.unredirected_hdrs):
                held.pop("Authorization", None)
        return new


def resolve_token(given: str | None) -> str | None:
    """The token: ``--hf-token``, else $HF_TOKEN, else huggingface_hub's token file (``hf auth login``)."""
    if given:
        return given.strip()
    from huggingface_hub import get_token

    return get_token()


def missing_token(repo: str, endpoint: str) -> ModelError:
    """The error for a gated repo without a token: what the user must do, in one line."""
    return ModelError(f"{repo} is gated and no Hugging Face token was found: accept its licence on "
                      f"{endpoint}/{repo}, then set HF_TOKEN (or pass --hf-token, or run "
                      "`hf auth login`)")


class GatedRepo:
    """One gated repo on one endpoint, opened with a token that only that endpoint sees."""

    def __init__(self, repo: str, token: str, endpoint: str | None = None, revision: str = "main") -> None:
        self.repo, self.revision = repo, revision
        self.endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or HUB).rstrip("/")
        self._token = token
        self._opener = urllib.request.build_opener(_SameOriginAuth(_origin(self.endpoint)))

    def _open(self, url: str):  # noqa: ANN202 - a urllib response
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self._token}",
                                                       "User-Agent": "vrshq-download"})
        try:
            return self._opener.open(request, timeout=30)
        except urllib.error.HTTPError as exc:
            raise self._refused(exc.code, url) from None

    def _refused(self, code: int, url: str) -> ModelError:
        page = f"{self.endpoint}/{self.repo}"
        if code == 401:
            return ModelError(f"the Hugging Face Hub refused the token (401) for {self.repo}: set HF_TOKEN "
                              f"(or --hf-token) to a valid read token, after accepting the licence on {page}")
        if code == 403:
            return ModelError(f"access to {self.repo} is not granted to this token's account (403): "
                              f"accept the licence on {page} (logged in as that account), wait for "
                              "the approval, then retry")
        return ModelError(f"cannot download {self.repo} from {self.endpoint}: HTTP {code} for {url}")

    def files(self) -> tuple[str, list[str]]:
        """The revision's commit and the files of it transformers needs."""
        url = f"{self.endpoint}/api/models/{self.repo}/revision/{quote(self.revision, safe='')}"
        with self._open(url) as response:
            info = json.loads(response.read())
        names = [s["rfilename"] for s in info.get("siblings", [])]
        keep = sorted(n for n in names if "/" not in n and n.endswith(KEEP_SUFFIXES))
        return str(info.get("sha") or self.revision), keep

    def fetch(self, name: str, commit: str, target: Path, progress: bool) -> Path:
        """One file into ``target`` (written whole or not at all)."""
        dest = target / name
        partial = dest.with_suffix(dest.suffix + ".part")
        url = f"{self.endpoint}/{self.repo}/resolve/{commit}/{quote(name)}"
        try:
            with self._open(url) as response, open(partial, "wb") as f, \
                    tqdm(total=int(response.headers.get("Content-Length") or 0) or None, unit="B",
                         unit_scale=True, desc=name, file=sys.stderr, disable=not progress) as bar:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
                    bar.update(len(chunk))
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        os.replace(partial, dest)
        return dest


def download_gated(repo: str, target: Path, token: str | None, endpoint: str | None,
                   progress: bool) -> Path:
    """Every file of ``repo`` transformers needs into ``target``; ModelError naming what to do."""
    hub = GatedRepo(repo, token or "", endpoint)
    if not token:  # no request without one: the Hub would only answer 401
        raise missing_token(repo, hub.endpoint)
    target.mkdir(parents=True, exist_ok=True)
    try:
        commit, names = hub.files()
        if not names:
            raise ModelError(f"{repo} at {hub.endpoint}: no config or weights files in its listing")
        for name in names:
            hub.fetch(name, commit, target, progress)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ModelError(f"cannot download {repo} from {hub.endpoint} ({reason}); this needs a machine "
                         "with network access: download there and copy the folder here") from None
    return target


__all__ = ["HUB", "GatedRepo", "download_gated", "missing_token", "resolve_token"]
