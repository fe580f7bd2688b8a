"""Frozen-app entry: `layerscope` with no arguments opens the desktop app."""

import sys

from layerscope.cli.main import main

sys.exit(main(sys.argv[1:] or ["gui"]))
