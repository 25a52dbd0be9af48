"""bench/sam3_bench.py at tiny size: it runs, prints its ratios, and both sides' masks agree."""

from __future__ import annotations

import json

import pytest

from bench import sam3_bench

pytest.importorskip("transformers")

FRAMES = 12  # past the tiny model's memory window (3 frames): the plugin prunes on this run


def test_bench_prints_ratios_and_the_plugin_masks_equal_the_reference(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VRSHQ_BENCH_RESULTS", str(tmp_path))
    assert sam3_bench.main(["--lengths", str(FRAMES), "--size", "64x48"]) == 0
    out = capsys.readouterr().out
    for column in ("peak_rss_mib", "rss_ratio", "fps_ratio", "identical_masks", f"rss_growth_vs_{FRAMES}"):
        assert column in out
    result = json.loads((tmp_path / "sam3.json").read_text())
    (ratio,) = result["ratios"]
    plugin, reference = (next(r for r in result["rows"] if r["kind"] == k) for k in ("plugin", "reference"))
    assert plugin["frames"] == reference["frames"] == FRAMES
    # both sides found and digested the same masks; the tiny model finds some (a real comparison)
    assert reference["masks"] >= FRAMES and plugin["masks"] == reference["masks"]
    assert plugin["masks_sha256"] == reference["masks_sha256"]
    assert ratio["identical_masks"] is True
    assert ratio["rss_ratio"] == pytest.approx(plugin["peak_rss_mib"] / reference["peak_rss_mib"])
    assert ratio["fps_ratio"] == pytest.approx(plugin["fps"] / reference["fps"])
    assert f"{ratio['rss_ratio']:.4g}" in out


def test_bench_rejects_bad_lengths(capsys):
    with pytest.raises(SystemExit) as exc:
        sam3_bench.main(["--lengths", "0"])
    assert exc.value.code != 0
    assert "--lengths" in capsys.readouterr().err
