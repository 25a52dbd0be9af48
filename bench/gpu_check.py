"""The GPU check's Python side: the machine and import stage, and the report (scripts/gpu_check.sh).

    python -m bench.gpu_check env --json WORK/env.json [--dry-run]
    python -m bench.gpu_check report --work WORK --out OUT [--dry-run]

``env`` records the machine (GPU name, memory, capability; Python, torch, transformers) and
imports every module the other stages need, naming any that fails. ``report`` reads what the
stages left in WORK (``stages.tsv``: name, exit code, seconds, limit; each stage's JSON) and
writes ``OUT/gpu_check.json`` (everything) and ``OUT/gpu_check.txt`` (a short table): per stage
its status (ok, failed, timeout, skipped), time, peak GPU memory and the numbers the README
table takes. It exits 1 unless every stage is ok.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata as metadata
import json
import platform
import re
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("env", "cuda_tests", "engine_bench", "vrshq_bench", "roundtrip")
# Every module the stages import (lazily imported ones included), checked before they run.
MODULES = (
    "torch", "torchvision", "numpy", "scipy", "PIL", "transformers", "sentencepiece",
    "safetensors", "peft", "sam2", "sam2.build_sam", "sam2.sam2_video_predictor", "hydra",
    "omegaconf", "iopath", "open_clip", "ftfy", "decord", "av", "pycocotools", "flask",
    "werkzeug", "sqlalchemy", "label_studio_sdk", "prometheus_client", "psutil", "requests",
    "pytest", "vrshq.engine", "vrshq.model.loading", "vrshq.model.tiny", "vrshq.backend.http.app",
    "vrshq.backend.service", "vrshq.plugins.vrshq_plugin", "vrshq.plugins.sam2_plugin", "bench.engine_bench",
    "bench.vrshq_bench", "bench.roundtrip_bench", "bench.ls_standin",
)
# Our own top-level packages: never a distribution to carry.
OWN = {"vrshq", "backend", "plugins", "bench", "tests", "__main__"}
MACHINE_PACKAGES = ROOT / "scripts" / "gpu_machine_packages.txt"
WHEELS = ROOT / "scripts" / "gpu_wheels.txt"


# ----------------------------------------------------------------------------- env
def env_stage(path: Path, dry_run: bool) -> int:
    """Record the machine and import every module; 1 when an import fails (or no GPU, unless dry)."""
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(), "executable": sys.executable,
        "platform": platform.platform(), "torch": torch.__version__,
        "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
        "cpu_count": _cpu_count(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=torch.cuda.get_device_name(0), gpu_count=torch.cuda.device_count(),
                    gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}",
                    bf16_supported=torch.cuda.is_bf16_supported())
        info["bf16_matmul_tflops"] = _bf16_matmul_tflops()
    imports: dict[str, Any] = {}
    by_module = metadata.packages_distributions()
    for name in MODULES:
        start = time.perf_counter()
        try:
            module = importlib.import_module(name)
            dists = by_module.get(name.split(".")[0], [])
            imports[name] = {"ok": True, "seconds": round(time.perf_counter() - start, 3),
                             "version": metadata.version(dists[0]) if dists else None,
                             "file": str(getattr(module, "__file__", None))}
        except Exception as exc:  # noqa: BLE001 - any import error is reported, not raised
            imports[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
    info["transformers"] = imports["transformers"].get("version")
    try:
        import sam2._C  # noqa: F401
        info["sam2_cuda_extension"] = True
    except ImportError:
        info["sam2_cuda_extension"] = False  # built without it: vrshq.engine.holes fills holes
    info["imports"] = imports
    failed = [n for n, r in imports.items() if not r["ok"]]
    info["failed_imports"] = failed
    path.write_text(json.dumps(info, indent=2))
    print(json.dumps({k: v for k, v in info.items() if k != "imports"}, indent=2))
    if failed:
        print(f"imports failed: {', '.join(failed)}", file=sys.stderr)
    if not dry_run and not torch.cuda.is_available():
        print("no CUDA GPU visible (use --dry-run on a machine without one)", file=sys.stderr)
        return 1
    return 1 if failed else 0


def _cpu_count() -> int | None:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _bf16_matmul_tflops(n: int = 8192, repeat: int = 10) -> float:
    """A sanity number for the card: an n x n x n bf16 product on random data, TFLOP/s."""
    import torch

    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeat):
        a @ b
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1000 / repeat
    del a, b
    torch.cuda.empty_cache()
    return round(2 * n**3 / seconds / 1e12, 1)


# ----------------------------------------------------------------------------- report
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _peaks(value: Any) -> list[float]:
    """Every number under a key ending in ``gpu_peak_mib``, however deep."""
    found: list[float] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if k.endswith("gpu_peak_mib") and isinstance(v, (int, float)):
                found.append(float(v))
            else:
                found.extend(_peaks(v))
    elif isinstance(value, list):
        for v in value:
            found.extend(_peaks(v))
    return found


def _junit(path: Path) -> dict[str, Any] | None:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return None
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = [f"{case.get('classname')}::{case.get('name')}" for case in suite.iter("testcase")
              if case.find("failure") is not None or case.find("error") is not None]
    return {**counts, "passed": counts["tests"] - counts["failures"] - counts["errors"]
            - counts["skipped"], "failed_tests": failed}


def _stage_result(name: str, work: Path) -> tuple[Any, str | None]:
    """(the stage's result, why it is not acceptable or None)."""
    results = work / "results"
    if name == "env":
        env = _read_json(work / "env.json")
        if env is None:
            return None, "no env.json"
        return env, (f"imports failed: {', '.join(env['failed_imports'])}"
                     if env.get("failed_imports") else None)
    if name == "cuda_tests":
        junit = _junit(work / "cuda_tests.xml")
        metrics = _read_json(work / "cuda_tests.json")
        result = {"junit": junit, "metrics": metrics}
        if junit is None:
            return result, "no junit report"
        if junit["tests"] == 0 or junit["skipped"] or junit["failures"] or junit["errors"]:
            return result, (f"{junit['passed']} passed, {junit['failures'] + junit['errors']} "
                            f"failed, {junit['skipped']} skipped")
        return result, None
    files = {"engine_bench": ["engine.json"], "roundtrip": ["roundtrip.json"],
             "vrshq_bench": ["vrshq_full.json", "vrshq_hiera-t-128.json"]}[name]
    for f in files:
        found = _read_json(results / f)
        if found is not None:
            if name == "roundtrip" and not found.get("passed"):
                return found, f"a check failed: {found.get('checks')}"
            return found, None
    return None, f"no {' or '.join(files)}"


def _numbers(name: str, result: Any) -> list[tuple[str, Any]]:
    """The (metric, value) pairs of a stage that the README's table takes."""
    if not isinstance(result, dict):
        return []
    out: list[tuple[str, Any]] = []
    if name == "env":
        out += [("gpu", result.get("gpu")), ("bf16 matmul TFLOP/s", result.get("bf16_matmul_tflops"))]
    elif name == "cuda_tests":
        junit = result.get("junit") or {}
        out.append(("tests passed / failed / skipped",
                    f"{junit.get('passed')} / {junit.get('failures', 0) + junit.get('errors', 0)}"
                    f" / {junit.get('skipped')}"))
        for test, m in (result.get("metrics") or {}).items():
            short = test.replace("test_", "").replace("_on_the_device", "")
            for key in ("max_logit_diff", "mean_iou", "min_iou", "confident_iou",
                        "seconds_per_segment", "mean_iou_vs_cpu_fp32"):
                if key in m:
                    out.append((f"{short}: {key}", m[key]))
    elif name == "engine_bench":
        ref = result.get("vs_reference") or {}
        if ref:
            out += [("engine vs sam2 predictor: engine s / reference s",
                     f"{_f(ref.get('engine_s'))} / {_f(ref.get('reference_s'))}"),
                    ("engine vs sam2 predictor: time ratio", ref.get("time_ratio")),
                    ("engine vs sam2 predictor: min IoU, same frames", ref.get("min_iou_same_frames"))]
        for row in result.get("correction") or []:
            out.append((f"correction / from scratch, feature budget {row.get('feature_budget_mib')}"
                        f" MiB: time ratio (identical masks {row.get('identical_masks')})",
                        row.get("time_ratio")))
    elif name == "vrshq_bench":
        for row in result.get("compare") or []:
            loading = row.get("reference_loading")
            out += [(f"TKS + propagation, reference loads per {loading}: ours s / reference s",
                     f"{_f(row.get('ours_s'))} / {_f(row.get('ref_s'))}"),
                    (f"TKS + propagation, per {loading}: time ratio (same keyframe "
                     f"{row.get('same_keyframe')}, identical masks {row.get('identical_masks')})",
                     row.get("time_ratio"))]
    elif name == "roundtrip":
        out += [("predict s", result.get("predict_s")),
                ("webhook answer s", result.get("webhook_answer_s")),
                ("webhook to stored prediction s", result.get("webhook_to_stored_prediction_s")),
                ("checks passed", result.get("passed"))]
    return [(m, _f(v)) for m, v in out]


def _f(v: Any) -> Any:
    return round(v, 4) if isinstance(v, float) else v


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _listed(path: Path) -> set[str]:
    """The package names of a list (one a line, ``NAME==VERSION`` or ``NAME``, ``#`` comments)."""
    names: set[str] = set()
    if not path.is_file():
        return names
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(_norm(re.split(r"[=<>~! ]", line, maxsplit=1)[0]))
    return names


def imported_distributions(log: Path) -> dict[str, Any]:
    """The distributions the stages needed, and those neither the GPU machine has nor the wheels
    carry (the import log of ``bench.imports``).

    Needed: reached through imports from our own packages, not following what a package of the
    GPU machine imports for itself (the machine has its dependencies).
    """
    edges: dict[str, set[str]] = {}
    try:
        for line in log.read_text().splitlines():
            for a, b in json.loads(line)["edges"]:
                edges.setdefault(a, set()).add(b)
    except (OSError, ValueError, KeyError):
        return {"error": f"no import log at {log}"}
    by_module = metadata.packages_distributions()
    machine = _listed(MACHINE_PACKAGES)
    wheels = _listed(WHEELS)
    needed: dict[str, str] = {}  # distribution -> the package that imported it
    seen = set(OWN)
    todo = list(OWN)
    while todo:
        importer = todo.pop()
        for module in sorted(edges.get(importer, ())):
            if module in seen:
                continue
            seen.add(module)
            dists = {_norm(d) for d in by_module.get(module, [])} - {"vrshq"}
            for d in dists:
                needed.setdefault(d, importer)
            if module in OWN or (dists and not dists <= machine):
                todo.append(module)  # ours, or carried: what it imports is needed too
    return {"distributions": sorted(needed),
            "from_wheels": sorted(d for d in needed if d in wheels),
            "missing_on_gpu_machine": {d: f"imported by {needed[d]}" for d in sorted(needed)
                                       if d not in machine | wheels}}


def report(work: Path, out: Path, dry_run: bool) -> int:
    from bench.ls_standin import NOTE

    rows = []
    for line in (work / "stages.tsv").read_text().splitlines() if (work / "stages.tsv").is_file() else []:
        name, rc, seconds, limit = line.split("\t")
        rows.append((name, int(rc), int(seconds), int(limit)))
    ran = {r[0]: r for r in rows}
    stages: dict[str, Any] = {}
    for name in STAGES:
        if name not in ran:
            stages[name] = {"status": "not run"}
            continue
        _, rc, seconds, limit = ran[name]
        result, problem = _stage_result(name, work)
        if rc == -1:
            status, problem = "skipped", "no time left in the 8-minute budget"
        elif rc in (124, 137):
            status, problem = "timeout", f"stopped at its {limit} s limit"
        elif rc != 0:
            status = "failed"
            problem = problem or f"exit code {rc}"
        else:
            status = "failed" if problem else "ok"
        peaks = _peaks(result)
        stages[name] = {"status": status, "exit_code": rc, "seconds": seconds, "limit_s": limit,
                        "problem": problem, "gpu_peak_mib": round(max(peaks), 1) if peaks else None,
                        "numbers": dict(_numbers(name, result)), "result": result}
    env = stages.get("env", {}).get("result") or {}
    card = env.get("gpu") or "none (CPU)"
    summary = {
        "dry_run": dry_run, "card": card, "python": env.get("python"), "torch": env.get("torch"),
        "transformers": env.get("transformers"), "label_studio": NOTE,
        "all_ok": all(s["status"] == "ok" for s in stages.values()),
        "total_s": sum(r[2] for r in rows),
        "stages": stages, "imports": imported_distributions(work / "imports.jsonl"),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(summary, indent=2, default=str))
    lines = [f"vrshq GPU check{' (DRY RUN: tiny sizes on the CPU)' if dry_run else ''}: "
             f"{card}; python {env.get('python')}, torch {env.get('torch')}, "
             f"transformers {env.get('transformers')}",
             f"Label Studio: {NOTE}", ""]
    lines.append(f"{'stage':<13} {'status':<8} {'time':>6} {'limit':>6} {'GPU peak MiB':>12}  problem")
    for name, s in stages.items():
        peak = s.get("gpu_peak_mib")
        lines.append(f"{name:<13} {s['status']:<8} {s.get('seconds', '-')!s:>6} "
                     f"{s.get('limit_s', '-')!s:>6} {('-' if peak is None else peak)!s:>12}  "
                     f"{s.get('problem') or ''}")
    lines += ["", f"{'stage':<13} metric = value"]
    for name, s in stages.items():
        for metric, value in (s.get("numbers") or {}).items():
            lines.append(f"{name:<13} {metric} = {value}")
    missing = summary["imports"].get("missing_on_gpu_machine")
    if missing:
        lines += ["", "imported but neither on the GPU machine nor in the wheels: "
                  + ", ".join(f"{d} ({why})" for d, why in missing.items())]
    (out / "gpu_check.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if summary["all_ok"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("env")
    e.add_argument("--json", type=Path, required=True)
    e.add_argument("--dry-run", action="store_true")
    r = sub.add_parser("report")
    r.add_argument("--work", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "env":
        return env_stage(args.json, args.dry_run)
    return report(args.work, args.out, args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
