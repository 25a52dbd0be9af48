"""The mask-pages benchmark (bench/pages_bench.py) at tiny size: it runs, measures and checks."""

from __future__ import annotations

import json

from bench import pages_bench


def test_the_pages_bench_runs_at_tiny_size(tmp_path, monkeypatch):
    monkeypatch.setenv("VRSHQ_BENCH_RESULTS", str(tmp_path / "results"))
    assert pages_bench.main(["--frames", "12", "--size", "160x120", "--device", "cpu"]) == 0
    got = json.loads((tmp_path / "results" / "pages.json").read_text())
    assert got["passed"] is True and all(got["checks"].values())
    assert got["fix_encoder_calls"] == 0  # the fix read the prediction's stored features
    assert got["frames"] == 12 and got["mask_pages"] == 2 and "stand-in" in got["label_studio"]
    for key in ("pages", "frame_n", "fix"):
        assert got[f"{key}_s"] > 0 and got[f"{key}_ratio"] == got[f"{key}_s"] / got["predict_s"]
    calls = got["label_studio_calls"]
    assert calls["PATCH /api/tasks/<id>/ 200"] >= 2  # the prediction's pages, then frame N's
    assert not [c for c in calls if c.endswith((" 401", " 404", " 400"))]


def test_the_pages_bench_runs_with_the_overlay_config(tmp_path, monkeypatch):
    # --overlay: the prediction and the fix also write the overlay video and strips.
    monkeypatch.setenv("VRSHQ_BENCH_RESULTS", str(tmp_path / "results"))
    assert pages_bench.main(["--frames", "8", "--size", "96x64", "--device", "cpu", "--overlay"]) == 0
    got = json.loads((tmp_path / "results" / "pages.json").read_text())
    assert got["overlay"] is True and got["checks"]["fix_wrote_a_new_overlay"] is True
    assert got["checks"]["fix_overlay_job_done"] is True
    # the answer, then the overlay job: measured from the same start, the overlay later
    assert got["fix_overlay_s"] > got["fix_s"] and got["overlay_lag_s"] == got["fix_overlay_s"] - got["fix_s"]
    assert got["fix_overlay_ratio"] == got["fix_overlay_s"] / got["predict_s"]
    assert got["passed"] is True and got["fix_encoder_calls"] == 0
