"""``python -m layerscope``: the command line."""

import sys

from layerscope.cli.main import main

sys.exit(main())
