#!/usr/bin/env bash
# Set up omnisparse on a fresh Debian machine. Safe to re-run: every step checks before it acts.
#   system packages: speech engines (espeak-ng, festival + festvox-kdlpc16k, mbrola voices, pico2wave),
#   sox (audio effects), text (fortunes, wordnet-base, dict-jargon, dict-gcide, bible-kjv-text), music for noise
#   (asterisk-moh-opsound-wav); contrib + non-free are enabled in the Debian sources for mbrola / pico
#   Python: a virtual environment at $OMNISPARSE_VENV (default .venv), torch==2.13.0 installed
#   first and alone so no dependency can resolve a CUDA build, then the package (with test extras).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${OMNISPARSE_VENV:-.venv}
PY=${PYTHON:-python3}

SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"

# The corpus engines MBROLA (contrib + non-free) and pico (non-free) are not in Debian main: add the
# two components to the Debian sources when they are missing. Where that is not possible the
# corpus is built without those engines (each build says which engines it left out).
SOURCES=/etc/apt/sources.list.d/debian.sources
if [ -w "$SOURCES" ] || [ -n "$SUDO" ]; then
  if [ -f "$SOURCES" ] && grep -q '^Components: main$' "$SOURCES"; then
    echo "[setup] enabling Debian contrib and non-free in $SOURCES (for mbrola voices and pico2wave)"
    $SUDO sed -i 's/^Components: main$/Components: main contrib non-free/' "$SOURCES" || \
      echo "[setup] could not edit $SOURCES: the corpus will be built without mbrola and pico"
  fi
fi

have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
need_apt=()
command -v espeak-ng >/dev/null 2>&1 || need_apt+=(espeak-ng)
command -v sox >/dev/null 2>&1 || need_apt+=(sox libsox-fmt-all)
[ -d /usr/share/games/fortunes ] || need_apt+=(fortunes fortune-mod)
# corpus v2: more engines (festival + its US diphone voice, MBROLA voices, pico) and text sources
for p in festival festvox-kdlpc16k wordnet-base dict-jargon dict-gcide bible-kjv-text asterisk-moh-opsound-wav; do
  have_pkg "$p" || need_apt+=("$p")
done
optional_apt=()
for p in mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1 libttspico-utils; do
  have_pkg "$p" || optional_apt+=("$p")
done
if [ ${#need_apt[@]} -gt 0 ] || [ ${#optional_apt[@]} -gt 0 ]; then
  echo "[setup] apt-get install ${need_apt[*]} ${optional_apt[*]}"
  $SUDO apt-get update -qq
  if [ ${#need_apt[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  fi
  if [ ${#optional_apt[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${optional_apt[@]}" >/dev/null || \
      echo "[setup] contrib/non-free packages unavailable (${optional_apt[*]}): the corpus is built without mbrola / pico"
  fi
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
"${PIP[@]}" -e ".[tts,test]"
echo "[setup] done: $VENV/bin/omnisparse"
