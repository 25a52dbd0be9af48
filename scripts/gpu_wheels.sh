#!/usr/bin/env bash
# Download or build, into .gpu-wheels/ (ignored by git), the cp312 x86-64 wheels that a GPU
# machine lacks for scripts/gpu_check.sh: the list in scripts/gpu_wheels.txt (sam2 built here
# without its CUDA extension, open_clip, decord, av, pycocotools, the backend's packages, ...).
#
#   bash scripts/gpu_wheels.sh [DEST]      # DEST defaults to .gpu-wheels
#
# Needs a registry (pip's configured index) and a Python with pip and venv ($PYTHON, else
# .venv/bin/python, else python3), of any version: pip downloads for 3.12, and the sdists are
# pure Python, built in a throwaway venv with setuptools and wheel. Checks every wheel's tags (cp312 / abi3 / py3, manylinux x86-64 or any),
# one wheel per listed package, and that the wheels plus the working tree that travels with them
# stay under the GPU machine's 64 MiB; prints the sizes. gpu_check.sh installs them on the machine
# with pip install --no-index --no-deps --target (README "GPU check").
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DEST=${1:-.gpu-wheels}
LIST=scripts/gpu_wheels.txt
LIMIT=$((64 * 1024 * 1024))
if [ -n "${PYTHON:-}" ]; then
    PY=$PYTHON
elif [ -x .venv/bin/python ]; then
    PY=.venv/bin/python
else
    PY=python3
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/vrshq-gpu-wheels.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/wheels"

PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux2010_x86_64 manylinux1_x86_64; do
    PLATFORMS+=(--platform "$p")
done
# pip's own chatter about this machine's optional wheel folders is noise here.
pip_quiet() { "$PY" -m pip "$@" 2> >(grep -v "^WARNING: Location" >&2); }

binary=() pure=() build=()
while read -r spec how _; do
    case "$spec" in ''|'#'*) continue ;; esac
    case "${how:-binary}" in
        binary|'#'*) binary+=("$spec") ;;
        pure) pure+=("$spec") ;;
        build) build+=("$spec") ;;
        *) echo "gpu_wheels: $LIST: unknown kind '$how' for $spec" >&2; exit 2 ;;
    esac
done <"$LIST"

echo "gpu_wheels: downloading ${#binary[@]} wheels for cp312 manylinux x86-64" >&2
pip_quiet download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d "$TMP/wheels" "${binary[@]}"
if [ "${#pure[@]}" -gt 0 ]; then
    echo "gpu_wheels: downloading ${#pure[@]} pure-Python wheels" >&2
    pip_quiet download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation py \
        --platform any -d "$TMP/wheels" "${pure[@]}"
fi
if [ "${#build[@]}" -gt 0 ]; then
    # A throwaway build environment with just setuptools and wheel: the sdists build without
    # isolation, since sam2's declares torch as a build requirement that SAM2_BUILD_CUDA=0 never
    # uses (setup.py then builds no extension), and isolation would download torch for nothing.
    "$PY" -m venv "$TMP/build-env"
    BUILD_PY=$TMP/build-env/bin/python
    BUILD_PIP() { "$BUILD_PY" -m pip "$@" 2> >(grep -v "^WARNING: Location" >&2); }
    BUILD_PIP install -q --disable-pip-version-check "setuptools>=70.1" wheel
    for spec in "${build[@]}"; do
        echo "gpu_wheels: building $spec from its sdist" >&2
        mkdir -p "$TMP/sdist"
        BUILD_PIP download -q --no-deps --no-binary=:all: --no-build-isolation -d "$TMP/sdist" "$spec"
        SAM2_BUILD_CUDA=0 BUILD_PIP wheel -q --no-deps --no-build-isolation -w "$TMP/wheels" \
            "$TMP/sdist/"*
        rm -rf "$TMP/sdist"
    done
fi

# Check the set: tags, one wheel per package, sizes.
"$PY" - "$TMP/wheels" "$LIST" "$LIMIT" <<'EOF'
import re, subprocess, sys
from pathlib import Path

wheels, listing, limit = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
wanted = {}
for line in listing.read_text().splitlines():
    line = line.split("#", 1)[0].strip()
    if line:
        name, version = line.split()[0].split("==")
        wanted[norm(name)] = version
found, problems = {}, []
for w in sorted(wheels.glob("*.whl")):
    parts = w.name[:-4].split("-")
    name, version, (py, abi, plat) = norm(parts[0]), parts[1], parts[-3:]
    ok_py = any(t in ("py3", "py2", "cp312") or (re.fullmatch(r"cp3(\d+)", t) and abi == "abi3"
                and int(t[3:]) <= 12) for t in py.split("."))
    ok_abi = any(t in ("none", "abi3", "cp312") for t in abi.split("."))
    ok_plat = any(t == "any" or re.fullmatch(r"manylinux(1|2010|2014|_2_\d+)_x86_64", t)
                  for t in plat.split("."))
    if not (ok_py and ok_abi and ok_plat):
        problems.append(f"{w.name}: not a wheel for CPython 3.12 on x86-64 Linux")
    if name in found:
        problems.append(f"two wheels of {name}")
    found[name] = (version, w.stat().st_size, w.name)
    if wanted.get(name) != version:
        problems.append(f"{w.name}: {name}=={version} is not in {listing} as such")
problems += [f"no wheel for {n}=={v}" for n, v in wanted.items() if n not in found]
total = sum(s for _, s, _ in found.values())
tree = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                      capture_output=True, check=True).stdout.split(b"\0")
tree_bytes = sum(Path(p.decode()).stat().st_size for p in tree if p and Path(p.decode()).is_file())
for name, (version, size, file) in sorted(found.items(), key=lambda x: -x[1][1]):
    print(f"{size / 2**20:8.2f} MiB  {file}")
print(f"{total / 2**20:8.2f} MiB  {len(found)} wheels")
print(f"{tree_bytes / 2**20:8.2f} MiB  the working tree that travels with them")
print(f"{(total + tree_bytes) / 2**20:8.2f} MiB  together (the GPU machine takes 64 MiB)")
if total + tree_bytes > limit:
    problems.append(f"wheels + working tree = {(total + tree_bytes) / 2**20:.2f} MiB, over 64 MiB")
if problems:
    print("gpu_wheels: " + "\ngpu_wheels: ".join(problems), file=sys.stderr)
    sys.exit(1)
EOF

rm -rf "$DEST"
mkdir -p "$(dirname "$DEST")"
mv "$TMP/wheels" "$DEST"
echo "gpu_wheels: $(ls "$DEST"/*.whl | wc -l) wheels in $DEST" >&2
