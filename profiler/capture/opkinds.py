"""Normalise what a graph node calls (module class, torch function, Tensor method, aten op) to
one op kind. The kind picks the formula in ``metrics.py``; an unmapped call gets kind
``"unknown"`` and is reported as such, never as zero work.
"""

from __future__ import annotations

import operator
import sys
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["VIEW_KINDS", "class_name_kind", "module_kind", "function_kind", "method_kind", "aten_kind", "target_name"]

# Ops that may return a view of their input; when they do (checked on the real tensors during
# capture) they move no data.
VIEW_KINDS = frozenset({"view", "identity"})

_MODULE_KINDS: list[tuple[tuple[type, ...], str]] = [
    ((nn.Conv1d, nn.Conv2d, nn.Conv3d), "conv"),
    ((nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d), "conv_transpose"),
    ((nn.Linear,), "linear"),
    ((nn.modules.batchnorm._BatchNorm,), "batch_norm"),
    ((nn.LayerNorm,), "layer_norm"),
    ((nn.GroupNorm,), "group_norm"),
    ((nn.modules.instancenorm._InstanceNorm,), "instance_norm"),
    ((nn.RMSNorm,), "rms_norm"),
    ((nn.ReLU,), "relu"),
    ((nn.ReLU6,), "relu6"),
    ((nn.Hardtanh,), "hardtanh"),
    ((nn.LeakyReLU,), "leaky_relu"),
    ((nn.PReLU,), "prelu"),
    ((nn.ELU,), "elu"),
    ((nn.GELU,), "gelu"),
    ((nn.SiLU,), "silu"),
    ((nn.Sigmoid,), "sigmoid"),
    ((nn.Tanh,), "tanh"),
    ((nn.Hardswish,), "hardswish"),
    ((nn.Hardsigmoid,), "hardsigmoid"),
    ((nn.Mish,), "mish"),
    ((nn.Softplus,), "softplus"),
    ((nn.Softmax,), "softmax"),
    ((nn.LogSoftmax,), "log_softmax"),
    ((nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d), "max_pool"),
    ((nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d), "avg_pool"),
    ((nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d), "adaptive_avg_pool"),
    ((nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d), "adaptive_max_pool"),
    ((nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity), "identity"),
    ((nn.Flatten, nn.Unflatten), "view"),
    ((nn.Embedding,), "embedding"),
    ((nn.MultiheadAttention,), "multihead_attention"),
    ((nn.LSTM,), "lstm"),
    ((nn.GRU,), "gru"),
    ((nn.RNN,), "rnn"),
]

# Modules that stay one layer even though they own child modules (they have a formula).
LEAF_MODULES_WITH_CHILDREN: tuple[type, ...] = (nn.MultiheadAttention,)


def module_kind(module: nn.Module) -> str:
    for classes, kind in _MODULE_KINDS:
        if isinstance(module, classes):
            return kind
    if isinstance(module, nn.Upsample):
        return "upsample_nearest" if module.mode == "nearest" else "interpolate"
    return "unknown"


_KIND_BY_CLASS_NAME = {f"{c.__module__}.{c.__qualname__}": kind for classes, kind in _MODULE_KINDS for c in classes}
_KIND_BY_CLASS_NAME[f"{nn.MultiheadAttention.__module__}.{nn.MultiheadAttention.__qualname__}"] = "multihead_attention"


def class_name_kind(qualified_name: str) -> str | None:
    """Kind of a torch.nn leaf class given by name (as torch.export's nn_module_stack records it);
    None when the class is not a known leaf. Subclasses count (BatchNorm2d is a _BatchNorm) when their
    module is already imported: the name comes from a file (a .pt2), and importing the module it names
    would run whatever a colleague's folder holds under that name. Nothing is ever imported here."""
    if qualified_name in _KIND_BY_CLASS_NAME:
        return _KIND_BY_CLASS_NAME[qualified_name]
    mod_name, _, cls_name = qualified_name.rpartition(".")
    cls: object = sys.modules.get(mod_name)
    if cls is None:
        return None
    for part in cls_name.split("."):
        cls = vars(cls).get(part) if hasattr(cls, "__dict__") else None  # no __getattr__: lazy modules import on it
        if cls is None:
            return None
    if not isinstance(cls, type):
        return None
    for classes, kind in _MODULE_KINDS:
        if issubclass(cls, classes):
            return kind
    return "multihead_attention" if issubclass(cls, nn.MultiheadAttention) else None


def _kinds(pairs: dict[str, list[Any]]) -> dict[Any, str]:
    return {fn: kind for kind, fns in pairs.items() for fn in fns}


_FUNCTION_KINDS = _kinds({
    "add": [operator.add, operator.iadd, torch.add],
    "sub": [operator.sub, operator.isub, torch.sub, torch.subtract],
    "mul": [operator.mul, operator.imul, torch.mul, torch.multiply],
    "div": [operator.truediv, operator.itruediv, torch.div, torch.true_divide],
    "matmul": [operator.matmul, torch.matmul, torch.mm, torch.bmm],
    "addmm": [torch.addmm, torch.baddbmm],
    "einsum": [torch.einsum],
    "linear": [F.linear],
    "conv": [F.conv1d, F.conv2d, F.conv3d],
    "conv_transpose": [F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d],
    "batch_norm": [F.batch_norm],
    "layer_norm": [F.layer_norm],
    "group_norm": [F.group_norm],
    "instance_norm": [F.instance_norm],
    "rms_norm": [F.rms_norm],
    "relu": [F.relu, F.relu_, torch.relu, torch.relu_],
    "relu6": [F.relu6],
    "hardtanh": [F.hardtanh],
    "leaky_relu": [F.leaky_relu],
    "elu": [F.elu],
    "gelu": [F.gelu],
    "silu": [F.silu],
    "sigmoid": [torch.sigmoid, F.sigmoid],
    "tanh": [torch.tanh, F.tanh],
    "hardswish": [F.hardswish],
    "hardsigmoid": [F.hardsigmoid],
    "mish": [F.mish],
    "softplus": [F.softplus],
    "softmax": [F.softmax, torch.softmax],
    "log_softmax": [F.log_softmax, torch.log_softmax],
    "max_pool": [F.max_pool1d, F.max_pool2d, F.max_pool3d],
    "avg_pool": [F.avg_pool1d, F.avg_pool2d, F.avg_pool3d],
    "adaptive_avg_pool": [F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d],
    "adaptive_max_pool": [F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d],
    "sdpa": [F.scaled_dot_product_attention],
    "embedding": [F.embedding],
    "identity": [F.dropout],
    "concat": [torch.cat, torch.concat, torch.stack],
    "pad": [F.pad],
    "view": [torch.flatten, torch.reshape, torch.permute, torch.transpose, torch.unsqueeze, torch.squeeze,
             torch.unbind, torch.chunk, torch.split, torch.narrow, torch.select, torch.t, torch.movedim, torch.meshgrid,
             torch.broadcast_tensors,
             operator.getitem],
    "reduce": [torch.mean, torch.sum, torch.amax, torch.amin, torch.min, torch.max, torch.argmax, torch.argmin, torch.all,
               torch.any, torch.prod, torch.std, torch.var, torch.norm],
    "unary": [torch.exp, torch.sqrt, torch.rsqrt, torch.neg, torch.abs, torch.log, torch.cos, torch.sin,
              torch.erf, torch.reciprocal, torch.square, torch.pow],
    "elementwise": [torch.where, torch.masked_fill],
    "compare": [operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge, operator.and_, operator.or_,
                operator.xor, operator.invert, operator.not_, torch.eq, torch.ne, torch.lt, torch.le, torch.gt, torch.ge,
                torch.logical_and, torch.logical_or, torch.logical_not, torch.logical_xor, torch.bitwise_and,
                torch.bitwise_or, torch.bitwise_not, torch.isfinite, torch.isnan, torch.isinf],
    "cumulative": [torch.cumsum, torch.cumprod, torch.diff],
    "gather": [torch.gather, torch.index_select, torch.take_along_dim, torch.masked_select],
    "copy": [torch.flip, torch.roll, torch.tile, torch.repeat_interleave, torch.clone],
    "interpolate": [F.interpolate, F.upsample, F.upsample_bilinear],
    "upsample_nearest": [F.upsample_nearest],
    "clamp": [torch.clamp, torch.clip],
    "factory": [torch.arange, torch.zeros, torch.ones, torch.full, torch.empty, torch.zeros_like,
                torch.ones_like, torch.full_like, torch.empty_like],
})

_METHOD_KINDS = {
    **{m: "view" for m in ["view", "reshape", "permute", "transpose", "unsqueeze", "squeeze", "expand",
                           "expand_as", "view_as", "flatten", "unflatten", "contiguous", "unbind", "chunk",
                           "split", "narrow", "select", "t", "movedim", "detach", "reshape_as", "T", "mT", "H", "mH",
                           "data", "real", "imag", "squeeze_", "unsqueeze_", "transpose_", "t_", "as_strided",
                           "swapaxes", "swapdims", "view_as_real", "view_as_complex", "unfold"]},
    **{m: "compare" for m in ["eq", "ne", "lt", "le", "gt", "ge", "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__",
                              "__and__", "__or__", "__xor__", "__invert__", "__rand__", "__ror__", "__rxor__", "logical_and",
                              "logical_or", "logical_not", "logical_xor", "bitwise_and", "bitwise_or", "bitwise_not",
                              "isfinite", "isnan", "isinf"]},
    **{m: "cumulative" for m in ["cumsum", "cumprod", "diff"]},
    **{m: "gather" for m in ["gather", "index_select", "take_along_dim", "masked_select"]},
    **{m: "copy" for m in ["flip", "roll", "repeat", "tile", "repeat_interleave", "clone"]},
    **{m: "factory" for m in ["new_zeros", "new_ones", "new_full", "new_empty", "new_tensor", "zero_", "fill_"]},
    "where": "elementwise",
    **{m: "add" for m in ["add", "add_"]}, **{m: "sub" for m in ["sub", "sub_"]},
    **{m: "mul" for m in ["mul", "mul_"]}, **{m: "div" for m in ["div", "div_"]},
    "matmul": "matmul", "bmm": "matmul", "mm": "matmul",
    "relu": "relu", "relu_": "relu", "sigmoid": "sigmoid", "tanh": "tanh",
    "softmax": "softmax", "log_softmax": "log_softmax",
    **{m: "reduce" for m in ["mean", "sum", "amax", "amin", "min", "max", "argmax", "argmin", "all", "any", "prod",
                             "std", "var", "norm"]},
    **{m: "unary" for m in ["exp", "sqrt", "rsqrt", "neg", "abs", "log", "pow", "square", "reciprocal", "cos", "sin", "erf",
                            "log1p", "expm1", "exp_", "sqrt_", "__neg__", "__abs__", "__pow__", "__rpow__"]},
    "masked_fill": "elementwise", "masked_fill_": "elementwise", "clamp": "clamp", "clip": "clamp",
    **{m: "cast" for m in ["to", "float", "half", "bfloat16", "double", "type", "type_as", "int", "long"]},
}

_ATEN_KINDS = {
    **{n: "conv" for n in ["conv1d", "conv2d", "conv3d"]},
    **{n: "conv_transpose" for n in ["conv_transpose1d", "conv_transpose2d", "conv_transpose3d"]},
    "linear": "linear", "addmm": "addmm", "baddbmm": "addmm",
    **{n: "matmul" for n in ["mm", "bmm", "matmul"]}, "einsum": "einsum",
    **{n: "batch_norm" for n in ["batch_norm", "_native_batch_norm_legit_no_training", "native_batch_norm"]},
    **{n: "layer_norm" for n in ["layer_norm", "native_layer_norm"]},
    **{n: "group_norm" for n in ["group_norm", "native_group_norm"]},
    "instance_norm": "instance_norm", "rms_norm": "rms_norm",
    **{n: "relu" for n in ["relu", "relu_"]}, **{n: "hardtanh" for n in ["hardtanh", "hardtanh_"]},
    "gelu": "gelu", "silu": "silu", "silu_": "silu", "sigmoid": "sigmoid", "tanh": "tanh",
    "hardswish": "hardswish", "hardswish_": "hardswish", "hardsigmoid": "hardsigmoid",
    "leaky_relu": "leaky_relu", "elu": "elu", "mish": "mish", "softplus": "softplus",
    **{n: "softmax" for n in ["softmax", "_softmax", "_safe_softmax"]},
    **{n: "log_softmax" for n in ["log_softmax", "_log_softmax"]},
    **{n: "max_pool" for n in ["max_pool1d", "max_pool2d", "max_pool3d", "max_pool2d_with_indices"]},
    **{n: "avg_pool" for n in ["avg_pool1d", "avg_pool2d", "avg_pool3d"]},
    **{n: "adaptive_avg_pool" for n in ["adaptive_avg_pool1d", "adaptive_avg_pool2d", "_adaptive_avg_pool2d", "adaptive_avg_pool3d"]},
    **{n: "sdpa" for n in ["scaled_dot_product_attention", "_scaled_dot_product_flash_attention_for_cpu"]},
    "embedding": "embedding", "cat": "concat", "stack": "concat", "constant_pad_nd": "pad", "pad": "pad",
    **{n: "view" for n in ["view", "reshape", "_unsafe_view", "permute", "transpose", "t", "unsqueeze", "squeeze",
                           "expand", "flatten", "slice", "select", "unbind", "split", "split_with_sizes", "chunk", "meshgrid",
                           "alias", "detach", "contiguous", "unflatten", "movedim", "narrow"]},
    **{n: "identity" for n in ["dropout", "clone"]},
    **{n: "add" for n in ["add", "add_"]}, **{n: "sub" for n in ["sub", "sub_", "rsub"]},
    **{n: "mul" for n in ["mul", "mul_"]}, **{n: "div" for n in ["div", "div_"]},
    **{n: "reduce" for n in ["mean", "sum", "amax", "amin"]},
    **{n: "unary" for n in ["exp", "sqrt", "rsqrt", "neg", "abs", "log", "pow", "square", "reciprocal", "erf", "cos", "sin"]},
    **{n: "elementwise" for n in ["where", "masked_fill", "masked_fill_"]},
    **{n: "clamp" for n in ["clamp", "clip"]},
    **{n: "factory" for n in ["arange", "zeros", "ones", "full", "empty", "zeros_like", "ones_like", "full_like",
                              "empty_like", "scalar_tensor", "lift_fresh_copy", "new_zeros", "new_ones", "new_full",
                              "new_empty", "fill", "fill_", "zero_", "empty_strided"]},
    **{n: "cast" for n in ["_to_copy", "to", "type_as"]},
    **{n: "compare" for n in ["eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_not", "logical_xor",
                              "bitwise_and", "bitwise_or", "bitwise_not", "bitwise_xor", "__and__", "__or__", "isfinite",
                              "isnan", "isinf"]},
    **{n: "cumulative" for n in ["cumsum", "cumprod", "diff"]},
    **{n: "gather" for n in ["gather", "index_select", "index", "take_along_dim", "masked_select"]},
    **{n: "copy" for n in ["flip", "roll", "repeat", "tile", "repeat_interleave"]},
    **{n: "reduce" for n in ["min", "max", "argmax", "argmin", "all", "any", "prod", "std", "var", "norm", "linalg_vector_norm"]},
    **{n: "view" for n in ["expand_as", "view_as", "reshape_as", "as_strided", "unfold", "swapaxes", "lift_fresh"]},
    **{n: "upsample_nearest" for n in ["upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d", "_upsample_nearest_exact2d"]},
    **{n: "interpolate" for n in ["upsample_linear1d", "upsample_bilinear2d", "upsample_trilinear3d", "upsample_bicubic2d",
                                  "_upsample_bilinear2d_aa", "_upsample_bicubic2d_aa"]},
    **{n: "lstm" for n in ["lstm"]}, **{n: "gru" for n in ["gru"]}, **{n: "rnn" for n in ["rnn_tanh", "rnn_relu"]},
}


# Third-party functions by qualified name (their packages are not dependencies): what they do in eval mode.
_NAMED_FUNCTION_KINDS = {
    "torchvision.ops.stochastic_depth.stochastic_depth": "identity",  # returns its input when not training
    "timm.layers.drop.drop_path": "identity",
    "timm.models.layers.drop.drop_path": "identity",
}


def function_kind(fn: Any) -> str:
    try:
        kind = _FUNCTION_KINDS.get(fn)
    except TypeError:  # unhashable target
        return "unknown"
    if kind is None:
        kind = _NAMED_FUNCTION_KINDS.get(f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', '')}", "unknown")
    return kind


def method_kind(name: str) -> str:
    return _METHOD_KINDS.get(name, "unknown")


def aten_kind(op: Any) -> str:
    """Kind of an aten OpOverload such as ``aten.conv2d.default``."""
    packet = getattr(op, "__name__", str(op)).split(".")[0]
    if packet == "convolution":
        return "unknown"  # generic form: transposed flag decides; handled by capture attrs
    return _ATEN_KINDS.get(packet, "unknown")


def target_name(target: Any) -> str:
    """A readable name for what a node calls: ``torch.nn.Conv2d``, ``torch.add``, ``aten.relu.default``."""
    if isinstance(target, str):
        return f"Tensor.{target}"
    if isinstance(target, torch._ops.OpOverload):
        return f"aten.{target.__name__}" if not str(target).startswith("aten") else str(target)
    mod = getattr(target, "__module__", None) or ""
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or repr(target)
    if mod in ("_operator", "operator"):
        return f"operator.{name}"
    if mod.startswith("torch.nn.functional") or mod == "torch.nn.functional":
        return f"F.{name}"
    if mod in ("torch", "") or mod.startswith(("torch.", "torch._")):  # not torchvision or torchaudio
        return f"torch.{getattr(target, '__name__', name)}"
    return f"{mod}.{name}"
