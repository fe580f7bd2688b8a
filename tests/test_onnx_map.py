import json

import onnx
import pytest
import torch
from torch import nn

from layerscope.profiler import OnnxMappingError, drive, load_model
from layerscope.profiler.capture import capture
from layerscope.profiler.runtimes.onnx import MatchHow, OnnxProfile, map_onnx

pytestmark = [pytest.mark.toolchain,  # every test exports to ONNX and runs ONNX Runtime
              pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning", "ignore::UserWarning")]


class ConvBNReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


class Block(nn.Module):
    """A transformer block: attention + layer norm + MLP."""

    def __init__(self, dim=32, heads=4):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(4 * dim, dim)
        self.heads = heads

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).reshape(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.fc2(self.act(self.fc1(self.ln2(x))))


def _map(model, x, level, tmp_path, runs=3):
    model = model.eval()
    graph = capture(model, [x]).graph
    return graph, drive(map_onnx(model, [x], graph, opt_level=level, runs=runs, warmup=1, name="m", workdir=tmp_path / "work"))


def test_fused_conv_bn_relu_maps_to_exactly_those_three_layers(tmp_path):
    _, p = _map(ConvBNReLU(), torch.randn(1, 3, 16, 16), "all", tmp_path)
    conv_ops = [o for o in p.ops if o.op_type == "Conv"]
    assert len(conv_ops) == 1 and conv_ops[0].fused
    assert set(conv_ops[0].layer_ids) == {"conv", "bn", "relu"}
    assert conv_ops[0].how is MatchHow.SCOPE
    assert p.coverage_time == 1.0
    # with ORT's optimiser off only the exporter's own BatchNorm->Conv fold remains
    _, p0 = _map(ConvBNReLU(), torch.randn(1, 3, 16, 16), "disabled", tmp_path)
    assert sorted(o.layer_ids for o in p0.ops) == [("conv", "bn"), ("relu",)]


def test_transformer_block_every_op_maps(tmp_path):
    graph, p = _map(Block(), torch.randn(1, 8, 32), "all", tmp_path)
    assert p.unmapped == [] and p.coverage_ops == 1.0
    mapped_layers = {lid for o in p.ops for lid in o.layer_ids}
    assert {"qkv", "proj", "fc1", "fc2", "ln1", "ln2"} <= mapped_layers
    assert all(lid in graph for lid in mapped_layers)
    for o in p.ops:
        for lid in o.layer_ids:
            assert o in p.ops_for_layer(lid)


@pytest.mark.parametrize("name", ["tiny_cnn", "mobilenet_v2", "resnet18", "resnet50", "vit_small", "gpt_mini"])
def test_zoo_models_op_time_coverage(name, tmp_path):
    loaded = load_model(name)
    graph = capture(loaded.module, loaded.inputs).graph
    for level in ("basic", "all"):
        p = drive(map_onnx(loaded.module, loaded.inputs, graph, opt_level=level, runs=1, warmup=1, name=name, workdir=tmp_path / "work"))
        assert p.coverage_time >= 0.99, (level, p.unmapped)
        assert all(set(o.layer_ids) <= set(graph.ids()) for o in p.ops)


def test_plain_onnx_without_metadata_maps_to_its_own_nodes(tmp_path):
    _, p = _map(ConvBNReLU(), torch.randn(1, 3, 16, 16), "disabled", tmp_path)
    model = onnx.load(p.onnx_path)
    for i, n in enumerate(model.graph.node):  # strip every source hint and rename the nodes
        del n.metadata_props[:]
        n.name = f"n{i}"
    stripped = tmp_path / "renamed.onnx"
    onnx.save(model, str(stripped))
    q = drive(map_onnx(onnx_path=stripped, opt_level="all", runs=2, warmup=1, workdir=tmp_path / "w"))
    assert not q.has_source and q.ops
    assert all(o.layer_ids == () for o in q.ops)
    assert q.coverage_ops == 1.0  # honest: every op maps to the file's own nodes
    fused = next(o for o in q.ops if o.op_type == "Conv")
    # the exporter folded BatchNorm into the Conv; ORT fuses Conv + Relu: the one op covers every node
    assert [n.op_type for n in model.graph.node] == ["Conv", "Relu"]
    assert set(fused.onnx_nodes) == {"n0", "n1"}


def test_bad_files_and_providers(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    with pytest.raises(OnnxMappingError, match="not a valid ONNX model"):
        drive(map_onnx(onnx_path=bad))
    _, p = _map(ConvBNReLU(), torch.randn(1, 3, 16, 16), "disabled", tmp_path)
    data = open(p.onnx_path, "rb").read()
    trunc = tmp_path / "truncated.onnx"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(OnnxMappingError, match="corrupt or truncated"):
        drive(map_onnx(onnx_path=trunc))
    with pytest.raises(OnnxMappingError, match="provider 'NoSuchExecutionProvider' is not available"):
        drive(map_onnx(onnx_path=p.onnx_path, provider="NoSuchExecutionProvider"))


def test_json_round_trip(tmp_path):
    _, p = _map(ConvBNReLU(), torch.randn(1, 3, 16, 16), "all", tmp_path)
    assert OnnxProfile.from_json(p.to_json()) == p
    assert json.loads(p.to_json())["opt_level"] == "all"
    lat = p.layer_latency_ms()
    assert set(lat) == {"conv", "bn", "relu"} and sum(lat.values()) == pytest.approx(p.total_op_ms)
    three = sum(o.latency_ms for o in p.ops if len(o.layer_ids) == 3)  # the fused Conv and its ReorderOutput
    weighted = p.layer_latency_ms({"conv": 3.0, "bn": 1.0, "relu": 0.0})  # split by eager shares
    assert weighted["conv"] - lat["conv"] == pytest.approx(three * (3 / 4 - 1 / 3))
    assert sum(weighted.values()) == pytest.approx(p.total_op_ms)


@torch.library.custom_op("layerscope_test::twice", mutates_args=())
def twice(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@twice.register_fake
def _(x):
    return torch.empty_like(x)


class Unexportable(nn.Module):
    def forward(self, x):
        return twice(x) + 1  # a custom op with no ONNX translation


def test_model_neither_exporter_can_export_names_the_op(tmp_path):
    with pytest.raises(OnnxMappingError, match=r"Neither ONNX exporter could export Unexportable \(unsupported op layerscope_test::twice\)"):
        drive(map_onnx(Unexportable(), [torch.randn(4, 8)], None, workdir=tmp_path / "work"))


def test_torchscript_fallback_when_dynamo_export_fails(tmp_path, monkeypatch):
    real_export = torch.onnx.export

    def export(*args, dynamo=True, **kwargs):
        if dynamo:
            raise RuntimeError("simulated dynamo exporter failure")
        return real_export(*args, dynamo=False, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", export)
    _, p = _map(ConvBNReLU(), torch.randn(1, 3, 16, 16), "all", tmp_path)
    assert p.exporter.value == "torch.onnx (TorchScript)"
    assert "simulated dynamo exporter failure" in p.notes[0]
    assert p.coverage_time >= 0.99  # matched through the TorchScript scope names (/conv/Conv …)
    assert {"conv", "relu"} <= {lid for o in p.ops for lid in o.layer_ids}


def test_torchscript_node_names_map_to_module_paths():
    """The TorchScript exporter (the fallback when dynamo fails, as on T5) names nodes by scopes that are full
    paths or relative names: /encoder/block.0/layer.1/DenseReluDense/wo/MatMul is encoder.block.0.layer.1.DenseReluDense.wo."""
    from layerscope.profiler.runtimes.onnx.sources import _scope_path

    known = {"encoder", "encoder.block.0", "encoder.block.0.layer.1", "encoder.block.0.layer.1.DenseReluDense",
             "encoder.block.0.layer.1.DenseReluDense.wo", "layer1", "layer1.0", "layer1.0.conv1"}
    assert _scope_path(["encoder", "block.0", "layer.1", "DenseReluDense", "wo"], known) == "encoder.block.0.layer.1.DenseReluDense.wo"
    assert _scope_path(["layer1", "layer1.0", "conv1"], known) == "layer1.0.conv1"  # full, full, relative
    assert _scope_path(["model", "encoder", "block.0"], known) == "encoder.block.0"  # a wrapper's own scope is skipped
    assert _scope_path(["nothing"], known) is None


def test_exporter_errors_are_the_real_cause_in_one_plain_line():
    from layerscope.profiler.runtimes.onnx.export import _export_error

    try:
        try:
            raise ValueError("Cannot view a tensor with shape torch.Size([1, 16, 4, 16])\n\nWhile executing %view_4 ...")
        except ValueError as inner:
            raise RuntimeError("Failed to decompose the FX graph. \x1b[96mThis is step 2/3\x1b[0m of exporting") from inner
    except RuntimeError as exc:
        assert _export_error(exc) == "ValueError: Cannot view a tensor with shape torch.Size([1, 16, 4, 16])"
    ir = "\n".join(["graph(%x : Float(1, 3)):", *[f"  %{i} : Tensor = aten::add(%x, %x)" for i in range(600)],
                    "RuntimeError: Unsupported: ONNX export of operator grid_sampler"])
    assert _export_error(RuntimeError(ir)) == "RuntimeError: RuntimeError: Unsupported: ONNX export of operator grid_sampler"


def test_torchscript_functional_ops_map_by_parent_kind_and_order(tmp_path):
    """With the TorchScript exporter (no node metadata), /c_fc/Gemm used to take its nearest neighbour's layer (attn);
    it is the addmm inside c_fc (transformers' Conv1D), and the top-level /Add, /Relu, /Add_1 are add, relu, add_3."""
    import contextlib
    import io
    import sys
    from pathlib import Path

    import onnx

    from layerscope.profiler.capture import capture
    from layerscope.profiler.runtimes.onnx.results import MatchHow
    from layerscope.profiler.runtimes.onnx.sources import source_map

    sys.path.insert(0, str(Path(__file__).parent))
    from patterns import attention_block

    m, x = attention_block()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        torch.onnx.export(m, x, str(tmp_path / "ts.onnx"), dynamo=False)
    sm = source_map(onnx.load(str(tmp_path / "ts.onnx")), capture(m, x).graph)
    got = {name: (s.layer_ids, s.how) for name, s in sm.items()}
    assert got["/c_fc/Gemm"] == (("c_fc.addmm",), MatchHow.KIND_ORDER)
    assert got["/c_proj/Gemm"] == (("c_proj.addmm_1",), MatchHow.KIND_ORDER)
    assert [got[n][0] for n in ("/Add", "/Relu", "/Add_1")] == [("add",), ("relu",), ("add_3",)]
    assert all(s.layer_ids == ("attn",) for name, s in sm.items() if name.startswith("/attn/"))  # the leaf module, by scope
