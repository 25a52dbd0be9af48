#!/usr/bin/env bash
# Debian's PostgreSQL server, for the corrections-log tests on a real server (the tests start
# their own cluster in a temporary folder). Idempotent: nothing to do when initdb is there.
set -euo pipefail
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "setup: installing Debian's postgresql" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -q >/dev/null
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null
fi
ls /usr/lib/postgresql/*/bin/postgres >/dev/null
