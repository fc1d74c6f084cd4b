#!/usr/bin/env bash
# Runs the example app on http://127.0.0.1:8000 (in-memory backplane, nothing else to start).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[examples]'
echo "==> open http://127.0.0.1:${PORT:-8000}"
exec .venv/bin/uvicorn examples.minimal.app:app --host 127.0.0.1 --port "${PORT:-8000}"
