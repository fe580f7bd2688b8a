"""The eager capture behind static profiles: one recorded forward gives the graph the fx tracer gives,
works where tracing cannot, and leaves the model as it was."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from layerscope.profiler import InputSpecError, ProfilingError, drive, load_model, profile_model
from layerscope.profiler.capture import capture
from layerscope.profiler.capture.eager import capture_eager
from layerscope.profiler.graph import CaptureMethod, TensorRole
from layerscope.profiler.hardware import HardwareProfile
from layerscope.profiler.metrics import layer_metrics

HW = HardwareProfile("fixed", {"float32": 100.0}, 20.0, "test")


def _summary(graph):
    return {layer.id: (layer.op_kind, layer.module_path, layer_metrics(layer).macs, layer.outputs, layer.operands,
                       layer.is_view, layer.source.line if layer.source else None) for layer in graph}


@pytest.mark.parametrize("name", ["tiny_cnn", "resnet18", "mobilenet_v2"])
def test_eager_capture_is_the_fx_graph(name):
    """Same layer ids, kinds, MACs, operand and output shapes, views, source lines, edges, inputs and outputs
    (resnet's `out += identity` is named `add`, as fx names it, though it runs Tensor.add_)."""
    loaded = load_model(name)
    fx_cap = capture(loaded.module, loaded.inputs)
    eager = capture_eager(loaded.module, loaded.inputs)
    assert fx_cap.method is CaptureMethod.FX and eager.method is CaptureMethod.EAGER
    assert list(eager.graph.ids()) == list(fx_cap.graph.ids())
    assert _summary(eager.graph) == _summary(fx_cap.graph)
    assert set(eager.graph.edges) == set(fx_cap.graph.edges)
    assert (eager.graph.input_layers, eager.graph.output_layers) == (fx_cap.graph.input_layers, fx_cap.graph.output_layers)


class _Branchy(nn.Module):
    """Data-dependent control flow (fx cannot trace it), a parameter used functionally, and an in-place residual."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.gate = nn.Parameter(torch.randn(8, 8))

    def forward(self, x):
        h = self.proj(x)
        if h.sum() > -1e9:  # always true, but only a real run knows
            h = F.linear(h, self.gate)  # 4 x 8 x 8 = 256 MACs, weights from a non-leaf module
        h += x
        return torch.relu(h)


def test_eager_capture_follows_the_branch_taken_and_names_functional_weights():
    m, x = _Branchy().eval(), torch.randn(4, 8)
    with pytest.raises(Exception):  # noqa: B017 - whatever fx raises on `if tensor:`, it cannot trace this
        torch.fx.symbolic_trace(m)
    g = capture_eager(m, (x,)).graph
    assert list(g.ids()) == ["proj", "sum_1", "gt", "linear", "add", "relu"]  # the test ran too: it is part of the work
    lin = g["linear"]
    assert layer_metrics(lin).macs == 4 * 8 * 8
    assert [(o.role, o.name, o.shape) for o in lin.operands] == [
        (TensorRole.ACTIVATION, "", (4, 8)), (TensorRole.PARAMETER, "gate", (8, 8))]
    assert set(g.edges) == {("proj", "sum_1"), ("sum_1", "gt"), ("proj", "linear"), ("linear", "add"), ("add", "relu")}
    assert g.input_layers == ("proj", "add") and g.output_layers == ("relu",)
    assert lin.source is not None and lin.source.code == "h = F.linear(h, self.gate)  # 4 x 8 x 8 = 256 MACs, weights from a non-leaf module"


def test_eager_capture_leaves_the_model_as_it_was():
    m, x = _Branchy().eval(), torch.randn(4, 8)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    capture_eager(m, (x,))
    assert all(not mod._forward_hooks and not mod._forward_pre_hooks for mod in m.modules())
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert not torch.overrides._get_current_function_mode_stack()
    assert torch.is_grad_enabled()


def test_a_failing_forward_names_its_layer():
    m = nn.Sequential(nn.Linear(8, 4), nn.Linear(5, 2))
    with pytest.raises(InputSpecError, match=r"failed in layer '1' \(Linear\)"):
        capture_eager(m, (torch.randn(2, 8),))
    assert all(not mod._forward_hooks and not mod._forward_pre_hooks for mod in m.modules())


def test_static_profiles_record_eagerly_and_cannot_be_timed_that_way():
    loaded = load_model("tiny_cnn")
    p = drive(profile_model(loaded, HW, static=True))
    assert p.model.capture_method is CaptureMethod.EAGER and p.static
    forced = drive(profile_model(loaded, HW, static=True, method=CaptureMethod.FX))
    assert forced.model.capture_method is CaptureMethod.FX and forced.total_macs == p.total_macs
    with pytest.raises(ProfilingError, match="cannot be timed"):
        drive(profile_model(loaded, HW, runs=1, method=CaptureMethod.EAGER))
    with pytest.raises(ProfilingError, match="cannot be run or timed"):
        capture_eager(loaded.module, loaded.inputs).runnable()


def test_eager_static_profile_of_a_hugging_face_bert_counts_what_export_counts():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                  vocab_size=100, max_position_embeddings=32)
    torch.manual_seed(0)
    m, x = transformers.BertModel(cfg).eval(), torch.randint(0, 100, (1, 16))
    eager = capture_eager(m, (x,))
    exported = capture(m, (x,))
    assert exported.method is CaptureMethod.EXPORT
    macs = sum(layer_metrics(layer).macs or 0 for layer in eager.graph)
    assert macs == sum(layer_metrics(layer).macs or 0 for layer in exported.graph)
    # per layer: 4 projections 16x64x64, the FFN 16x64x128 twice, attention 2 x 16x16x64; the pooler 64x64
    assert macs == 2 * (4 * 16 * 64 * 64 + 2 * 16 * 64 * 128 + 2 * 16 * 16 * 64) + 64 * 64
