"""Capture a model's graph into a ``LayerGraph``: torch.fx first, torch.export as the fallback, or
one eager forward (``--static``, ``--method eager``).

- ``trace``: ``capture`` and ``capture_exported``, the entry points (``CaptureResult``).
- ``record``: one real run of the traced graph; shapes, dtypes, storages and source lines per node.
- ``assemble``: which node belongs to which layer, and the ``LayerGraph`` built from it.
- ``eager``: the capture that runs the model once in eager mode (no tracing).
- ``failures``: a forward that raises is named at the module that raised, with the input shapes.
- ``opkinds``: what kind of op a module, function, method or aten op is. ``weights``: storage keys.
- ``export``: save a (compressed) model as a ``.pt2`` LayerScope can load again.
"""

from .failures import input_error, run_and_locate_failure
from .trace import CaptureResult, capture, capture_exported, quiet_torch_logs

__all__ = ["CaptureResult", "capture", "capture_exported", "quiet_torch_logs", "input_error", "run_and_locate_failure"]
