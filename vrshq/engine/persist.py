"""A task's image features kept on disk after its prediction, so a correction skips the encoder.

A caller opens a :class:`FeatureSlot` around a prediction (``write``) or a correction (``read``)
with :func:`use_slot`; every :class:`~vrshq.engine.session.TrackingSession` made inside takes it:
a reading session gets the stored features of frames it needs instead of encoding them, and a
writing session hands its feature cache to the slot at close, which :meth:`FeatureSlot.commit`
writes once the prediction has succeeded. The stored key holds the caller's identity (video,
model version) and the session's (resize, image size, dtype, device, weights fingerprint,
frames); features are used only when every field is equal, so a stale folder is never read.
A reading slot that found nothing usable may also take features a correction computed
(:meth:`FeatureSlot.fill`; the sam3 plugin's tracker does) and write them after the correction.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import itertools
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

import torch

from vrshq.engine.store import _memory_order

Tensors = tuple[torch.Tensor, ...]
_CURRENT: contextvars.ContextVar["FeatureSlot | None"] = contextvars.ContextVar(
    "vrshq_feature_slot", default=None)


def file_fingerprint(path: str | os.PathLike, edge: int = 4 * 1024 * 1024) -> str:
    """Size plus SHA-256 of the first and last ``edge`` bytes: a replaced video file differs."""
    p = Path(path)
    size = p.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(p, "rb") as f:
        h.update(f.read(edge))
        if size > edge:
            f.seek(max(edge, size - edge))
            h.update(f.read(edge))
    return h.hexdigest()


def params_fingerprint(modules: Iterable[torch.nn.Module]) -> str:
    """SHA-256 over each module's first and last parameters (other weights differ there)."""
    h = hashlib.sha256()
    for module in modules:
        params = list(module.parameters())
        for p in (params[0], params[-1]) if params else ():
            h.update(str(tuple(p.shape)).encode())
            h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def model_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 over the image encoder's first and last parameters (other weights differ there)."""
    return params_fingerprint([model.image_encoder])


def _tensor_meta(t: torch.Tensor, offset: int) -> tuple[bytes, dict[str, Any]]:
    order = _memory_order(t)  # stored in memory order: the encoder's maps are channels-last
    blob = t.detach().cpu().permute(order).contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    return blob, {"offset": offset, "shape": list(t.shape), "dtype": str(t.dtype).split(".")[-1],
                  "order": list(order)}


def _read_tensor(fd: int, meta: dict[str, Any]) -> torch.Tensor:
    dtype = getattr(torch, meta["dtype"])
    shape, order = meta["shape"], meta["order"]
    count = 1
    for d in shape:
        count *= d
    size = count * torch.empty((), dtype=dtype).element_size()
    raw = bytearray(os.pread(fd, size, meta["offset"]))
    if len(raw) != size:
        raise OSError("feature file is truncated")
    flat = torch.frombuffer(raw, dtype=torch.uint8) if size else torch.empty(0, dtype=torch.uint8)
    stored = flat.view(dtype).reshape([shape[d] for d in order])
    return stored.permute(sorted(range(len(order)), key=order.__getitem__))


class StoredFeatures:
    """Read side of one stored folder: per-frame FPN tensors and the positional encodings."""

    def __init__(self, directory: Path, index: dict[str, Any]) -> None:
        self._fd = os.open(directory / "features.bin", os.O_RDONLY)
        self._frames: dict[int, list[dict[str, Any]]] = {int(k): v for k, v in index["frames"].items()}
        self.pos_enc = [_read_tensor(self._fd, m) for m in index["pos_enc"]]
        self.frame_bytes = int(index["frame_bytes"])
        self.reads = 0

    def get(self, frame_idx: int) -> Tensors | None:
        """The stored features of ``frame_idx`` (CPU), or None."""
        metas = self._frames.get(int(frame_idx))
        if metas is None:
            return None
        self.reads += 1
        return tuple(_read_tensor(self._fd, m) for m in metas)

    def close(self) -> None:
        """Close the file."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def write_features(directory: Path, key: dict[str, Any], frames: Iterable[tuple[int, Tensors]],
                   pos_enc: list[torch.Tensor]) -> None:
    """Write a stored folder atomically: a temporary sibling renamed into place, key last.

    ``frames`` is consumed one frame at a time, so spilled features are never all in memory.
    """
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=directory.name + ".tmp-", dir=directory.parent))
    try:
        offset, index = 0, {"frames": {}, "pos_enc": [], "frame_bytes": 0}
        with open(tmp / "features.bin", "wb") as f:
            for t in pos_enc:
                blob, meta = _tensor_meta(t, offset)
                f.write(blob)
                offset += len(blob)
                index["pos_enc"].append(meta)
            for frame_idx, tensors in frames:
                metas = []
                for t in tensors:
                    blob, meta = _tensor_meta(t, offset)
                    f.write(blob)
                    offset += len(blob)
                    metas.append(meta)
                index["frames"][str(frame_idx)] = metas
                index["frame_bytes"] = sum(t.numel() * t.element_size() for t in tensors)
            f.flush()
            os.fsync(f.fileno())
        (tmp / "index.json").write_text(json.dumps(index))
        (tmp / "key.json").write_text(json.dumps(key, sort_keys=True))
        if directory.exists():
            shutil.rmtree(directory)
        os.rename(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def folder_bytes(path: Path) -> int:
    """Bytes of the files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def evict_oldest(root: Path, budget_bytes: int, keep: Path | None = None) -> list[Path]:
    """Remove the least recently written task folders under ``root`` until within the budget."""
    if not root.is_dir():
        return []
    folders = sorted((p for p in root.iterdir() if p.is_dir() and ".tmp-" not in p.name),
                     key=lambda p: p.stat().st_mtime_ns)
    sizes = {p: folder_bytes(p) for p in folders}
    total, removed = sum(sizes.values()), []
    for p in folders:
        if total <= budget_bytes:
            break
        if keep is not None and p == keep:
            continue
        shutil.rmtree(p, ignore_errors=True)
        total -= sizes[p]
        removed.append(p)
    return removed


@dataclass
class FeatureSlot:
    """One task's stored features: read by a correction, written by a prediction."""

    root: Path  # <data_dir>/features
    name: str  # "<project>-<task>"
    identity: dict[str, Any]  # the caller's part of the key (video, model version)
    mode: Literal["read", "write"]
    budget_bytes: int
    adopted: list[tuple[Any, dict[str, Any]]] = field(default_factory=list)
    opened: list[StoredFeatures] = field(default_factory=list)

    @property
    def directory(self) -> Path:
        """The task's folder."""
        return self.root / self.name

    def full_key(self, session_key: dict[str, Any]) -> dict[str, Any]:
        """The caller's identity and the session's, as stored in key.json."""
        return {"identity": self.identity, "session": session_key}

    def open(self, session_key: dict[str, Any]) -> StoredFeatures | None:
        """The stored features if the folder's key equals this one (read mode only), else None."""
        if self.mode != "read":
            return None
        try:
            stored_key = json.loads((self.directory / "key.json").read_text())
            if stored_key != json.loads(json.dumps(self.full_key(session_key), sort_keys=True)):
                return None
            index = json.loads((self.directory / "index.json").read_text())
            features = StoredFeatures(self.directory, index)
        except (OSError, ValueError, KeyError):
            return None  # absent, half-removed or unreadable: encode as without a cache
        self.opened.append(features)
        return features

    def adopt(self, cache: Any, session_key: dict[str, Any]) -> bool:
        """Take a closing session's feature cache (write mode) to commit later; False otherwise."""
        if self.mode != "write":
            return False
        self.adopted.append((cache, session_key))
        return True

    def fill(self, cache: Any, session_key: dict[str, Any]) -> bool:
        """A reading slot whose folder holds nothing usable for ``session_key`` takes the features a
        correction computed, for :meth:`keep_filled` (the task's later corrections read them)."""
        if self.mode != "read" or self.adopted or self.budget_bytes <= 0:
            return False
        if self.open(session_key) is not None:
            return False  # usable features are stored: nothing to fill
        self.adopted.append((cache, session_key))
        return True

    def keep_filled(self) -> bool:
        """Write what :meth:`fill` took (replacing an absent or stale folder); True if written."""
        if self.mode != "read" or not self.adopted:
            return False
        return self.commit()

    def commit(self) -> bool:
        """Write the last adopted cache's features (within the budget), evict old tasks; True if written."""
        try:
            shutil.rmtree(self.directory, ignore_errors=True)  # a new prediction replaces the old
            if not self.adopted or self.budget_bytes <= 0:
                return False
            cache, session_key = self.adopted[-1]
            count, frame_bytes, pos_enc = cache.snapshot_size()
            if not count or pos_enc is None:
                return False
            # A task larger than the whole cache keeps the frames that fit (first ones first);
            # its corrections encode the others.
            fit = min(count, self.budget_bytes // max(1, frame_bytes))
            if fit <= 0:
                return False
            write_features(self.directory, self.full_key(session_key),
                           itertools.islice(cache.iter_cached(), fit), pos_enc)
            evict_oldest(self.root, self.budget_bytes, keep=self.directory)
            return True
        finally:
            self.close()

    def close(self) -> None:
        """Release adopted caches and open files."""
        for cache, _ in self.adopted:
            cache.close()
        self.adopted.clear()
        for f in self.opened:
            f.close()
        self.opened.clear()


def current_slot() -> FeatureSlot | None:
    """The slot a session made now should use (None: no stored features)."""
    return _CURRENT.get()


@contextlib.contextmanager
def use_slot(slot: FeatureSlot | None) -> Iterator[FeatureSlot | None]:
    """Sessions made inside use ``slot``; it is closed on the way out (commit before, to keep)."""
    token = _CURRENT.set(slot)
    try:
        yield slot
    finally:
        _CURRENT.reset(token)
        if slot is not None:
            slot.close()
