"""Shared helpers for the benchmark scripts: timing, peak RSS in a fresh process, tables, JSON."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from vrshq.engine import EngineConfig
from vrshq.engine.config import PRECISIONS as ENGINE_PRECISIONS

RESULTS = Path(__file__).resolve().parent / "results"
# scripts/gpu_check.sh points this at its own folder, so a check never touches bench/results.
RESULTS_ENV = "VRSHQ_BENCH_RESULTS"

# The precision plans a benchmark can run the engine at (EngineConfig's): "official" is the
# VRS-HQ release's bf16 weights and arithmetic, "fp32" float32 throughout, "auto" official on
# CUDA and fp32 on a CPU. A model must be cast to its plan (vrshq.engine.apply_precision); a
# reference on sam2's own predictor runs on the same cast weights, so both sides compute alike.
PRECISIONS = ENGINE_PRECISIONS
MiB = 1024 * 1024
# The engine settings of a comparison with sam2's predictor (engine_bench, vrshq_bench): no
# hole filling, which the predictor skips here.
NO_FILL = EngineConfig(fill_hole_area=0)


def engine_config(device: str = "auto", precision: str = "auto", **settings) -> EngineConfig:
    """The EngineConfig of a benchmark's ``--device`` and ``--precision`` (plus any other field)."""
    return EngineConfig(device=device, precision=precision, **settings)


def sync(device: torch.device | str) -> None:
    """Wait for the device's queued work (CUDA is asynchronous), so host clocks time it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def reset_gpu_peak(device: torch.device | str) -> None:
    """Start a new peak-memory measurement on a CUDA device (nothing on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def gpu_peak_mib(device: torch.device | str) -> float | None:
    """Peak GPU memory allocated by tensors since the last reset, in MiB (None off CUDA)."""
    if torch.device(device).type != "cuda":
        return None
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / (1024 * 1024)


@contextmanager
def timed(store: dict, key: str) -> Iterator[None]:
    """Add the wall time of the block to ``store[key]``."""
    start = time.perf_counter()
    yield
    store[key] = store.get(key, 0.0) + time.perf_counter() - start


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB.

    Read from VmHWM: getrusage's ru_maxrss survives fork+exec, so a child would report its
    parent's peak.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(module: str, *args: str) -> dict:
    """Run ``python -m module args`` in a fresh process and parse the JSON it prints last."""
    proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine() -> dict:
    """What the numbers were measured on."""
    info = {"cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
            "torch": torch.__version__, "threads": torch.get_num_threads()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def print_table(title: str, rows: list[dict]) -> None:
    """A plain aligned table on stdout."""
    if not rows:
        return
    cols = list(rows[0])
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print(f"\n{title}")
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_json(name: str, payload: dict) -> Path:
    """Write ``payload`` (plus the machine) to ``bench/results/<name>.json``.

    ``$VRSHQ_BENCH_RESULTS`` names another folder (scripts/gpu_check.sh uses its own).
    """
    results = Path(os.environ.get(RESULTS_ENV) or RESULTS)
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2))
    return path
