"""Targeted per-layer compression: plans, techniques, application, adapters, real int8 via ORT."""

from ..paired import time_pair
from .activations import ActivationQuant, calibrate_activations
from .adapters import (
    OrtQuantConfig,
    apply_torchao,
    build_qconfig_mapping,
    build_torchao_config,
    coreml_configs,
    ort_quant_config,
    torch_ao_mapping,
    torchao_config,
)
from .apply import Applied, LayerCompression, OutputChange, apply_plan, compare_outputs, model_bytes
from .estimate import LayerEstimate, PlanEstimate, estimate_static
from .nncf_adapter import apply_nncf, build_nncf_ignored_scope, nncf_config, nncf_weight_modes, nncf_weight_nodes
from .ort_int8 import OrtInt8Result, onnx_node_layers, quantize_with_ort
from .pipeline import CompressResult, LayerDelta, compress
from .plan import (
    CALIBRATIONS,
    COMPRESSIBLE_KINDS,
    ESTIMATES,
    PLAN_VERSION,
    TECHNIQUES,
    CompressionPlan,
    LayerSpec,
    ResolvedSpec,
    estimate_plan,
    resolve_plan,
    select_layers,
)
from .specs import (
    Calibration,
    CastParams,
    Granularity,
    PalettizeParams,
    PruneChannelsParams,
    PruneParams,
    QuantizeParams,
    Technique,
    TechniqueParams,
    parse_params,
)
from .structured import ChannelPruneReport, prune_channels
from .techniques import WeightReport, cast_weight, palettize_weight, prune_weight, quantize_weight, sqnr_db

__all__ = [
    "Technique", "Granularity", "Calibration", "TechniqueParams", "QuantizeParams", "CastParams", "PalettizeParams",
    "PruneParams", "PruneChannelsParams", "parse_params",
    "LayerEstimate", "PlanEstimate", "estimate_static",
    "ActivationQuant", "calibrate_activations", "OrtQuantConfig", "build_qconfig_mapping", "coreml_configs", "ort_quant_config",
    "torch_ao_mapping", "torchao_config", "build_torchao_config", "apply_torchao",
    "nncf_config", "build_nncf_ignored_scope", "apply_nncf", "nncf_weight_modes", "nncf_weight_nodes",
    "Applied", "LayerCompression", "OutputChange", "apply_plan", "compare_outputs", "model_bytes",
    "OrtInt8Result", "onnx_node_layers", "quantize_with_ort", "CompressResult", "LayerDelta", "compress",
    "time_pair", "ESTIMATES", "estimate_plan", "CALIBRATIONS", "COMPRESSIBLE_KINDS", "PLAN_VERSION", "TECHNIQUES", "CompressionPlan",
    "LayerSpec", "ResolvedSpec",
    "resolve_plan", "select_layers", "ChannelPruneReport", "prune_channels", "WeightReport", "cast_weight", "palettize_weight",
    "prune_weight", "quantize_weight", "sqnr_db",
]
