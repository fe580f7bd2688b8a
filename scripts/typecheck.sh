#!/usr/bin/env bash
# mypy over the headless core and the CLI, under the names users import them by.
# The repo maps profiler/ and cli/ to layerscope.profiler / layerscope.cli at install time (an
# import hook mypy cannot follow), so this links them into build/typecheck/layerscope/ first.
set -euo pipefail
cd "$(dirname "$0")/.."
stage=build/typecheck/layerscope
mkdir -p "$stage"
ln -sfn ../../../profiler "$stage/profiler"
ln -sfn ../../../cli "$stage/cli"
cd build/typecheck
exec ../../.venv/bin/python -m mypy --config-file ../../pyproject.toml --cache-dir ../mypy-cache -p layerscope.profiler -p layerscope.cli
