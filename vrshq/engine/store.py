"""A key -> tensors store that keeps hot entries within memory budgets and spills the rest to disk.

Tiers are tried in order (e.g. the GPU, then CPU RAM); the least recently used entry of a full
tier moves down to the next one, and out of the last tier into a disk file read back with
``os.pread`` (no memory map, so spilled data does not count against the process's RSS).
"""

from __future__ import annotations

import os
import tempfile
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Hashable, Sequence

import torch

Tensors = tuple[torch.Tensor, ...]


def _nbytes(tensors: Sequence[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@dataclass(frozen=True)
class Tier:
    """One level of the store: a device and how many bytes it may hold."""

    device: torch.device
    budget_bytes: int


@dataclass
class _Record:
    offset: int
    capacity: int
    # shape, dtype, and the dims from outermost to innermost in memory, per tensor
    layout: tuple[tuple[tuple[int, ...], torch.dtype, tuple[int, ...]], ...]


def _memory_order(t: torch.Tensor) -> tuple[int, ...]:
    """The dims of ``t`` from outermost to innermost in memory (in order when contiguous).

    Kept so a tensor comes back with the strides it went out with: sam2's image encoder
    returns channels-last feature maps, and bf16 kernels round differently on other layouts.
    """
    if t.is_contiguous():
        return tuple(range(t.dim()))
    return tuple(sorted(range(t.dim()), key=lambda d: -t.stride(d)))


def _remove_scratch(fd: int, path: str) -> None:
    os.close(fd)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class DiskSpill:
    """Fixed-layout tensor records in one scratch file; rewritten and discarded slots are reused."""

    def __init__(self, directory: str | None = None) -> None:
        fd, self.path = tempfile.mkstemp(prefix="vrshq-spill-", suffix=".bin", dir=directory)
        self._fd = fd
        # A store that is never closed still removes its file when collected or at exit.
        self._finalizer = weakref.finalize(self, _remove_scratch, fd, self.path)
        self._end = 0
        self._records: dict[Hashable, _Record] = {}
        # Slots no key uses any more, by size: re-tracking an object discards and rewrites all
        # its records, and without reuse the file would grow by that much on every correction.
        self._free: dict[int, list[int]] = {}
        self.bytes_written = 0

    def put(self, key: Hashable, tensors: Sequence[torch.Tensor]) -> None:
        """Write the tensors of ``key`` (CPU copies are made as needed)."""
        orders = [_memory_order(t) for t in tensors]
        blobs = [t.detach().to("cpu").permute(order).contiguous().reshape(-1).view(torch.uint8)
                 .numpy().tobytes() for t, order in zip(tensors, orders)]
        size = sum(len(b) for b in blobs)
        record = self._records.get(key)
        if record is None or record.capacity < size:
            if record is not None:
                self._release(record)
            free = self._free.get(size)
            if free:
                record = _Record(free.pop(), size, ())
            else:
                record = _Record(self._end, size, ())
                self._end += size
        record.layout = tuple((tuple(t.shape), t.dtype, order) for t, order in zip(tensors, orders))
        os.pwrite(self._fd, b"".join(blobs), record.offset)
        self._records[key] = record
        self.bytes_written += size

    def get(self, key: Hashable) -> Tensors | None:
        """Read the tensors of ``key`` back, or None."""
        record = self._records.get(key)
        if record is None:
            return None
        out = []
        offset = record.offset
        for shape, dtype, order in record.layout:
            count = 1
            for dim in shape:
                count *= dim
            size = count * torch.empty((), dtype=dtype).element_size()
            raw = bytearray(os.pread(self._fd, size, offset)) if size else bytearray()
            flat = torch.frombuffer(raw, dtype=torch.uint8) if size else torch.empty(0, dtype=torch.uint8)
            stored = flat.view(dtype).reshape([shape[d] for d in order])
            out.append(stored.permute(sorted(range(len(order)), key=order.__getitem__)))
            offset += size
        return tuple(out)

    def discard(self, key: Hashable) -> None:
        """Forget ``key``; its slot goes to the next record of the same size."""
        record = self._records.pop(key, None)
        if record is not None:
            self._release(record)

    def _release(self, record: _Record) -> None:
        if record.capacity:
            self._free.setdefault(record.capacity, []).append(record.offset)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._records

    def close(self) -> None:
        """Delete the scratch file."""
        if self._fd >= 0:
            self._fd = -1
            self._finalizer()


class TieredStore:
    """LRU over memory tiers, with a disk spill (or plain eviction) below the last tier."""

    def __init__(self, tiers: Sequence[Tier], spill_to_disk: bool = True,
                 directory: str | None = None) -> None:
        self.tiers = list(tiers)
        self._levels: list[OrderedDict[Hashable, Tensors]] = [OrderedDict() for _ in self.tiers]
        self._used = [0 for _ in self.tiers]
        self._spill_to_disk = spill_to_disk
        self._directory = directory
        self._disk: DiskSpill | None = None
        self.evictions = 0

    def put(self, key: Hashable, tensors: Sequence[torch.Tensor]) -> None:
        """Store ``tensors`` under ``key`` in the top tier, pushing older entries down."""
        self.discard(key)
        self._insert(0, key, tuple(t.to(self.tiers[0].device) for t in tensors))

    def get(self, key: Hashable) -> Tensors | None:
        """The tensors of ``key`` (on the device of the tier that holds them), or None."""
        for level in self._levels:
            if key in level:
                level.move_to_end(key)
                return level[key]
        if self._disk is not None and key in self._disk:
            return self._disk.get(key)
        return None

    def __contains__(self, key: Hashable) -> bool:
        return any(key in level for level in self._levels) or (
            self._disk is not None and key in self._disk)

    def keys(self) -> list[Hashable]:
        """Every key held, in a tier or on disk."""
        out = {k: None for level in self._levels for k in level}
        if self._disk is not None:
            out.update(dict.fromkeys(self._disk._records))
        return list(out)

    def discard(self, key: Hashable) -> None:
        """Remove ``key`` from every tier and the disk."""
        for i, level in enumerate(self._levels):
            tensors = level.pop(key, None)
            if tensors is not None:
                self._used[i] -= _nbytes(tensors)
        if self._disk is not None:
            self._disk.discard(key)

    def resident_bytes(self) -> list[int]:
        """Bytes held by each memory tier."""
        return list(self._used)

    @property
    def spilled_bytes(self) -> int:
        """Bytes written to the disk spill so far."""
        return self._disk.bytes_written if self._disk is not None else 0

    def close(self) -> None:
        """Drop everything and delete the spill file."""
        for level in self._levels:
            level.clear()
        self._used = [0 for _ in self.tiers]
        if self._disk is not None:
            self._disk.close()
            self._disk = None

    def _insert(self, i: int, key: Hashable, tensors: Tensors) -> None:
        if i == len(self.tiers):
            self.evictions += 1
            if self._spill_to_disk:
                if self._disk is None:
                    self._disk = DiskSpill(self._directory)
                self._disk.put(key, tensors)
            return
        size = _nbytes(tensors)
        level = self._levels[i]
        if size > self.tiers[i].budget_bytes:
            self._insert(i + 1, key, tuple(t.to(self._device_below(i)) for t in tensors))
            return
        level[key] = tensors
        self._used[i] += size
        while self._used[i] > self.tiers[i].budget_bytes:
            old_key, old = level.popitem(last=False)
            self._used[i] -= _nbytes(old)
            self._insert(i + 1, old_key, tuple(t.to(self._device_below(i)) for t in old))

    def _device_below(self, i: int) -> torch.device:
        return self.tiers[i + 1].device if i + 1 < len(self.tiers) else torch.device("cpu")
