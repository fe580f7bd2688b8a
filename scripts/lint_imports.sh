#!/usr/bin/env bash
# Import contracts (pyproject.toml) over the package as installed: `layerscope` is api/ with profiler/, cli/, app/
# and assets/ inside it. import-linter walks a package's own folder, so it reads a tree of links in build/lint.
set -euo pipefail
cd "$(dirname "$0")/.."
stage=build/lint/layerscope
rm -rf build/lint && mkdir -p "$stage"
for d in profiler cli app assets; do ln -s "../../../$d" "$stage/$d"; done
for f in api/*.py; do ln -s "../../../$f" "$stage/$(basename "$f")"; done
PYTHONPATH=build/lint exec .venv/bin/lint-imports --no-cache "$@"
