"""Map compiled ONNX Runtime ops back to source layers and their Python lines, with timings.

Pipeline: export the model to ONNX (torch.onnx dynamo exporter with its default graph optimiser,
as users ship it; TorchScript exporter as the fallback), build an ORT session at the chosen optimisation level (saving the optimised graph),
profile it, then map every compiled op in two steps:

1. ORT op -> original ONNX nodes, from tensors alone. ORT drops node metadata and renames fused
   nodes, but tensor names between fusions survive. Optimised ops connected by *new* tensors form
   one cluster (a fused Conv and its layout ``ReorderOutput``); walking the original graph back from
   the cluster's surviving output tensors to surviving tensors gives exactly the nodes it absorbed.
2. ONNX node -> layer ids, from the exporter's metadata (``pkg.torch.onnx.name_scopes``: module
   paths, then the exported graph's node name). A module called twice is told apart by call order;
   a functional op by its parent module, op kind and order. A node the exporter's optimiser
   rewrote says so (``pkg.onnxscript.rewriter.rule_name``): ``FuseBatchNormIntoConv`` keeps the
   BatchNorm's scope and also stands for the conv/linear layer feeding it. Exporter helpers (Shape, Constant,
   CastLike…) carry the scope of the aten op they lower. TorchScript-exported nodes are matched by
   their scope names (``/layer1/layer1.0/conv1/Conv``). What is left maps to its nearest mapped
   neighbour in the graph and says so; anything still unmapped is listed by name.

Modules: ``results`` (what a mapping holds), ``export`` (model -> ONNX, load), ``sources`` (ONNX node
-> layers), ``fusion`` (ORT op -> ONNX nodes), ``ort_profile`` (session, timing, ``map_onnx``),
``ort_util`` (ORT helpers), ``qdq_check`` (our SQNR against ORT's quantisation debugger).
"""

from .export import export_onnx, load_onnx
from .fusion import absorbed_nodes
from .ort_profile import map_onnx
from .ort_util import calibration_reader, quiet_root_logger
from .qdq_check import OrtSqnrCheck, ort_sqnr_check
from .results import ONNX_SCHEMA_VERSION, ExporterKind, MatchHow, OnnxNodeSource, OnnxProfile, OpMapping, OptLevel
from .sources import source_map

__all__ = [
    "OptLevel", "ExporterKind", "MatchHow", "OnnxNodeSource", "OpMapping", "OnnxProfile", "ONNX_SCHEMA_VERSION",
    "export_onnx", "load_onnx", "source_map", "absorbed_nodes", "map_onnx", "calibration_reader", "quiet_root_logger",
    "OrtSqnrCheck", "ort_sqnr_check",
]
