"""Float vs compressed, layer by layer: streaming activation statistics (``stats``), the comparison of
two models on the same inputs (``comparison``, run through ``recorder``) and the ranked range diagnostics over it
(``diagnose``).
"""

from .comparison import COMPARE_VERSION, MERGE_KINDS, ActivationComparison, LayerComparison, OperandRange, compare_models, shared_histograms
from .diagnose import Diagnostic, DiagnosticKind, diagnose
from .stats import PERCENTILES, ActivationStats, StreamingHistogram, TensorStats

__all__ = [
    "COMPARE_VERSION", "MERGE_KINDS", "ActivationComparison", "LayerComparison", "OperandRange", "compare_models",
    "shared_histograms", "Diagnostic", "DiagnosticKind", "diagnose", "PERCENTILES", "ActivationStats",
    "StreamingHistogram", "TensorStats",
]
