#!/usr/bin/env bash
# Runs the jobs dashboard (examples/jobs_dashboard) on http://127.0.0.1:8000: a web process
# (the in-memory backplane, and the outbox relay) and a worker process, jobs in a SQLite file
# of the temporary directory. From a fresh clone on a fresh machine it installs what it needs
# first: Debian packages, a virtualenv with the Python packages, the npm packages, and the
# front end's build. The next start skips the installs as long as pyproject.toml and
# package-lock.json are unchanged (their hashes are kept in .venv/.demo-installed).
#   bash scripts/demo.sh              install if needed, build and run
#   bash scripts/demo.sh --prepare    install and build only (examples/jobs_dashboard/run_two.sh)
# Settings: PORT, and the JOBS_* variables of examples/jobs_dashboard/settings.py (random
# failures, say: JOBS_FAILURE_RATE=0.005).
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

stamp=.venv/.demo-installed
wanted="$(cat pyproject.toml package-lock.json | sha256sum | cut -d' ' -f1) $(python3 --version)"
if [ -x .venv/bin/python ] && [ -f node_modules/.package-lock.json ] \
  && [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]; then
  echo "==> Python and npm packages up to date (pyproject.toml, package-lock.json unchanged)"
else
  python_env examples,redis
  echo "==> installing npm packages"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$wanted" >"$stamp"
fi
echo "==> building the front end"
node examples/jobs_dashboard/build.mjs

if [ "${1:-}" = "--prepare" ]; then
  exit 0
fi

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM
.venv/bin/python -m examples.jobs_dashboard.worker &
pids+=($!)
# --ws-max-size: uvicorn reads a WebSocket frame whole before the hub can refuse it (16 MiB by
# default); twice the hub's max_frame_bytes bounds it (docs/operating.md, "Frame size").
.venv/bin/python -m examples.jobs_dashboard --port "${PORT:-8000}" --ws-max-size 131072 &
pids+=($!)
wait -n  # either stopping stops both
