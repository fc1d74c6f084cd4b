#!/usr/bin/env bash
# Two web processes behind one Redis backplane and a worker process, sharing one SQLite file:
#   http://127.0.0.1:8001 and http://127.0.0.1:8002 (PORTS="8001 8002", as many as you like)
# Open one in each window (or sign in as admin on either): a job started through one updates
# the pages of the other. Each web process runs an outbox relay (a row is published by one of
# them); the worker writes its progress and the events into the outbox, and never talks to a
# hub. It starts a private redis-server on port 6390 (REDIS_PORT), or uses REDIS_URL if you
# set it. WORKERS=2 runs two workers. Ctrl-C stops everything.
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
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "${REDIS_URL:-}" ]; then
  port="${REDIS_PORT:-6390}"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
    --logfile "$work/redis.log" &
  pids+=($!)
  REDIS_URL="redis://127.0.0.1:$port/0"
fi

export LIVEUPDATES_BACKPLANE="$REDIS_URL"
export JOBS_DB="${JOBS_DB:-$work/jobs.sqlite3}"  # the session secret is kept beside it
urls=()
for port in ${PORTS:-8001 8002}; do
  # --ws-max-size: twice the hub's max_frame_bytes (docs/operating.md, "Frame size")
  .venv/bin/python -m examples.jobs_dashboard --port "$port" --ws-max-size 131072 &
  pids+=($!)
  urls+=("http://127.0.0.1:$port")
done
for _ in $(seq "${WORKERS:-1}"); do
  .venv/bin/python -m examples.jobs_dashboard.worker &
  pids+=($!)
done
echo "==> ${urls[*]} (Redis $REDIS_URL, database $JOBS_DB)"
wait -n
