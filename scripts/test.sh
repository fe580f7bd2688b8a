#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite headless.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
QT_QPA_PLATFORM=offscreen .venv/bin/python -m pytest -q "$@"
