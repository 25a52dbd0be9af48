#!/usr/bin/env bash
# Every CUDA number of the project in one run of at most 8 minutes (README "GPU check").
#
#   bash scripts/gpu_check.sh              # on a CUDA machine
#   bash scripts/gpu_check.sh --dry-run    # the same stages with tiny sizes, on the CPU
#
# Writes to $OUT (default ./gpu-out): gpu_check.json (everything), gpu_check.txt (a short
# table), gpu_check.log (every stage's output), cuda_tests.xml (pytest's junit report).
# Stages (estimates on one H100; each has its own time limit, cut to what is left of the whole
# run's 470 s, and a stage that fails or runs out of time is recorded and the next one runs):
#   wheels        ~10 s  .gpu-wheels/*.whl (scripts/gpu_wheels.sh) into a fresh folder on
#                        PYTHONPATH, when Python is 3.12 (the set is cp312)
#   env           ~15 s  GPU, versions, every import the stages need, a bf16 matmul
#   cuda_tests    ~60 s  pytest -m cuda: engine vs sam2's predictor on the GPU (fp32 and the
#                        official bf16), official bf16 vs fp32 (hiera-t), VRS-HQ on CUDA, sam3 in
#                        its precision plan (tests/test_sam3_precision.py), a sam3 fix from
#                        stored tracker features equal to one that encodes (test_sam3_features.py)
#   engine_bench ~100 s  bench.engine_bench, hiera-L @1024 (random weights), 150 frames of
#                        1280x720: engine vs SAM2VideoPredictor, correction vs from scratch
#   vrshq_bench  ~110 s  bench.vrshq_bench --full-size: hiera-L @1024 on 100 frames of 1280x720,
#                        keyframe selection + propagation vs the official procedure, best of 2
#   roundtrip     ~80 s  bench.roundtrip_bench: 300 frames of 1280x720, the release-size SAM-2;
#                        webhook -> re-propagation -> stored prediction, with an in-process
#                        Label Studio stand-in (the machine has no Label Studio; output says so)
#   report         ~2 s  gpu_check.json / gpu_check.txt
# Exit code 0 when every stage is ok, else 1 (the files are written either way).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DRY=0
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY=1 ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) echo "gpu_check: unknown argument $arg (use --dry-run)" >&2; exit 2 ;;
    esac
done

OUT=${OUT:-$ROOT/gpu-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG="$OUT/gpu_check.log"
: >"$LOG"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vrshq-gpu-check.XXXXXX")
[ -n "${GPU_CHECK_KEEP_WORK:-}" ] || trap 'rm -rf "$WORK"' EXIT   # set it to keep WORK (debugging)
mkdir -p "$WORK/results" "$WORK/tmp"

# The Python that runs everything: $PYTHON, else the repo's .venv, else python3 (a GPU
# machine's torch environment).
if [ -n "${PYTHON:-}" ]; then
    PY=$PYTHON
elif [ -x "$ROOT/.venv/bin/python" ]; then
    PY=$ROOT/.venv/bin/python
else
    PY=python3
fi

BUDGET_S=${GPU_CHECK_BUDGET_S:-470}   # the whole run, start to report; the report needs ~5 s
START=$SECONDS
DEADLINE=$((START + BUDGET_S))
note() { echo "[gpu_check $(date +%H:%M:%S)] $*" | tee -a "$LOG" >&2; }

# --- wheels: what the GPU machine lacks, carried with the working tree (scripts/gpu_wheels.sh)
SITE_PATH=""
if [ -d "$ROOT/.gpu-wheels" ] && ls "$ROOT"/.gpu-wheels/*.whl >/dev/null 2>&1; then
    if "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
        SITE="$WORK/site"
        note "installing $(ls "$ROOT"/.gpu-wheels/*.whl | wc -l) wheels from .gpu-wheels into $SITE"
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SITE" "$ROOT"/.gpu-wheels/*.whl >>"$LOG" 2>&1 \
            || note "wheel install FAILED (see above); going on with what is installed"
        SITE_PATH=$SITE
    else
        note "not installing .gpu-wheels: they are cp312 wheels and $PY is not Python 3.12"
    fi
fi
export PYTHONPATH="$ROOT${SITE_PATH:+:$SITE_PATH}${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export TMPDIR="$WORK/tmp"
export VRSHQ_BENCH_RESULTS="$WORK/results"
export VRSHQ_CUDA_METRICS="$WORK/cuda_tests.json"
export MPLBACKEND=Agg

if [ "$DRY" = 1 ]; then
    # Tiny sizes on the CPU: the same stages and code paths, in a couple of minutes.
    export VRSHQ_CUDA_TEST_DEVICE=cpu
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    DEVICE=cpu
    ENGINE_ARGS=(--preset hiera-t-128 --frames 8 --size 160x120)
    VRSHQ_ARGS=(--sam2-preset hiera-t-128 --frames 8 --repeat 1 --reference-loading sample)
    ROUNDTRIP_ARGS=(--frames 8 --size 160x120 --sam2 tiny)
    DRY_FLAG=(--dry-run)
else
    DEVICE=cuda
    ENGINE_ARGS=(--preset hiera-l --frames 150 --size 1280x720)
    VRSHQ_ARGS=(--full-size --frames 100 --repeat 2 --reference-loading both)
    ROUNDTRIP_ARGS=(--frames 300 --size 1280x720 --sam2 release)
    DRY_FLAG=()
fi

# run_stage NAME LIMIT_S COMMAND...: run with a time limit (cut to what is left), never stop the
# script; WORK/stages.tsv gets "name, exit code (-1: not run), seconds, limit".
run_stage() {
    local name=$1 limit=$2
    shift 2
    local left=$((DEADLINE - SECONDS - 5))
    if [ "$left" -lt "$limit" ]; then limit=$left; fi
    if [ "$limit" -lt 10 ]; then
        note "$name: skipped, no time left"
        printf '%s\t%s\t%s\t%s\n' "$name" -1 0 0 >>"$WORK/stages.tsv"
        return 0
    fi
    note "$name: start (limit ${limit} s)"
    echo "===== $name: $*" >>"$LOG"
    local start=$SECONDS rc=0
    timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1 || rc=$?
    note "$name: exit code $rc after $((SECONDS - start)) s"
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" "$limit" >>"$WORK/stages.tsv"
}

# Each stage runs through bench.imports, which logs who imported what for the report.
STAGE_PY=("$PY" -m bench.imports "$WORK/imports.jsonl")
run_stage env 60 "${STAGE_PY[@]}" bench.gpu_check env --json "$WORK/env.json" ${DRY_FLAG[@]+"${DRY_FLAG[@]}"}
run_stage cuda_tests 120 "${STAGE_PY[@]}" pytest -m cuda tests/test_cuda.py tests/test_sam3_precision.py tests/test_sam3_features.py -q -p no:cacheprovider \
    --junitxml="$OUT/cuda_tests.xml" -o junit_family=xunit1
cp "$OUT/cuda_tests.xml" "$WORK/cuda_tests.xml" 2>/dev/null || true
run_stage engine_bench 150 "${STAGE_PY[@]}" bench.engine_bench --device "$DEVICE" --precision official \
    --parts reference,correction "${ENGINE_ARGS[@]}"
run_stage vrshq_bench 160 "${STAGE_PY[@]}" bench.vrshq_bench --device "$DEVICE" --precision official \
    --parts compare "${VRSHQ_ARGS[@]}"
run_stage roundtrip 130 "${STAGE_PY[@]}" bench.roundtrip_bench --device "$DEVICE" --precision official \
    "${ROUNDTRIP_ARGS[@]}"

note "report (${SECONDS}s so far)"
rc=0
"$PY" -m bench.gpu_check report --work "$WORK" --out "$OUT" ${DRY_FLAG[@]+"${DRY_FLAG[@]}"} \
    || rc=$?
note "done in $((SECONDS - START)) s; results in $OUT"
exit "$rc"
