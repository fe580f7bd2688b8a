#!/usr/bin/env bash
# Set up (idempotent), check the code, and run the test suite headless.
#   bash scripts/test.sh           every tier (README's command, what CI runs)
#   bash scripts/test.sh --fast    the developer's loop: tests not marked slow or toolchain (<= 3 min on 2 cores)
# Further arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
fast=()
if [ "${1:-}" = "--fast" ]; then
  shift
  fast=(-m "not slow and not toolchain")
fi
bash scripts/setup.sh
# the HTML report is tested in a real headless Chromium (tests/test_report_browser.py; skipped without one)
if [ ${#fast[@]} -eq 0 ] && ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null \
    && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "test: installing Debian's chromium for the report's browser test"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "test: warning: could not install chromium; the browser test will be skipped" >&2
fi
echo "== ruff"; .venv/bin/ruff check .
echo "== mypy (layerscope.profiler, layerscope.cli, layerscope.app)"; bash scripts/typecheck.sh
echo "== import contracts"; bash scripts/lint_imports.sh
echo "== pytest"; QT_QPA_PLATFORM=offscreen .venv/bin/python -m pytest -q ${fast[@]+"${fast[@]}"} "$@"
