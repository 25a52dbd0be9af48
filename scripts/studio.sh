#!/usr/bin/env bash
# The README's first command: set up .venv and .venv-ls, then run Label Studio + the vrshq backend
# locally with a sample project (`vrshq studio`; flags pass through, e.g. --port, --model, --check).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/setup_labelstudio.sh
exec .venv/bin/vrshq studio "$@"
