#!/usr/bin/env bash
# Label Studio beside .venv (scripts/setup.sh), for `vrshq studio` and the tests:
#   * .venv-ls: Label Studio 1.23.2 in a venv of its own (its pins conflict with ours);
# and with --with-browser (the tests, .ci/run):
#   * Debian's chromium at /usr/bin/chromium (the headless browser of tests/browser/);
#   * tests/browser/node_modules: playwright-core (npm), which drives that chromium.
# Idempotent: a second run only checks what is there. Never downloads a browser build
# (no `npx playwright install`): playwright-core runs Debian's chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv-ls"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
LS_VERSION=1.23.2

# --- Label Studio ----------------------------------------------------------------------
# Not `label-studio --version`: it prints the version, then migrates a database in the user's data
# dir and starts a server on port 8080.
ls_version() {
    "$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('label-studio'))" 2>/dev/null
}
if [ -x "$VENV/bin/label-studio" ] && [ "$(ls_version)" = "$LS_VERSION" ]; then
    :
else
    echo "setup-ls: installing label-studio==$LS_VERSION into $VENV (a few minutes)" >&2
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    # This machine's pip config names local wheel folders that may not exist: drop that noise only.
    "$VENV/bin/python" -m pip install --quiet "label-studio==$LS_VERSION" \
        2> >(grep -v "^WARNING: Location" >&2)
    [ -x "$VENV/bin/label-studio" ] && [ "$(ls_version)" = "$LS_VERSION" ] || {
        echo "setup-ls: label-studio $LS_VERSION is not installed in $VENV" >&2
        exit 1
    }
fi

[ "${1:-}" = "--with-browser" ] || exit 0

# --- chromium (Debian) -----------------------------------------------------------------
if [ ! -x /usr/bin/chromium ]; then
    echo "setup-ls: installing Debian's chromium" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -q >/dev/null
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
fi
/usr/bin/chromium --version >/dev/null 2>&1 || { echo "setup-ls: /usr/bin/chromium does not run" >&2; exit 1; }

# --- playwright-core (npm) -------------------------------------------------------------
command -v npm >/dev/null 2>&1 || {
    echo "setup-ls: npm is missing (apt-get install nodejs npm)" >&2
    exit 1
}
BROWSER_DIR="$ROOT/tests/browser"
want=$(sed -n 's/.*"playwright-core": *"\([^"]*\)".*/\1/p' "$BROWSER_DIR/package.json" | head -n1)
have=$(sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' \
    "$BROWSER_DIR/node_modules/playwright-core/package.json" 2>/dev/null | head -n1 || true)
if [ -z "$have" ] || [ "$have" != "$want" ]; then
    echo "setup-ls: installing playwright-core $want in tests/browser" >&2
    cd "$BROWSER_DIR"
    export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
    if [ -f package-lock.json ]; then
        npm ci --no-audit --no-fund --loglevel=error
    else
        npm install --no-audit --no-fund --loglevel=error
    fi
    cd "$ROOT"
fi
