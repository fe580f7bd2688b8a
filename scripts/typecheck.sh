#!/usr/bin/env bash
# mypy over the headless core, the CLI and the desktop app, under the names users import them by
# (from the link tree scripts/stage.sh builds).
set -euo pipefail
cd "$(dirname "$0")/.."
stage=$(bash scripts/stage.sh)
cd "$stage"
exec ../../.venv/bin/python -m mypy --config-file ../../pyproject.toml --cache-dir ../mypy-cache \
  -p layerscope.profiler -p layerscope.cli -p layerscope.app "$@"
