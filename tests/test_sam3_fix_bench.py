"""bench/sam3_fix_bench.py at tiny size: it runs, prints its ratio, and the two fixes agree."""

from __future__ import annotations

import json

import pytest

from bench import sam3_fix_bench

FRAMES = 10


def test_the_fix_bench_prints_its_ratio_and_both_fixes_agree(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VRSHQ_BENCH_RESULTS", str(tmp_path))
    assert sam3_fix_bench.main(["--frames", str(FRAMES), "--size", "64x48", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "sam3_fix.json").read_text())
    assert result["frames"] == FRAMES and result["identical_masks"] is True
    # the uncached fix encodes every frame, the stored one none
    assert result["encoder_runs_uncached"] == FRAMES and result["encoder_runs_stored"] == 0
    assert result["encoder_runs_filling"] == FRAMES  # a task with nothing stored encodes once
    assert result["filling_ratio"] == pytest.approx(result["fix_filling_s"] / result["fix_uncached_s"])
    assert result["stored_ratio"] == pytest.approx(result["fix_stored_s"] / result["fix_uncached_s"])
    (stored,) = result["runs"]["stored"]
    assert result["fix_stored_s"] == stored["seconds"]
    assert f"{result['stored_ratio']:.4g}" in out and "stored_ratio" in out


def test_the_fix_bench_rejects_a_bad_size(capsys):
    with pytest.raises(SystemExit) as exc:
        sam3_fix_bench.main(["--size", "big"])
    assert exc.value.code != 0
    assert "--size" in capsys.readouterr().err
