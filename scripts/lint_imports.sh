#!/usr/bin/env bash
# Import contracts (pyproject.toml) over the package as installed, read from the link tree
# scripts/stage.sh builds (import-linter walks a package's own folder).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHONPATH=$(bash scripts/stage.sh) exec .venv/bin/lint-imports --no-cache "$@"
