#!/usr/bin/env bash
# Runs the jobs dashboard (examples/jobs_dashboard) on http://127.0.0.1:8000: one process, the
# in-memory backplane, jobs in a SQLite file of the temporary directory. From a fresh clone on
# a fresh machine it installs what it needs first: Debian packages, a virtualenv with the
# Python packages, the npm packages, and the front end's build.
#   bash scripts/demo.sh              install, build and run
#   bash scripts/demo.sh --prepare    install and build only (examples/jobs_dashboard/run_two.sh)
# Settings: PORT, and the JOBS_* variables of examples/jobs_dashboard/settings.py.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

missing=()
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ "${1:-}" = "--prepare" ] && [ -n "${WITH_REDIS:-}" ]; then
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
fi
apt_install_missing ${missing[@]+"${missing[@]}"}
python_env examples,redis
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "==> installing npm packages"
  npm ci --no-audit --no-fund --loglevel=error
fi
echo "==> building the front end"
node examples/jobs_dashboard/build.mjs

if [ "${1:-}" = "--prepare" ]; then
  exit 0
fi
export JOBS_FAILURE_RATE="${JOBS_FAILURE_RATE:-0.005}"  # now and then a job fails on its own
# --ws-max-size: uvicorn reads a WebSocket frame whole before the hub can refuse it (16 MiB by
# default); twice the hub's max_frame_bytes bounds it (docs/operating.md, "Frame size").
exec .venv/bin/python -m examples.jobs_dashboard --port "${PORT:-8000}" --ws-max-size 131072
