# Shared by scripts/test.sh and scripts/demo.sh (sourced, not run).

# apt_install_missing PACKAGE...: install the Debian packages given, if any (root or sudo).
apt_install_missing() {
  [ $# -gt 0 ] || return 0
  echo "==> installing Debian packages: $*"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"
}

# python_env EXTRAS: a .venv with this package installed, editable, with the extras given.
python_env() {
  if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv"
    python3 -m venv .venv
  fi
  echo "==> installing Python packages"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[$1]"
}
