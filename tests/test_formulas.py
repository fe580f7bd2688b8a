"""FLOPs / MACs / bytes checked against arithmetic done by hand (written next to each number)."""

import torch
import torch.nn.functional as F
from helpers import metrics_of
from torch import nn


def test_linear_128_to_256_batch_4():
    layer, m = metrics_of(nn.Sequential(nn.Linear(128, 256)), torch.randn(4, 128))
    assert m.macs == 4 * 128 * 256  # M*K*N = 131,072
    assert m.flops == 2 * 4 * 128 * 256 + 4 * 256  # 2*MACs + bias per output = 263,168
    assert m.params == 128 * 256 + 256
    # read x (4*128) + W (128*256) + b (256), write y (4*256); float32
    assert m.bytes_read == 4 * (4 * 128 + 128 * 256 + 256)
    assert m.bytes_written == 4 * (4 * 256)
    assert m.arithmetic_intensity == m.flops / (m.bytes_read + m.bytes_written)
    assert layer.id == "0" and layer.op_kind == "linear"


def test_depthwise_3x3_conv():
    conv = nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False)
    _, m = metrics_of(nn.Sequential(conv), torch.randn(1, 32, 56, 56))
    assert m.macs == 32 * 56 * 56 * 9  # each output: 1 input channel x 3x3 = 903,168
    assert m.flops == 2 * m.macs


def test_grouped_strided_dilated_conv():
    conv = nn.Conv2d(64, 128, 3, stride=2, padding=2, dilation=2, groups=4)
    _, m = metrics_of(nn.Sequential(conv), torch.randn(2, 64, 32, 32))
    # out 2x128x16x16; each output sums 64/4=16 channels x 3x3 = 144 products
    assert m.macs == 2 * 128 * 16 * 16 * 144  # 9,437,184
    assert m.flops == 2 * m.macs + 2 * 128 * 16 * 16  # + bias


def test_conv_transpose():
    _, m = metrics_of(nn.Sequential(nn.ConvTranspose2d(8, 4, 2, stride=2, bias=False)), torch.randn(1, 8, 5, 5))
    assert m.macs == 8 * 5 * 5 * 4 * 2 * 2  # each input scatters into Cout x 2x2 = 3,200


class BMM(nn.Module):
    def forward(self, a, b):
        return torch.bmm(a, b)


def test_bmm():
    _, m = metrics_of(BMM(), torch.randn(3, 4, 5), torch.randn(3, 5, 6))
    assert m.macs == 3 * 4 * 6 * 5  # B*M*N*K = 360
    assert m.flops == 720


class Einsum(nn.Module):
    def forward(self, a, b):
        return torch.einsum("bij,bjk->bik", a, b)


def test_einsum_matches_bmm():
    _, m = metrics_of(Einsum(), torch.randn(3, 4, 5), torch.randn(3, 5, 6))
    assert m.macs == 3 * 4 * 5 * 6


class SDPA(nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def test_sdpa():
    b, h, n, s, e = 2, 4, 16, 16, 8
    _, m = metrics_of(SDPA(), torch.randn(b, h, n, e), torch.randn(b, h, s, e), torch.randn(b, h, s, e))
    scores = b * h * n * s  # 2,048
    assert m.macs == scores * (e + e)  # QK^T and PV: 32,768
    assert m.flops == 2 * m.macs + scores * (1 + 5 + 1)  # scale, softmax(5), causal mask


def test_multihead_attention_module():
    mha = nn.MultiheadAttention(16, 2, batch_first=True)

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = mha

        def forward(self, x):
            return self.mha(x, x, x, need_weights=False)[0]

    _, m = metrics_of(M(), torch.randn(1, 10, 16), layer_id="mha")
    e, n = 16, 10
    assert m.macs == 3 * n * e * e + 2 * n * n * e + n * e * e  # in-proj, QK^T+PV, out-proj = 10,880


def test_norms_and_pools():
    _, bn = metrics_of(nn.Sequential(nn.BatchNorm2d(8)), torch.randn(2, 8, 4, 4))
    assert bn.flops == 4 * 2 * 8 * 4 * 4 and bn.macs == 0  # affine BN: 4 per element
    _, ln = metrics_of(nn.Sequential(nn.LayerNorm(32)), torch.randn(3, 32))
    assert ln.flops == 8 * 3 * 32  # mean 1, var 3, normalise 2, affine 2
    _, mp = metrics_of(nn.Sequential(nn.MaxPool2d(3, 2, 1)), torch.randn(1, 4, 8, 8))
    assert mp.flops == 9 * 4 * 4 * 4  # 3x3 window per output of 1x4x4x4
    _, ap = metrics_of(nn.Sequential(nn.AdaptiveAvgPool2d(1)), torch.randn(1, 4, 8, 8))
    assert ap.flops == 4 * 8 * 8  # one add per input element


class AddRelu(nn.Module):
    def forward(self, x, y):
        return torch.relu(x + y).view(-1)


def test_elementwise_and_views():
    from layerscope.profiler.capture import capture
    from layerscope.profiler.metrics import layer_metrics

    cap = capture(AddRelu(), [torch.randn(4, 8), torch.randn(4, 8)])
    add, relu, view = list(cap.graph)
    assert layer_metrics(add).flops == 32 and layer_metrics(add).bytes_read == 2 * 32 * 4
    assert layer_metrics(relu).flops == 32
    v = layer_metrics(view)
    assert view.is_view and v.flops == 0 and v.bytes_read == 0 and v.bytes_written == 0


def test_embedding_reads_only_gathered_rows():
    _, m = metrics_of(nn.Sequential(nn.Embedding(1000, 64)), torch.randint(0, 1000, (2, 5)))
    assert m.flops == 0 and m.params == 64_000
    assert m.bytes_read == 2 * 5 * 8 + 2 * 5 * 64 * 4  # int64 indices + 10 rows of 64 floats


class Erfinv(nn.Module):
    def forward(self, x):
        return torch.erfinv(x)  # no formula (cumsum, the example here once, has one now)


def test_op_without_formula_is_unknown_not_zero():
    layer, m = metrics_of(Erfinv(), torch.randn(5, 5))
    assert m.flops is None and m.macs is None and m.formula == "unknown"
    assert m.arithmetic_intensity is None
    assert m.bytes_read == 100  # bytes are still known from the shapes


def test_weight_bytes_count_each_storage_once():
    """One home for model weight bytes: a tied weight, two parameters viewing one tensor and a
    module registered twice all count once, in the profile, the compression report and timing."""
    import torch
    from torch import nn

    from layerscope.profiler.capture.weights import weight_bytes
    from layerscope.profiler.compression import model_bytes

    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 8)
            self.head = nn.Linear(8, 10, bias=False)
            self.head.weight = self.emb.weight  # GPT-2 style tying
            base = torch.randn(4, 6)
            self.a = nn.Parameter(base)
            self.b = nn.Parameter(base.view(6, 4))  # another parameter over the same storage
            self.twice = self.head  # the same module under a second name
            self.register_buffer("scale", torch.ones(3))

    wb = weight_bytes(Tied())
    assert wb.total == (10 * 8 + 4 * 6 + 3) * 4  # each storage once
    assert wb.parameters == 10 * 8 + 24 + 24  # b is a distinct parameter (other shape) over shared memory
    assert model_bytes(Tied()) == wb.total and len(wb.storages) == 3


# ---------------------------------------------------------------- recurrent, interpolation, masks (issue 13)
def _all_captures(module, *inputs):
    """The layer graphs of every capture method that can take the module: fx, export and eager."""
    from layerscope.profiler.capture import capture
    from layerscope.profiler.capture.eager import capture_eager
    from layerscope.profiler.graph import CaptureMethod

    module = module.eval()
    graphs = {"eager": capture_eager(module, list(inputs)).graph}
    for method in (CaptureMethod.FX, CaptureMethod.EXPORT):
        try:
            graphs[method.value] = capture(module, list(inputs), method).graph
        except Exception:  # noqa: BLE001 - a method that cannot trace this model is left out; the others must agree
            pass
    return graphs


def test_lstm_one_layer_counts_every_gate_at_every_step():
    from layerscope.profiler.metrics import layer_metrics

    lstm = nn.LSTM(10, 20)
    _, m = metrics_of(nn.Sequential(lstm), torch.randn(5, 3, 10))  # T=5, B=3
    # per step: 4 gates x H=20 x (I=10 + H=20) = 2,400 MACs; x T x B = 36,000 (the tagger read 1,280)
    assert m.macs == 4 * 20 * (10 + 20) * 5 * 3 == 36_000
    # FLOPs per step: 2 x 2,400 + 2 bias adds x 4 x 20 + 18 per hidden unit x 20 = 5,320; x 15 = 79,800
    assert m.flops == (2 * 2400 + 2 * 4 * 20 + 18 * 20) * 15 == 79_800
    assert m.params == 4 * 20 * (10 + 20) + 2 * 4 * 20
    for graph in _all_captures(nn.Sequential(lstm), torch.randn(5, 3, 10)).values():
        assert [layer_metrics(layer).macs for layer in graph if layer.op_kind == "lstm"] == [36_000]


def test_two_layer_bidirectional_lstm_and_gru_batch_first():
    lstm = nn.LSTM(10, 20, num_layers=2, bidirectional=True, batch_first=True)
    _, m = metrics_of(nn.Sequential(lstm), torch.randn(3, 5, 10))  # B=3, T=5
    # layer 0: 4 x 20 x (10 + 20) = 2,400; layer 1 reads both directions: 4 x 20 x (40 + 20) = 4,800
    assert m.macs == (2400 + 4800) * 5 * 3 * 2 == 216_000  # x T x B x 2 directions
    gru = nn.GRU(10, 20)
    _, g = metrics_of(nn.Sequential(gru), torch.randn(5, 3, 10))
    assert g.macs == 3 * 20 * (10 + 20) * 15 == 27_000  # 3 gates
    assert g.flops == (2 * 1800 + 2 * 3 * 20 + 14 * 20) * 15 == 60_000
    rnn = nn.RNN(10, 20, bias=False)
    _, r = metrics_of(nn.Sequential(rnn), torch.randn(5, 3, 10))
    assert r.macs == 20 * 30 * 15 and r.flops == (2 * 600 + 20) * 15  # tanh: 1 per hidden unit, no bias


class _Interp(nn.Module):
    def __init__(self, mode):
        super().__init__()
        self.mode = mode

    def forward(self, x):
        return F.interpolate(x, scale_factor=2, mode=self.mode) if self.mode else F.interpolate(x, scale_factor=2)


def test_interpolation_per_mode_in_every_capture():
    from layerscope.profiler.metrics import layer_metrics

    x = torch.randn(1, 3, 8, 8)
    out = 3 * 16 * 16  # 768 output elements
    expected = {"bilinear": 7 * out, "bicubic": 31 * out, "nearest": 0, None: 0}  # bilinear: 4 taps weighted and summed
    for mode, flops in expected.items():
        for method, graph in _all_captures(_Interp(mode), x).items():
            layer = next(iter(graph))
            assert layer_metrics(layer).flops == flops, (mode, method)
    _, m = metrics_of(nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear")), x)
    assert m.flops == 7 * out and m.macs == 0


class _Masks(nn.Module):
    def forward(self, x, idx):
        keep = (x > 0) & (x < 1)  # 2 compares + 1 and, 1 FLOP per element each
        c = torch.cumsum(x, -1)  # 1 per element
        g = torch.gather(c, 1, idx)  # a gather: 0 FLOPs
        y = g.reshape_as(idx)  # a view
        return torch.where(keep[:, :4], y, torch.zeros_like(y)) + torch.diff(x, dim=-1)[:, :4]


def test_masks_comparisons_cumsum_gather_and_views_have_formulas():
    from layerscope.profiler.metrics import layer_metrics

    x, idx = torch.randn(2, 8), torch.randint(0, 8, (2, 4))
    for method, graph in _all_captures(_Masks(), x, idx).items():
        unknown = [layer.id for layer in graph if not layer_metrics(layer).known]
        assert unknown == [], (method, unknown)
        flops = {layer.op_kind: layer_metrics(layer).flops for layer in graph}
        assert flops["compare"] == 16 and flops["cumulative"] in (16, 14) and flops["gather"] == 0, (method, flops)


def test_eval_mode_stochastic_depth_is_an_identity_not_a_torch_function():
    from layerscope.profiler.capture.opkinds import function_kind, target_name

    def stochastic_depth(x, p=0.1, mode="row", training=False):
        return x

    stochastic_depth.__module__, stochastic_depth.__qualname__ = "torchvision.ops.stochastic_depth", "stochastic_depth"
    assert function_kind(stochastic_depth) == "identity"
    assert target_name(stochastic_depth) == "torchvision.ops.stochastic_depth.stochastic_depth"


def test_work_inside_fx_wrapped_library_functions_is_counted():
    """torchvision's Swin wraps its attention with torch.fx.wrap: fx made it one node of unknown work (2.96 of 4.49 G)."""
    import sys
    from pathlib import Path

    from layerscope.profiler.capture import capture
    from layerscope.profiler.graph import CaptureMethod
    from layerscope.profiler.metrics import layer_metrics

    sys.path.insert(0, str(Path(__file__).parent))
    from patterns import WrappedAttention

    x = torch.randn(2, 4, 8)
    cap = capture(WrappedAttention().eval(), [x])
    assert cap.method is CaptureMethod.FX and "traced through 1 torch.fx.wrap'ed function(s)" in cap.notes[0]
    assert sum(layer_metrics(layer).macs or 0 for layer in cap.graph) == 2 * 4 * 8 * 24  # the linear inside: 1,536
    padded = capture(WrappedAttention(padded=True).eval(), [torch.randn(2, 4, 7)])  # 7 -> padded to 8 inside
    assert padded.method is CaptureMethod.EXPORT and "torch.fx.wrap'ed" in padded.notes[0]
    assert sum(layer_metrics(layer).macs or 0 for layer in padded.graph) == 2 * 4 * 8 * 24
    forced = capture(WrappedAttention(padded=True).eval(), [torch.randn(2, 4, 7)], CaptureMethod.FX)
    assert "stay single layers of unknown work" in forced.notes[0]
    assert any(not layer_metrics(layer).known for layer in forced.graph)  # honest: unknown, never zero
