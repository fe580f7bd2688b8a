#!/usr/bin/env bash
# Set up (idempotent), check the code, and run the whole test suite headless.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== ruff"; .venv/bin/ruff check .
echo "== mypy (layerscope.profiler, layerscope.cli)"; bash scripts/typecheck.sh
echo "== import contracts"; bash scripts/lint_imports.sh
echo "== pytest"; QT_QPA_PLATFORM=offscreen .venv/bin/python -m pytest -q "$@"
