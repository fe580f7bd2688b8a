"""Static cost of every layer: FLOPs, MACs, bytes read/written, arithmetic intensity.

One registry of pure per-kind formulas over the layer's recorded shapes (the only place these
numbers are computed). Conventions, so that every number can be re-derived by hand:

* A MAC is one multiply-accumulate; FLOPs count a MAC as 2. Only matrix-like work (conv, linear,
  matmul, einsum, attention) has MACs; every other op has ``macs == 0`` but may have FLOPs.
* A bias add is 1 FLOP per output element.
* Element-wise ops are counted per output element: add/sub/mul/div/unary 1, relu 1,
  leaky_relu/prelu 2, relu6/hardtanh/clamp 2 (min and max), sigmoid 4 (neg, exp, add, div),
  tanh 1 (transcendentals count 1), gelu 5 (div, erf, add, mul, mul), silu 5, hardswish 5,
  hardsigmoid 4, elu 4, softplus 3, mish 5, softmax/log_softmax 5 (max, sub, exp, sum, div).
* Norms per element: batch_norm (inference) 2, +2 when affine; layer/group/instance norm 6
  (mean 1, variance 3, normalise 2), +2 when affine; rms_norm 3, +1 when affine.
* Pooling: max/avg with a k-element window: k per output element; adaptive pools: one per input
  element.
* Attention (SDPA) is counted dense: 2·B·H·L·S·(E+Ev) for the two matmuls, plus 1 scale and 5
  softmax FLOPs per score, plus 1 per score for a mask (or causal mask).
* Comparisons, masks and logic (eq … ge, and/or/not, isfinite), cumsum/cumprod/diff: 1 per output
  element. Gathers and indexing (gather, index, index_select), copies (flip, roll, repeat, clone),
  views and eval-mode identities (stochastic depth, drop path): 0 FLOPs; they still move bytes.
* Interpolation per output element: nearest 0 (a copy); linear over d dimensions (linear,
  bilinear, trilinear) 2·2^d − 1 (2^d weighted taps summed); bicubic 2·16 − 1 = 31; area 1 per input.
* Recurrent layers (LSTM, GRU, RNN), per time step, direction and layer, batch element: gate
  matrices G·H·(I + H) MACs (G = 4, 3, 1; I the layer's input size: input_size, then H × directions;
  an LSTM with proj_size P uses P for the recurrent size, plus H·P MACs for the projection), 2 bias
  adds per gate output when biased, and per hidden unit: LSTM 18 FLOPs (3 sigmoids, 2 tanh, 4 for
  the cell and hidden updates), GRU 14 (2 sigmoids, 1 tanh, r·(W·h + b) 1, the update 4), RNN 1 (tanh).
* Bytes: read = every tensor operand (activations and weights), written = every output. A view
  that really aliased its input moves 0 bytes. Embedding reads only the gathered rows.
* An op with no formula has ``flops``/``macs`` = None ("unknown") and never counts as zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from .graph import Layer, TensorMeta

__all__ = ["LayerMetrics", "FORMULAS", "layer_metrics", "UNKNOWN"]

UNKNOWN = "unknown"


@dataclass(frozen=True)
class LayerMetrics:
    params: int
    weight_bytes: int
    flops: int | None  # None: no formula for this op ("unknown")
    macs: int | None
    bytes_read: int
    bytes_written: int
    formula: str  # the kind whose formula was used, or "unknown"

    @property
    def bytes_moved(self) -> int:
        return self.bytes_read + self.bytes_written

    @property
    def arithmetic_intensity(self) -> float | None:
        """FLOPs per byte moved; None when FLOPs are unknown or nothing moves (the roofline then
        judges FLOPs that move no bytes against the compute roof: no infinities in a profile)."""
        if self.flops is None or self.bytes_moved == 0:
            return None
        return self.flops / self.bytes_moved

    @property
    def known(self) -> bool:
        return self.flops is not None


Cost = tuple[int, int]  # (flops, macs)
Formula = Callable[[Layer], Cost | None]


def _act(layer: Layer, i: int = 0) -> TensorMeta:
    return layer.activations[i]


def _out(layer: Layer) -> TensorMeta:
    return layer.outputs[0]


def _has_bias(layer: Layer) -> bool:
    return len(layer.operands) >= 3 and layer.operands[2].numel > 0


def _conv(layer: Layer) -> Cost:
    w, out = layer.operands[1], _out(layer)
    macs = out.numel * math.prod(w.shape[1:])  # each output: (Cin/groups)·k… products
    return 2 * macs + (out.numel if _has_bias(layer) else 0), macs


def _conv_transpose(layer: Layer) -> Cost:
    x, w, out = layer.operands[0], layer.operands[1], _out(layer)
    macs = x.numel * math.prod(w.shape[1:])  # each input scatters (Cout/groups)·k… products
    return 2 * macs + (out.numel if _has_bias(layer) else 0), macs


def _linear(layer: Layer) -> Cost:
    w, out = layer.operands[1], _out(layer)
    macs = out.numel * w.shape[-1]
    return 2 * macs + (out.numel if _has_bias(layer) else 0), macs


def _matmul(layer: Layer) -> Cost:
    a, out = layer.operands[0], _out(layer)
    k = a.shape[-1]
    macs = max(out.numel, 1) * k
    return 2 * macs, macs


def _addmm(layer: Layer) -> Cost:  # addmm(bias, a, b) / baddbmm(bias, a, b)
    a, out = layer.operands[1], _out(layer)
    macs = out.numel * a.shape[-1]
    return 2 * macs + out.numel, macs


def _einsum(layer: Layer) -> Cost | None:
    eq = str(layer.attrs.get("equation", "")).replace(" ", "")
    ops = layer.operands
    if "->" not in eq or len(ops) != 2 or "." in eq:
        return None
    ins = eq.split("->")[0].split(",")
    sizes: dict[str, int] = {}
    for spec, t in zip(ins, ops, strict=False):
        if len(spec) != len(t.shape):
            return None
        sizes.update(zip(spec, t.shape, strict=True))
    macs = math.prod(sizes.values())
    return 2 * macs, macs


def _sdpa(layer: Layer) -> Cost:
    q, k, v = layer.operands[0], layer.operands[1], layer.operands[2]
    bh = math.prod(q.shape[:-2])
    seq_q, e, seq_k, ev = q.shape[-2], q.shape[-1], k.shape[-2], v.shape[-1]
    scores = bh * seq_q * seq_k
    macs = scores * (e + ev)
    masked = len(layer.operands) > 3 or bool(layer.attrs.get("is_causal"))
    return 2 * macs + scores * (1 + 5 + (1 if masked else 0)), macs


def _mha(layer: Layer) -> Cost:
    a = layer.attrs
    e, h = int(a["embed_dim"]), int(a["num_heads"])
    kdim, vdim = int(a.get("kdim", e)), int(a.get("vdim", e))
    q, k = layer.activations[0], layer.activations[1]
    seq_axis, batch_axis = (1, 0) if a.get("batch_first") else (0, 1)
    if len(q.shape) == 2:  # unbatched
        b, seq_q, seq_k = 1, q.shape[0], k.shape[0]
    else:
        b, seq_q, seq_k = q.shape[batch_axis], q.shape[seq_axis], k.shape[seq_axis]
    proj = b * (seq_q * e * e + seq_k * kdim * e + seq_k * vdim * e)
    attn = b * seq_q * seq_k * e * 2  # summed over heads: H·L·S·(hd + hd)
    out = b * seq_q * e * e
    macs = proj + attn + out
    bias = b * (2 * seq_q * e + 2 * seq_k * e) if a.get("bias", True) else 0
    return 2 * macs + 6 * b * h * seq_q * seq_k + bias, macs


def _per_output(flops_per_element: int) -> Formula:
    return lambda layer: (flops_per_element * _out(layer).numel, 0)


def _norm(base: int, affine_extra: int) -> Formula:
    def f(layer: Layer) -> Cost:
        affine = bool(layer.attrs.get("affine", any(t.role == "parameter" for t in layer.operands)))
        return (base + (affine_extra if affine else 0)) * _act(layer).numel, 0

    return f


def _window_pool(layer: Layer) -> Cost:
    ks = layer.attrs.get("kernel_size")
    if ks is None:
        raise KeyError("kernel_size")
    spatial = len(_out(layer).shape) - 2
    window = math.prod(ks) if isinstance(ks, list) else int(ks) ** max(spatial, 1)
    return window * _out(layer).numel, 0


def _per_input(layer: Layer) -> Cost:
    return _act(layer).numel, 0


def _zero(layer: Layer) -> Cost:
    return 0, 0


_INTERP_DIMS = {"linear": 1, "bilinear": 2, "trilinear": 3}


def _interpolate(layer: Layer) -> Cost:
    """Per output element: nearest 0, (bi/tri)linear 2·2^d − 1, bicubic 31, area one per input element."""
    mode = layer.attrs.get("mode")
    if not isinstance(mode, str):  # F.interpolate's default, or an aten op named by its mode (upsample_bilinear2d)
        named = [m for m in ("bicubic", "trilinear", "bilinear", "linear", "nearest") if m in layer.target]
        mode = named[0] if named else ("nearest" if layer.target in ("F.interpolate", "F.upsample") else None)
    if mode is None:
        raise KeyError("mode")
    out = _out(layer).numel
    if mode.startswith("nearest"):
        return 0, 0
    if mode == "area":
        return _act(layer).numel, 0
    if mode == "bicubic":
        return 31 * out, 0
    return (2 * 2 ** _INTERP_DIMS[mode] - 1) * out, 0


_GATES = {"lstm": 4, "gru": 3, "rnn": 1}
_PER_UNIT = {"lstm": 18, "gru": 14, "rnn": 1}


def _recurrent(layer: Layer) -> Cost:
    """LSTM/GRU/RNN modules: every gate's matrices at every time step, layer and direction."""
    a, kind = layer.attrs, layer.op_kind
    x = _act(layer)
    hidden, layers = int(a["hidden_size"]), int(a.get("num_layers", 1))
    dirs = 2 if a.get("bidirectional") else 1
    proj = int(a.get("proj_size", 0) or 0)
    rec = proj or hidden  # the recurrent state's size
    if len(x.shape) == 2:  # unbatched (T, I)
        steps, batch = x.shape[0], 1
    else:
        steps, batch = (x.shape[1], x.shape[0]) if a.get("batch_first") else (x.shape[0], x.shape[1])
    gates = _GATES[kind]
    macs = flops = 0
    for k in range(layers):
        size_in = int(a["input_size"]) if k == 0 else rec * dirs
        per_step = gates * hidden * (size_in + rec) + (hidden * proj if proj else 0)
        macs += per_step
        flops += 2 * per_step + (2 * gates * hidden if a.get("bias", True) else 0) + _PER_UNIT[kind] * hidden
    n = steps * batch * dirs
    return flops * n, macs * n


FORMULAS: dict[str, Formula] = {
    "conv": _conv,
    "conv_transpose": _conv_transpose,
    "linear": _linear,
    "matmul": _matmul,
    "addmm": _addmm,
    "einsum": _einsum,
    "sdpa": _sdpa,
    "multihead_attention": _mha,
    "batch_norm": _norm(2, 2),
    "layer_norm": _norm(6, 2),
    "group_norm": _norm(6, 2),
    "instance_norm": _norm(6, 2),
    "rms_norm": _norm(3, 1),
    "add": _per_output(1), "sub": _per_output(1), "mul": _per_output(1), "div": _per_output(1),
    "unary": _per_output(1), "elementwise": _per_output(1),
    "relu": _per_output(1), "tanh": _per_output(1),
    "leaky_relu": _per_output(2), "prelu": _per_output(2), "relu6": _per_output(2),
    "hardtanh": _per_output(2), "clamp": _per_output(2),
    "sigmoid": _per_output(4), "hardsigmoid": _per_output(4), "elu": _per_output(4),
    "gelu": _per_output(5), "silu": _per_output(5), "hardswish": _per_output(5), "mish": _per_output(5),
    "softplus": _per_output(3),
    "softmax": _per_output(5), "log_softmax": _per_output(5),
    "max_pool": _window_pool, "avg_pool": _window_pool,
    "adaptive_avg_pool": _per_input, "adaptive_max_pool": _per_input,
    "reduce": _per_input,
    "view": _zero, "identity": _zero, "concat": _zero, "pad": _zero, "cast": _zero, "factory": _zero,
    "embedding": _zero, "upsample_nearest": _zero,
    "compare": _per_output(1), "cumulative": _per_output(1), "gather": _zero, "copy": _zero,
    "interpolate": _interpolate,
    "lstm": _recurrent, "gru": _recurrent, "rnn": _recurrent,
}


def _bytes(layer: Layer) -> tuple[int, int]:
    if layer.is_view:
        return 0, 0
    written = sum(t.nbytes for t in layer.outputs)
    if layer.op_kind == "embedding":
        idx = sum(t.nbytes for t in layer.operands if t.dtype.startswith(("int", "uint")))
        return idx + written, written  # only the gathered rows are read
    if layer.op_kind == "factory":
        return 0, written
    return sum(t.nbytes for t in layer.operands), written


def layer_metrics(layer: Layer) -> LayerMetrics:
    formula = FORMULAS.get(layer.op_kind)
    cost: Cost | None = None
    if formula is not None and layer.outputs:
        try:
            cost = formula(layer)
        except (IndexError, KeyError, ValueError, TypeError):
            cost = None  # shapes did not fit the formula: say unknown rather than guess
    read, written = _bytes(layer)
    return LayerMetrics(
        params=layer.params,
        weight_bytes=layer.weight_bytes,
        flops=None if cost is None else int(cost[0]),
        macs=None if cost is None else int(cost[1]),
        bytes_read=read,
        bytes_written=written,
        formula=layer.op_kind if cost is not None else UNKNOWN,
    )
