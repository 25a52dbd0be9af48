#!/usr/bin/env bash
# Debian's redis-server, for the job-queue tests (a real Redis, started by the tests themselves).
# Idempotent: nothing to do when /usr/bin/redis-server is there.
set -euo pipefail
if [ ! -x /usr/bin/redis-server ]; then
    echo "setup: installing Debian's redis-server" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -q >/dev/null
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >/dev/null
fi
/usr/bin/redis-server --version >/dev/null
