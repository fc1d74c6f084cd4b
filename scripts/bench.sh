#!/usr/bin/env bash
# The delivery benchmark from a fresh clone: installs redis-server if missing and a virtualenv
# with the dev dependency group (which includes the bench group: broadcaster, python-socketio),
# then runs every stack at N = 100, 1,000 and 5,000 on the dashboard workload and on the tick
# workload (writing each one's plots to docs/img), the clients that offer permessage-deflate as Chromium
# does (N = 1,000), the idle scenario (about 20,000 idle connections on one process, one
# broadcast to all) and the scale-out over 4 hub processes sharing one Redis (docs/benchmarks.md).
# Arguments go to the first run, e.g.: bash scripts/bench.sh -n 100 1000 --json /tmp/bench.json
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
apt_install_missing ${missing[@]+"${missing[@]}"}
python_env redis,prometheus,postgres,examples,cli dev

echo "==> delivery benchmark, the dashboard workload (each stack, each N)"
.venv/bin/python -m benchmarks.delivery --plots docs/img "$@"
echo "==> delivery benchmark, the tick workload (each stack, each N)"
.venv/bin/python -m benchmarks.delivery --workload tick --plots docs/img
echo "==> connections as browsers open them (permessage-deflate)"
.venv/bin/python -m benchmarks.delivery -n 1000 --stacks bare bare-browser liveupdates-memory \
  liveupdates-memory-browser liveupdates-memory-browser-window9 liveupdates-memory-browser-off
echo "==> idle connections"
.venv/bin/python -m benchmarks.delivery --idle 20000
echo "==> several hub processes on one port, one Redis"
.venv/bin/python -m benchmarks.scale_out -n 60000 --processes 4
