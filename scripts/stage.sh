#!/usr/bin/env bash
# The one place the repo's folders become the package users import. `layerscope` is api/, with
# profiler/, cli/, app/ and assets/ inside it (pyproject's package-dir); an editable install maps
# them with an import hook that mypy, import-linter and PyInstaller cannot follow. This builds
# build/stage/layerscope/ as a tree of links (folders linked whole, so a new module appears at
# once) and prints build/stage: put it first on the tool's path.
set -euo pipefail
cd "$(dirname "$0")/.."
stage=build/stage/layerscope
mkdir -p "$stage"
for d in profiler cli app assets; do ln -sfn "../../../$d" "$stage/$d"; done
find "$stage" -maxdepth 1 -name '*.py' -type l -delete  # a module removed from api/ leaves no stale link
for f in api/*.py; do ln -sfn "../../../$f" "$stage/$(basename "$f")"; done
echo build/stage
