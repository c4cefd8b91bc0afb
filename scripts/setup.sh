#!/usr/bin/env bash
# Set up omnisparse on a fresh Debian machine. Safe to re-run: every step checks before it acts.
#   system packages: espeak-ng (speech), sox (audio effects), fortune-mod + fortunes (text)
#   Python: a virtual environment at $OMNISPARSE_VENV (default .venv), torch==2.13.0 installed
#   first and alone so no dependency can resolve a CUDA build, then the package (with test extras).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${OMNISPARSE_VENV:-.venv}
PY=${PYTHON:-python3}

need_apt=()
command -v espeak-ng >/dev/null 2>&1 || need_apt+=(espeak-ng)
command -v sox >/dev/null 2>&1 || need_apt+=(sox libsox-fmt-all)
[ -d /usr/share/games/fortunes ] || need_apt+=(fortunes fortune-mod)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "[setup] apt-get install ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null; then
  echo "[setup] installing torch==2.13.0 (CPU wheel)"
  "${PIP[@]}" "torch==2.13.0"
fi
echo "[setup] installing omnisparse and its dependencies"
"${PIP[@]}" -e ".[test]"
echo "[setup] done: $VENV/bin/omnisparse"
