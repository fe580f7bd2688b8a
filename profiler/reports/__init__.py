"""What LayerScope hands to people and other tools: reports and overlays.

- ``report``: a profile (+ compiled ops, compression) as one self-contained HTML page.
- ``html``: what the HTML reports share (stylesheet, sortable tables, axes).
- ``model_explorer``: per-node overlays for Google AI Edge Model Explorer.
"""

from .model_explorer import write_model_explorer, write_onnx_model_explorer
from .report import check_compress_report, profile_html

__all__ = ["profile_html", "check_compress_report", "write_model_explorer", "write_onnx_model_explorer"]
