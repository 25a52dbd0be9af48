"""`vrshq download`: argument handling and a clear error without network (never a real download)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

VRSHQ = str(Path(sys.executable).with_name("vrshq"))


def _run(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    # Offline by construction: the hub is switched off and the URLs point at a closed local port,
    # so these tests never download anything even on a machine with network.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    return subprocess.run([VRSHQ, "download", str(tmp_path / "weights"), *args],
                          capture_output=True, text=True, env=env, timeout=120, check=False)


@pytest.mark.parametrize("part, names", [
    ("vrshq", "VRS-HQ"),
    ("sam2", "SAM-2 hiera-L from http://127.0.0.1:9/sam2_hiera_large.pt"),
    ("clip", "CLIP ViT-L-14-336-quickgelu/openai"),
])
def test_offline_gives_one_line_naming_the_part(tmp_path, part, names):
    proc = _run("--only", part, "--sam2-url", "http://127.0.0.1:9/sam2_hiera_large.pt",
                tmp_path=tmp_path)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("vrshq: error: cannot download"), proc.stderr
    assert names in errors[0] and "network" in errors[0]
    assert "Traceback" not in proc.stderr
    # No half-written file is left behind.
    assert not list((tmp_path / "weights").rglob("*.part"))


def test_bad_arguments(tmp_path):
    proc = _run("--only", "bogus", tmp_path=tmp_path)
    assert proc.returncode == 2 and "invalid choice: 'bogus'" in proc.stderr
    proc = _run("--only", "clip", "--clip-model", "no-such-model", tmp_path=tmp_path)
    assert proc.returncode == 2 and "no pretrained weights 'openai' for 'no-such-model'" in proc.stderr
    (tmp_path / "file").write_text("x")
    proc = subprocess.run([VRSHQ, "download", str(tmp_path / "file")], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "exists and is not a folder" in proc.stderr
    proc = subprocess.run([VRSHQ, "download"], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 2 and "the following arguments are required: dir" in proc.stderr
