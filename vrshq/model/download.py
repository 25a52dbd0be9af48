"""Fetch the official weights (VRS-HQ, SAM-2 hiera-L 2.0, CLIP ViT-L-14-336; or the gated SAM 3)
on a machine with network."""

from __future__ import annotations

import contextlib
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from vrshq.errors import ModelError

PARTS = ("vrshq", "sam2", "clip")
# The parts of each model `vrshq download --model` fetches: VRS-HQ's three, or SAM 3's one folder.
MODELS: dict[str, tuple[str, ...]] = {"vrshq": PARTS, "sam3": ("sam3",)}


@dataclass(frozen=True)
class DownloadSources:
    """Where each part comes from; every field can be pointed elsewhere (a mirror, a test server)."""

    vrshq_repo: str = "SitongGong/VRS-HQ"
    # For the VRS-HQ snapshot; the HF_ENDPOINT environment variable moves every hub download.
    hf_endpoint: str | None = None
    # VRS-HQ was trained with SAM 2.0 hiera-L, the 072824 release (not 2.1).
    sam2_url: str = "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_large.pt"
    # The OpenAI weights VRS-HQ's anchor uses (openai/clip-vit-large-patch14-336), as open_clip serves them.
    clip_model: str = "ViT-L-14-336-quickgelu"
    clip_pretrained: str = "openai"
    # SAM 3, gated: fetched with the user's Hugging Face token (vrshq.model.hf_gated).
    sam3_repo: str = "facebook/sam3"
    hf_token: str | None = field(default=None, repr=False)  # never printed with the sources


def download(out_dir: str | os.PathLike, parts: tuple[str, ...] = PARTS,
             sources: DownloadSources = DownloadSources(),
             log: Callable[[str], None] = print, progress: bool = True) -> dict[str, Path]:
    """Download ``parts`` into ``out_dir`` (vrshq/, sam2/, clip/); returns where each went.

    ``progress``: draw download bars on stderr (ours and the Hugging Face Hub's).
    """
    known = tuple(_FETCHERS)
    unknown = [p for p in parts if p not in known]
    if unknown:
        raise ModelError(f"unknown part(s) {', '.join(unknown)} (choose from {', '.join(known)})")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ModelError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    done: dict[str, Path] = {}
    for part in parts:
        log(f"downloading {part} ...")
        with _hub_bars(progress):
            done[part] = _FETCHERS[part](out / part, sources, progress)
        log(f"  -> {done[part]}")
    return done


@contextlib.contextmanager
def _hub_bars(show: bool) -> Iterator[None]:
    """The Hugging Face Hub's own bars on or off meanwhile (a global switch of huggingface_hub)."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    if not show:
        disable_progress_bars()
    try:
        yield
    finally:
        if not show and not was_disabled:
            enable_progress_bars()


def _fetch_vrshq(target: Path, sources: DownloadSources, progress: bool) -> Path:
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(repo_id=sources.vrshq_repo, local_dir=str(target),
                                 endpoint=sources.hf_endpoint)
    except Exception as exc:  # huggingface_hub raises many types for a missing network
        raise _offline("VRS-HQ", sources.hf_endpoint or "the Hugging Face Hub", exc) from None
    return Path(path)


def _fetch_sam2(target: Path, sources: DownloadSources, progress: bool) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    dest = target / Path(sources.sam2_url).name
    partial = dest.with_suffix(dest.suffix + ".part")
    try:
        with urllib.request.urlopen(sources.sam2_url, timeout=30) as response, \
                open(partial, "wb") as f, \
                tqdm(total=int(response.headers.get("Content-Length") or 0) or None, unit="B",
                     unit_scale=True, desc=dest.name, file=sys.stderr, disable=not progress) as bar:
            while chunk := response.read(1 << 20):
                f.write(chunk)
                bar.update(len(chunk))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        partial.unlink(missing_ok=True)
        raise _offline("SAM-2 hiera-L", sources.sam2_url, exc) from None
    os.replace(partial, dest)
    return dest


def _fetch_clip(target: Path, sources: DownloadSources, progress: bool) -> Path:
    import shutil

    from open_clip.pretrained import download_pretrained, get_pretrained_cfg

    cfg = get_pretrained_cfg(sources.clip_model, sources.clip_pretrained)
    if not cfg:
        raise ModelError(f"open_clip has no pretrained weights {sources.clip_pretrained!r} "
                         f"for {sources.clip_model!r} (see open_clip.list_pretrained())")
    target.mkdir(parents=True, exist_ok=True)
    cache = target / ".download"
    try:
        path = Path(download_pretrained(cfg, cache_dir=str(cache)))
    except Exception as exc:
        raise _offline(f"CLIP {sources.clip_model}/{sources.clip_pretrained}",
                       "its hub or URL", exc) from None
    # The Hub cache nests the file under models--*/snapshots/<hash>/ as a link into blobs/:
    # keep only the file, flat, under the name the loader looks for (vrshq.model.layout).
    dest = target / path.name
    shutil.copyfile(path.resolve(), dest.with_suffix(dest.suffix + ".part"))
    dest.with_suffix(dest.suffix + ".part").replace(dest)
    shutil.rmtree(cache, ignore_errors=True)
    # The record that tells the backend these are the official weights (vrshq.model.clip_source).
    from vrshq.model.clip_source import write_source

    write_source(dest, sources.clip_model, sources.clip_pretrained)
    return dest


def _fetch_sam3(target: Path, sources: DownloadSources, progress: bool) -> Path:
    from vrshq.model.hf_gated import download_gated, resolve_token

    return download_gated(sources.sam3_repo, target, resolve_token(sources.hf_token),
                          sources.hf_endpoint, progress)


def _offline(what: str, where: str, exc: BaseException) -> ModelError:
    reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return ModelError(f"cannot download {what} from {where} ({reason}); this needs a machine with "
                      "network access: download there and copy the folder here")


# (target, sources, progress) -> path; the Hub's bars follow _hub_bars, ours the progress flag
_FETCHERS: dict[str, Callable[[Path, DownloadSources, bool], Path]] = {
    "vrshq": _fetch_vrshq,
    "sam2": _fetch_sam2,
    "clip": _fetch_clip,
    "sam3": _fetch_sam3,
}
