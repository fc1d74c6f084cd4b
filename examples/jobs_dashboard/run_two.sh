#!/usr/bin/env bash
# Two dashboard processes behind one Redis backplane, sharing one SQLite file:
#   http://127.0.0.1:8001 and http://127.0.0.1:8002
# Open one in each window (or sign in as admin on either): a job started through one updates
# the pages of the other. Both run a worker; a job is claimed in the database, so it runs once.
# It starts a private redis-server on port 6390 (REDIS_PORT), or uses REDIS_URL if you set it.
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/../.."
WITH_REDIS=1 bash scripts/demo.sh --prepare

work="$(mktemp -d -t liveupdates-two-XXXXXX)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

if [ -z "${REDIS_URL:-}" ]; then
  port="${REDIS_PORT:-6390}"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
    --logfile "$work/redis.log" &
  pids+=($!)
  REDIS_URL="redis://127.0.0.1:$port/0"
fi

export LIVEUPDATES_BACKPLANE="$REDIS_URL"
export JOBS_DB="${JOBS_DB:-$work/jobs.sqlite3}"
export JOBS_SECRET="${JOBS_SECRET:-$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(16))')}"
export JOBS_FAILURE_RATE="${JOBS_FAILURE_RATE:-0.005}"
for port in 8001 8002; do
  # --ws-max-size: twice the hub's max_frame_bytes (docs/operating.md, "Frame size")
  .venv/bin/python -m examples.jobs_dashboard --port "$port" --ws-max-size 131072 &
  pids+=($!)
done
echo "==> http://127.0.0.1:8001 and http://127.0.0.1:8002 (Redis $REDIS_URL, database $JOBS_DB)"
wait -n
