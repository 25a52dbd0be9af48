"""The fine-tuning benchmark runs end to end (numbers are for the README, not asserted).

The bench writes its JSON into a temporary results folder here, never the repo's
bench/results/finetune.json, so a stale file from an earlier run cannot satisfy the test.
"""

from __future__ import annotations

import json

import pytest

from bench import common, finetune_bench


@pytest.mark.timeout(300)
def test_finetune_bench_reports_steps_per_second_and_step_memory(capsys, tmp_path, monkeypatch):
    results = tmp_path / "results"
    monkeypatch.setattr(common, "RESULTS", results)
    assert finetune_bench.main(["--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "training step / gradient-free forward time" in out
    path = results / "finetune.json"
    assert f"wrote {path}" in out
    doc = json.loads(path.read_text())
    modes = {r["mode"]: r for r in doc["rows"]}
    assert set(modes) == {"train", "forward"}
    # This run's rows: the steps asked for here, timed and measured.
    assert all(r["steps"] == 2 and r["seconds"] > 0 for r in modes.values())
    assert all(r["steps_per_s"] == pytest.approx(2 / r["seconds"]) for r in modes.values())
    assert all(r["peak_rss_mib"] > 0 for r in modes.values())
    assert doc["train_over_forward"] == pytest.approx(modes["forward"]["steps_per_s"] / modes["train"]["steps_per_s"])
    assert doc["device"] == "cpu" and doc["machine"]["python"]
