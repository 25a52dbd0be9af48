"""The load bench on a real `vrshq serve` with small numbers, and its correctness checker."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import load_bench as lb
from vrshq.backend.labelstudio.predictions import track_region_id

REQUESTS, CONCURRENCY = 8, 4


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory) -> tuple[int, dict, list[lb.Outcome], Path]:
    """One bench run through main(): exit code, the JSON it wrote, the outcomes, the work folder."""
    work = tmp_path_factory.mktemp("load-bench")
    out = work / "load.json"
    kept: dict = {}
    real_run = lb.run

    def spy(args):  # main() drops the outcomes; keep them for the checker tests
        kept["result"] = real_run(args)
        return kept["result"]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lb, "run", spy)
        code = lb.main(["--requests", str(REQUESTS), "--concurrency", str(CONCURRENCY), "--threads", "2",
                        "--videos", "3", "--timeout", "240", "--work", str(work), "--out", str(out)])
    return code, json.loads(out.read_text()), kept["result"][1], work


@pytest.mark.timeout(300)
def test_bench_runs_clean_and_reports_percentiles(bench_run):
    code, report, outcomes, _ = bench_run
    assert code == 0, report["problems"]
    assert report["mismatches"] == 0 and not report["timed_out"] and report["problems"] == []
    assert [p["phase"] for p in report["phases"]] == ["sequential", "concurrent", "again"]
    for phase in report["phases"]:
        assert phase["requests"] == phase["completed"] == phase["ok"] == REQUESTS
        assert phase["mismatches"] == 0
        assert 0 < phase["p50_s"] <= phase["p95_s"] <= phase["p99_s"]
    assert [p["concurrency"] for p in report["phases"]] == [1, CONCURRENCY, CONCURRENCY]
    assert report["server"]["exit_code"] == 0 and report["machine"]["cpu"]
    assert len(report["videos"]) == 3
    # Every request of every phase came back and was checked against its own task.
    assert len(outcomes) == 3 * REQUESTS
    for k, name in enumerate(("sequential", "concurrent", "again")):
        phase = outcomes[k * REQUESTS:(k + 1) * REQUESTS]
        assert len({o.task.id for o in phase}) == REQUESTS, name
        assert all(o.error is None and lb.check_response(o.task, o.status, o.body) == [] for o in phase), name
    sequential, concurrent, again = (outcomes[k * REQUESTS:(k + 1) * REQUESTS] for k in range(3))
    assert {o.task.id for o in concurrent} == {o.task.id for o in again}
    assert not {o.task.id for o in sequential} & {o.task.id for o in concurrent}
    # The model tracked every object-frame of the first two phases and none in the third: the
    # same tasks asked again were answered from the saved predictions, with the same answers.
    work = [o.task.frames * len(o.task.prompts) for o in sequential]
    assert [p["frames_tracked"] for p in report["phases"]] == [sum(work), sum(work), 0]
    first = {o.task.id: o.body for o in concurrent}
    assert all(o.body == first[o.task.id] for o in again)


def _two_different(outcomes: list[lb.Outcome]) -> tuple[lb.Outcome, lb.Outcome]:
    """Two answers for tasks on different videos with different numbers of objects."""
    for a in outcomes:
        for b in outcomes:
            if a.task.video != b.task.video and len(a.task.prompts) != len(b.task.prompts):
                return a, b
    raise AssertionError("the bench made no two tasks that differ in video and object count")


@pytest.mark.timeout(300)
def test_checker_accepts_each_answer_and_refuses_a_swapped_one(bench_run):
    _, _, outcomes, _ = bench_run
    for o in outcomes:
        assert lb.check_response(o.task, o.status, o.body) == []
    a, b = _two_different(outcomes)
    problems = lb.check_response(a.task, b.status, b.body)
    text = "\n".join(problems)
    assert f"task {a.task.id}" in text and "track ids" in text and "framesCount" in text
    assert "mask (" in text  # the other video's mask size
    # Swapping two responses in a phase counts both as mismatches.
    swapped = [lb.Outcome(a.task, 0.1, 200, b.body), lb.Outcome(b.task, 0.1, 200, a.body)]
    row, found = lb.summarize("swapped", swapped, 1.0, 2, 2, False)
    assert row["mismatches"] == 2 and row["ok"] == 0 and found


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mutation", ["frames", "mask_size", "rle", "label", "drop_object", "task_id",
                                      "status", "errors", "page_label", "page_owner"])
def test_checker_sees_each_kind_of_wrong_answer(bench_run, mutation):
    _, _, outcomes, _ = bench_run
    o = next(x for x in outcomes if len(x.task.prompts) >= 2)
    body, status = copy.deepcopy(o.body), o.status
    results = body["results"][0]["result"]
    track = next(r for r in results if r["type"] == "videorectangle")
    mask = next(r for r in results if r["type"] == "brushlabels")
    if mutation == "frames":
        track["value"]["framesCount"] += 1
    elif mutation == "mask_size":
        mask["original_width"] += 1
    elif mutation == "rle":
        mask["value"]["rle"] = mask["value"]["rle"][: len(mask["value"]["rle"]) // 2]
    elif mutation == "label":
        track["value"]["labels"] = ["Object" if track["value"]["labels"] != ["Object"] else "Car"]
    elif mutation == "drop_object":
        last = f"vrshq-{o.task.id}-{len(o.task.prompts)}"  # its track, keyframe mask and pages
        results[:] = [r for r in results if track_region_id(r["id"]) != last]
    elif mutation == "task_id":
        track["id"] = track["id"].replace(f"-{o.task.id}-", f"-{o.task.id + 1}-")
    elif mutation in ("page_label", "page_owner"):  # an extra mask page (VRSHQ_MASK_PAGES)
        page = next(r for r in results if r["type"] == "brushlabels" and r["id"] != track_region_id(r["id"]) + "-mask")
        if mutation == "page_label":
            page["value"]["brushlabels"] = ["Object" if page["value"]["brushlabels"] != ["Object"] else "Car"]
        else:
            page["id"] = page["id"].replace(f"-{o.task.id}-", f"-{o.task.id + 1}-")
    elif mutation == "status":
        status = 500
    else:
        body["errors"] = {str(o.task.id): "boom"}
    assert lb.check_response(o.task, status, body), mutation


def test_bad_arguments_are_one_line_and_exit_2(capsys):
    for argv in (["--requests", "0"], ["--concurrency", "many"], ["--videos", "99"], ["--nope"]):
        assert lb.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("load_bench: error:"), (argv, err)


@pytest.mark.timeout(120)
def test_runs_as_a_module_and_stops_at_its_deadline(bench_run):
    _, _, _, work = bench_run
    # The models and videos exist already, so the 1 s deadline expires while the server boots.
    done = subprocess.run([sys.executable, "-m", "bench.load_bench", "--timeout", "1", "--videos", "3",
                           "--work", str(work), "--out", str(work / "never.json")],
                          check=False, capture_output=True, text=True, timeout=100,
                          cwd=Path(lb.__file__).resolve().parents[1])
    assert done.returncode == 1, done.stderr[-2000:]
    assert done.stderr.startswith("load_bench: error:") and "deadline" in done.stderr.splitlines()[0]
    assert "Traceback" not in done.stderr and not (work / "never.json").exists()
