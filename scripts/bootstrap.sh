#!/usr/bin/env bash
# Creates ./.venv (if needed) and installs worldstereo into it, editable.
#   bash scripts/bootstrap.sh        -> library + CLI
#   bash scripts/bootstrap.sh test   -> plus the test dependencies
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
