"""``layerscope`` command line (import as ``layerscope.cli``): headless, never imports Qt.

Each command parses its arguments into the core's typed request, drives the core's job with a
progress bar and prints the result; ``layerscope gui`` hands over to the desktop app lazily.
"""
