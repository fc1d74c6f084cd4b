#!/usr/bin/env bash
# The whole test suite, from a fresh clone on a fresh machine: installs what it needs (Debian
# packages, a virtualenv with the Python packages, the npm packages), then runs ruff, mypy
# --strict, the docs build, the JavaScript tests and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
[ -x /usr/bin/chromium ] || missing+=(chromium)
apt_install_missing ${missing[@]+"${missing[@]}"}
python_env redis,prometheus,postgres,examples,cli dev

if [ -f package.json ]; then
  echo "==> installing npm packages"
  npm ci --no-audit --no-fund --loglevel=error
  echo "==> building the dashboard's front end"
  node examples/jobs_dashboard/build.mjs
fi

echo "==> ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "==> mypy --strict"
.venv/bin/mypy
export NO_MKDOCS_2_WARNING=1
echo "==> mkdocs build --strict"
.venv/bin/mkdocs build --strict --quiet --site-dir "$(mktemp -d)"
if [ -f package.json ]; then
  echo "==> JavaScript tests"
  npm run --silent typecheck
  npm test --silent
fi
echo "==> pytest"
.venv/bin/pytest "$@"
