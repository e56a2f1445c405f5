#!/usr/bin/env bash
# Creates ./.venv (if needed) and installs worldstereo into it, editable.
#   bash scripts/bootstrap.sh        -> library + CLI
#   bash scripts/bootstrap.sh test   -> plus the test dependencies, and Debian's `chromium` for the browser
#                                       tests of `worldstereo app` (apt-get, when root; else they are skipped)
# PyTorch is pinned first (2.13.0) so that pip does not pick another build for it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  .venv/bin/pip install --quiet "torch==2.13.0"
fi
extras=""
if [ "${1:-}" = "test" ]; then
  extras="[test]"
fi
.venv/bin/pip install --quiet -e ".${extras}"

if [ "${1:-}" = "test" ] && ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium (Debian package) for the browser tests of worldstereo app ..."
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "warning: could not install chromium; the browser tests (tests/app/test_browser.py) will be skipped"
  else
    echo "note: no chromium executable; the browser tests (tests/app/test_browser.py) will be skipped" \
         "(install it: apt-get install -y chromium, or set WORLDSTEREO_CHROMIUM=/path/to/chromium)"
  fi
fi
