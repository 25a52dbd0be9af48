"""Running the ``vrshq`` command in tests: in-process (fast) and as the installed console script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from vrshq.cli import main

VRSHQ = Path(sys.executable).with_name("vrshq")


def run_cli(capfd, *argv) -> tuple[int, str, str]:
    """Run ``vrshq`` in-process: (exit code, stdout, stderr); argparse errors exit via SystemExit."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code
    out, err = capfd.readouterr()
    return rc, out, err


def run_script(*argv) -> subprocess.CompletedProcess:
    """Run the installed console script, without the model folders the environment may name."""
    assert VRSHQ.is_file(), f"console script not installed at {VRSHQ}"
    env = {k: v for k, v in os.environ.items() if k not in ("VRSHQ_MODEL_DIR", "VRSHQ_MODEL", "MODEL_DIR")}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([str(VRSHQ), *map(str, argv)], capture_output=True, text=True,
                          env=env, timeout=300)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1 for two empty masks)."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def assert_one_line_error(rc: int, err: str, *needles: str) -> None:
    """Exit code 2 and exactly one stderr line, "vrshq: error: ...", containing every needle."""
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("vrshq: error:"), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert rc == 2, (rc, err)
