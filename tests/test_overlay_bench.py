"""The overlay cost benchmark at a tiny size: it runs, writes every medium, and its ratios are
its own timings' (the numbers themselves are bench/ output, never asserted)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from bench import overlay_bench as ob


def test_the_overlay_bench_runs_and_reports_its_ratios(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VRSHQ_BENCH_RESULTS", str(tmp_path / "results"))
    ob.main(["--frames", "6", "--size", "64x48", "--repeat", "1"])
    out = capsys.readouterr().out
    row = json.loads((tmp_path / "results" / "overlay.json").read_text())["overlay"]
    assert (row["frames"], row["size"], row["objects"]) == (6, "64x48", 2)
    assert row["predict_s"] > 0 and 0 < row["overlay_s"] < row["media_s"]
    assert row["media_ratio"] == pytest.approx(row["media_s"] / row["predict_s"])
    assert row["overlay_ratio"] == pytest.approx(row["overlay_s"] / row["predict_s"])
    assert f"media/predict = {row['media_ratio']:.3f}" in out


def test_the_bench_times_the_media_it_claims(tmp_path):
    """run() writes the overlay, a strip per object and the keyframe images beside the video."""
    row = ob.run(6, 64, 48, 1, tmp_path)
    folder = tmp_path / "media" / "clips"
    overlays = list((folder / "vrshq-overlays" / "1-1").glob("overlay-*.mp4"))
    images = sorted(p.name for p in (folder / "vrshq-keyframes" / "1-1").iterdir())
    assert len(overlays) == 1 and overlays[0].stat().st_size > 0
    assert len([n for n in images if n.startswith("strip-obj")]) == 2
    assert len([n for n in images if n.startswith("obj")]) == 2
    with Image.open(folder / "vrshq-keyframes" / "1-1" / [n for n in images if n.startswith("obj")][0]) as im:
        assert im.size == (64, 48)
    assert row["media_s"] > row["overlay_s"]
