"""The fine-tuning benchmark runs end to end (numbers are for the README, not asserted)."""

from __future__ import annotations

import json

import pytest

from bench import finetune_bench
from bench.common import RESULTS


@pytest.mark.timeout(300)
def test_finetune_bench_reports_steps_per_second_and_step_memory(capsys):
    assert finetune_bench.main(["--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "training step / gradient-free forward time" in out
    doc = json.loads((RESULTS / "finetune.json").read_text())
    modes = {r["mode"]: r for r in doc["rows"]}
    assert set(modes) == {"train", "forward"}
    assert all(r["steps_per_s"] > 0 and r["peak_rss_mib"] > 0 for r in modes.values())
