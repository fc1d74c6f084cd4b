#!/usr/bin/env bash
# The delivery benchmark from a fresh clone: installs redis-server if missing and a virtualenv
# with the dev dependency group (which includes the bench group: broadcaster, python-socketio),
# then runs every stack at N = 100, 1,000 and 5,000 (writing the plots to docs/img), then the
# idle scenario (about 20,000 idle connections on one process, one broadcast to all).
# Arguments go to the first run, e.g.: bash scripts/bench.sh -n 100 1000 --json /tmp/bench.json
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
apt_install_missing ${missing[@]+"${missing[@]}"}
python_env redis,prometheus,postgres,examples,cli dev

echo "==> delivery benchmark (each stack, each N)"
.venv/bin/python -m benchmarks.delivery --plots docs/img "$@"
echo "==> idle connections"
.venv/bin/python -m benchmarks.delivery --idle 20000
