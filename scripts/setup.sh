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

# python_env EXTRAS [GROUP]: a .venv with this package installed, editable, with the extras
# given, and the development dependency group GROUP if given (pyproject's [dependency-groups],
# PEP 735, which `pip install --group` reads from pip 25.1 on: pip is upgraded first).
python_env() {
  if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv"
    python3 -m venv .venv
  fi
  echo "==> installing Python packages"
  .venv/bin/python -m pip install -q --upgrade "pip>=25.1"
  .venv/bin/python -m pip install -q -e ".[$1]" ${2:+--group "$2"}
}
