"""TieredStore and DiskSpill: LRU tiers within byte budgets, and exact disk round trips."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from vrshq.engine.store import DiskSpill, Tier, TieredStore

CPU = torch.device("cpu")


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bytes of a tensor: equality of these is bit-exactness (NaN, -0.0 and bf16 too)."""
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def assert_bit_exact(got, want) -> None:
    assert got is not None, "entry missing"
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype
        assert tuple(g.shape) == tuple(w.shape)
        assert g.device == CPU
        assert torch.equal(_bits(g), _bits(w))


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _entry(seed: int, numel: int = 16) -> tuple[torch.Tensor, ...]:
    """A float32 entry of numel * 4 bytes whose values depend on the seed."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(numel, generator=g),)


def _spill_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("vrshq-spill-*"))


# Records that must come back bit for bit: every dtype sam2's state and features use, odd
# values (NaN, infinities, -0.0, subnormals), zero-size tensors and non-contiguous inputs.
def _special_float(dtype: torch.dtype) -> torch.Tensor:
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 1e-40, 3.25, -7.5])
    noise = torch.randn(12, generator=torch.Generator().manual_seed(1))
    return torch.cat([x, noise]).to(dtype)


RECORDS = {
    "float32": (_special_float(torch.float32).reshape(1, 19),),
    "bfloat16": (_special_float(torch.bfloat16).reshape(19, 1),),
    "float16": (_special_float(torch.float16),),
    "int64": (torch.tensor([[0, -1, 2**62, -(2**63)], [5, 6, 7, 2**63 - 1]], dtype=torch.int64),),
    "int32": (torch.arange(-6, 6, dtype=torch.int32).reshape(3, 4),),
    "uint8": (torch.arange(0, 256, 17, dtype=torch.uint8),),
    "bool": (torch.tensor([[True, False, True], [False, False, True]]),),
    "zero-size": (torch.empty(0, 3), torch.empty(2, 0, dtype=torch.int64),
                  torch.empty(0, dtype=torch.bfloat16)),
    "scalar": (torch.tensor(2.5), torch.tensor(True)),
    "non-contiguous": (torch.arange(24, dtype=torch.float32).reshape(4, 6).t(),
                       torch.arange(10, dtype=torch.int64)[::3]),
    # the compact per-frame sam2 output: bf16 memory, float32 masks/pointer/score, mixed
    "sam2-output": (torch.randn(1, 16, 8, 8).to(torch.bfloat16), torch.randn(1, 1, 32, 32),
                    torch.randn(1, 32), torch.tensor([[10.0]])),
}


# ---------------------------------------------------------------- DiskSpill


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_disk_spill_round_trip_is_bit_exact(tmp_path, name):
    spill = DiskSpill(str(tmp_path))
    try:
        spill.put("a", _entry(0))
        spill.put("k", RECORDS[name])
        spill.put("z", _entry(1))
        assert_bit_exact(spill.get("k"), RECORDS[name])
        # neighbours are untouched, and a second read gives the same again
        assert_bit_exact(spill.get("a"), _entry(0))
        assert_bit_exact(spill.get("z"), _entry(1))
        assert_bit_exact(spill.get("k"), RECORDS[name])
    finally:
        spill.close()


def _dense_layouts() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return [
        # sam2's image encoder returns channels-last feature maps like these
        torch.randn(1, 32, 8, 8, generator=g).to(memory_format=torch.channels_last),
        torch.randn(2, 3, 4, 5, generator=g).to(torch.bfloat16)
        .to(memory_format=torch.channels_last),
        torch.randn(5, 7, generator=g).t(),
        torch.randint(0, 100, (2, 3, 4), generator=g).permute(2, 0, 1),
        torch.randn(3, 4, generator=g).to(torch.bfloat16),
    ]


def test_disk_spill_keeps_the_memory_layout(tmp_path):
    # bf16 kernels round differently on other layouts: a feature map read back from disk must
    # have the strides it was written with, or a spilled run differs from an unspilled one.
    tensors = _dense_layouts()
    spill = DiskSpill(str(tmp_path))
    try:
        spill.put("k", tensors)
        got = spill.get("k")
        assert_bit_exact(got, tensors)
        for g, t in zip(got, tensors):
            assert g.stride() == t.stride()
            assert g.is_contiguous() == t.is_contiguous()
            assert g.is_contiguous(memory_format=torch.channels_last) == \
                t.is_contiguous(memory_format=torch.channels_last)
            assert torch.equal(g, t)
    finally:
        spill.close()


def test_disk_spill_get_returns_independent_tensors(tmp_path):
    spill = DiskSpill(str(tmp_path))
    try:
        spill.put(1, _entry(0))
        spill.get(1)[0].fill_(0.0)
        assert_bit_exact(spill.get(1), _entry(0))
    finally:
        spill.close()


def test_disk_spill_missing_key_is_none(tmp_path):
    spill = DiskSpill(str(tmp_path))
    try:
        assert spill.get("nope") is None
        assert "nope" not in spill
        spill.put("yes", _entry(0))
        assert spill.get("nope") is None
        assert "yes" in spill
    finally:
        spill.close()


def test_disk_spill_overwrite_same_size_reuses_the_slot(tmp_path):
    spill = DiskSpill(str(tmp_path))
    try:
        spill.put("a", _entry(0))
        spill.put("b", _entry(1))
        size = os.path.getsize(spill.path)
        assert size == 2 * 64
        spill.put("a", _entry(2))
        assert os.path.getsize(spill.path) == size
        assert_bit_exact(spill.get("a"), _entry(2))
        assert_bit_exact(spill.get("b"), _entry(1))
        # a different layout of the same byte size (another dtype and shape) fits too
        other = (torch.arange(16, dtype=torch.int32).reshape(4, 4),)
        spill.put("a", other)
        assert os.path.getsize(spill.path) == size
        assert_bit_exact(spill.get("a"), other)
        assert_bit_exact(spill.get("b"), _entry(1))
    finally:
        spill.close()


def test_disk_spill_overwrite_larger_and_smaller(tmp_path):
    spill = DiskSpill(str(tmp_path))
    try:
        spill.put("a", _entry(0))
        spill.put("b", _entry(1))
        bigger = _entry(2, numel=40) + (torch.ones(3, dtype=torch.bool),)
        spill.put("a", bigger)
        # the larger record cannot overwrite b: it goes after it
        assert os.path.getsize(spill.path) == 2 * 64 + _nbytes(bigger)
        assert_bit_exact(spill.get("a"), bigger)
        assert_bit_exact(spill.get("b"), _entry(1))
        size = os.path.getsize(spill.path)
        smaller = (torch.tensor([1.5, -2.0]),)
        spill.put("a", smaller)
        assert os.path.getsize(spill.path) == size
        assert_bit_exact(spill.get("a"), smaller)
        assert_bit_exact(spill.get("b"), _entry(1))
        # a freed slot (a's first one) goes to the next record of its size
        spill.put("c", _entry(3))
        assert os.path.getsize(spill.path) == size
        assert_bit_exact(spill.get("c"), _entry(3))
        assert_bit_exact(spill.get("a"), smaller)
        assert_bit_exact(spill.get("b"), _entry(1))
    finally:
        spill.close()


def test_disk_spill_discard(tmp_path):
    spill = DiskSpill(str(tmp_path))
    try:
        spill.put("a", _entry(0))
        spill.put("b", _entry(1))
        spill.discard("a")
        spill.discard("never-there")
        assert "a" not in spill
        assert spill.get("a") is None
        assert_bit_exact(spill.get("b"), _entry(1))
        # rewriting discarded records (what re-tracking an object does) does not grow the file
        size = os.path.getsize(spill.path)
        for round_ in range(3):
            spill.put("a", _entry(10 + round_))
            spill.discard("a")
        spill.put("a", _entry(20))
        assert os.path.getsize(spill.path) == size
        assert_bit_exact(spill.get("a"), _entry(20))
        assert_bit_exact(spill.get("b"), _entry(1))
    finally:
        spill.close()


def test_disk_spill_close_removes_the_file(tmp_path):
    spill = DiskSpill(str(tmp_path))
    spill.put("a", _entry(0))
    path = Path(spill.path)
    assert path.parent == tmp_path and path.exists()
    spill.close()
    assert not path.exists()
    assert _spill_files(tmp_path) == []
    spill.close()  # idempotent


def test_disk_spill_counts_bytes_written(tmp_path):
    spill = DiskSpill(str(tmp_path))
    try:
        spill.put("a", _entry(0))
        spill.put("a", _entry(1))
        spill.put("b", RECORDS["sam2-output"])
        assert spill.bytes_written == 64 + 64 + _nbytes(RECORDS["sam2-output"])
    finally:
        spill.close()


# ---------------------------------------------------------------- TieredStore


def test_store_lru_evicts_the_least_recently_used(tmp_path):
    store = TieredStore([Tier(CPU, 2 * 64)], spill_to_disk=False, directory=str(tmp_path))
    store.put("a", _entry(0))
    store.put("b", _entry(1))
    assert_bit_exact(store.get("a"), _entry(0))  # a is now the most recently used
    store.put("c", _entry(2))
    assert store.get("b") is None and "b" not in store
    assert_bit_exact(store.get("a"), _entry(0))
    assert_bit_exact(store.get("c"), _entry(2))
    store.get("a")
    store.put("d", _entry(3))  # c is older than a now
    assert "c" not in store
    assert "a" in store and "d" in store
    assert store.evictions == 2
    assert store.resident_bytes() == [2 * 64]
    # nothing ever went to disk
    assert _spill_files(tmp_path) == [] and store.spilled_bytes == 0
    store.close()


def test_store_put_of_an_existing_key_replaces_it(tmp_path):
    store = TieredStore([Tier(CPU, 3 * 64)], directory=str(tmp_path))
    store.put("a", _entry(0))
    store.put("b", _entry(1))
    store.put("a", _entry(2))  # replaces a and makes it the most recent
    assert store.resident_bytes() == [2 * 64]
    assert_bit_exact(store.get("a"), _entry(2))
    store.put("c", _entry(3))
    store.put("d", _entry(4))  # evicts b, the least recent
    assert store.resident_bytes() == [3 * 64]
    assert store.evictions == 1
    assert_bit_exact(store.get("b"), _entry(1))  # from disk
    store.close()


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_store_evicts_to_disk_and_reads_back_exactly(tmp_path, name):
    budget = _nbytes(RECORDS[name]) + 2 * 64
    store = TieredStore([Tier(CPU, budget)], directory=str(tmp_path))
    try:
        store.put("record", RECORDS[name])
        assert _spill_files(tmp_path) == []  # no spill file until something is evicted
        for i in range(6):
            store.put(i, _entry(i))
            assert store.resident_bytes()[0] <= budget
        assert len(_spill_files(tmp_path)) == 1
        assert "record" in store
        assert_bit_exact(store.get("record"), RECORDS[name])
        for i in range(6):
            assert_bit_exact(store.get(i), _entry(i))
        assert store.spilled_bytes >= _nbytes(RECORDS[name])
    finally:
        store.close()


def test_store_keeps_the_memory_layout_through_every_tier(tmp_path):
    tensors = _dense_layouts()
    store = TieredStore([Tier(CPU, 1 << 20), Tier(CPU, 1 << 20)], directory=str(tmp_path))
    store.put("k", tensors)
    for step in range(3):  # tier 0, then tier 1, then disk
        got = store.get("k")
        assert [g.stride() for g in got] == [t.stride() for t in tensors], step
        assert_bit_exact(got, tensors)
        store.put(("filler", step), (torch.zeros(1 << 18),))
    assert store.resident_bytes() == [1 << 20, 1 << 20] and store.spilled_bytes > 0
    store.close()


def test_store_budget_is_respected_under_random_traffic(tmp_path):
    rng = torch.Generator().manual_seed(5)
    budgets = [300, 700]
    store = TieredStore([Tier(CPU, budgets[0]), Tier(CPU, budgets[1])], directory=str(tmp_path))
    want: dict[int, tuple[torch.Tensor, ...]] = {}
    try:
        for step in range(300):
            key = int(torch.randint(0, 25, (1,), generator=rng))
            op = int(torch.randint(0, 10, (1,), generator=rng))
            if op < 5:
                numel = int(torch.randint(0, 60, (1,), generator=rng))
                want[key] = (torch.randn(numel, generator=rng),
                             torch.randint(0, 2, (numel % 7,), generator=rng).bool())
                store.put(key, want[key])
            elif op < 8:
                got = store.get(key)
                if key in want:
                    assert_bit_exact(got, want[key])
                else:
                    assert got is None
            else:
                store.discard(key)
                want.pop(key, None)
            used = store.resident_bytes()
            assert all(u <= b for u, b in zip(used, budgets)), f"step {step}: {used} over {budgets}"
        for key, tensors in want.items():
            assert_bit_exact(store.get(key), tensors)
        assert store.evictions > 0
    finally:
        store.close()


def test_store_two_tiers_move_entries_down_in_lru_order(tmp_path):
    store = TieredStore([Tier(CPU, 2 * 64), Tier(CPU, 2 * 64)], directory=str(tmp_path))
    for i in range(4):
        store.put(i, _entry(i))
    # 0 and 1 moved to the second tier, 2 and 3 are in the first
    assert store.resident_bytes() == [128, 128]
    assert _spill_files(tmp_path) == []
    store.put(4, _entry(4))  # 2 moves down, pushing 0 (the oldest there) to disk
    assert store.resident_bytes() == [128, 128]
    assert len(_spill_files(tmp_path)) == 1
    assert store.evictions == 1
    for i in range(5):
        assert_bit_exact(store.get(i), _entry(i))
    # a get does not promote: the tiers are unchanged
    assert store.resident_bytes() == [128, 128]
    store.close()


def test_store_entry_larger_than_a_tier_goes_to_the_next(tmp_path):
    store = TieredStore([Tier(CPU, 100), Tier(CPU, 1000)], directory=str(tmp_path))
    big = _entry(0, numel=50)  # 200 bytes: over the first tier, within the second
    store.put("big", big)
    assert store.resident_bytes() == [0, 200]
    store.put("small", _entry(1, numel=4))
    assert store.resident_bytes() == [16, 200]
    huge = _entry(2, numel=500)  # 2000 bytes: over every tier, straight to disk
    store.put("huge", huge)
    assert store.resident_bytes() == [16, 200]
    assert len(_spill_files(tmp_path)) == 1
    assert_bit_exact(store.get("big"), big)
    assert_bit_exact(store.get("huge"), huge)
    assert_bit_exact(store.get("small"), _entry(1, numel=4))
    store.close()


def test_store_entry_larger_than_the_budget_is_dropped_without_disk(tmp_path):
    store = TieredStore([Tier(CPU, 100)], spill_to_disk=False, directory=str(tmp_path))
    store.put("small", _entry(0, numel=4))
    store.put("huge", _entry(1, numel=100))
    assert store.get("huge") is None and "huge" not in store
    assert_bit_exact(store.get("small"), _entry(0, numel=4))
    assert store.resident_bytes() == [16]
    assert store.evictions == 1
    assert _spill_files(tmp_path) == []
    store.close()


def test_store_without_disk_drops_evicted_entries(tmp_path):
    store = TieredStore([Tier(CPU, 3 * 64)], spill_to_disk=False, directory=str(tmp_path))
    for i in range(10):
        store.put(i, _entry(i))
        assert store.resident_bytes()[0] <= 3 * 64
    assert [i for i in range(10) if i in store] == [7, 8, 9]
    assert all(store.get(i) is None for i in range(7))
    assert store.evictions == 7
    assert store.spilled_bytes == 0
    assert _spill_files(tmp_path) == []
    store.close()


def test_store_discard_from_memory_and_disk(tmp_path):
    store = TieredStore([Tier(CPU, 2 * 64)], directory=str(tmp_path))
    for i in range(4):
        store.put(i, _entry(i))  # 0, 1 on disk; 2, 3 in memory
    store.discard(0)
    store.discard(3)
    store.discard("never-there")
    assert 0 not in store and 3 not in store
    assert store.get(0) is None and store.get(3) is None
    assert store.resident_bytes() == [64]
    assert_bit_exact(store.get(1), _entry(1))
    assert_bit_exact(store.get(2), _entry(2))
    store.close()


def test_store_rewriting_spilled_keys_does_not_grow_the_file(tmp_path):
    # What re-tracking an object does to the state store: every frame's record is discarded
    # and written again. The spill file must stay the size of one pass.
    store = TieredStore([Tier(CPU, 2 * 64)], directory=str(tmp_path))
    for i in range(10):
        store.put(("obj", i), _entry(i))
    (path,) = _spill_files(tmp_path)
    size = path.stat().st_size
    assert size == 8 * 64
    for round_ in range(3):
        for i in range(10):
            store.discard(("obj", i))
        for i in range(10):
            store.put(("obj", i), _entry(100 * round_ + i))
        assert path.stat().st_size == size
    for i in range(10):
        assert_bit_exact(store.get(("obj", i)), _entry(200 + i))
    store.close()


def test_store_close_drops_everything_and_removes_the_file(tmp_path):
    store = TieredStore([Tier(CPU, 64)], directory=str(tmp_path))
    for i in range(3):
        store.put(i, _entry(i))
    assert len(_spill_files(tmp_path)) == 1
    store.close()
    assert _spill_files(tmp_path) == []
    assert store.resident_bytes() == [0]
    assert all(store.get(i) is None for i in range(3))
    store.close()  # idempotent
