import pytest
import torch

from layerscope.profiler import CaptureMethod, load_model, zoo_names
from layerscope.profiler.capture import capture
from layerscope.profiler.files.zoo import build_zoo_model
from layerscope.profiler.metrics import layer_metrics


@pytest.mark.parametrize(("name", "params"), [("mobilenet_v2", 3_504_872), ("resnet18", 11_689_512), ("resnet50", 25_557_032)])
def test_param_counts_equal_torchvision(name, params):
    assert sum(p.numel() for p in build_zoo_model(name).parameters()) == params


@pytest.mark.parametrize(("name", "gmacs"), [("resnet50", 4.09), ("mobilenet_v2", 0.30)])
def test_total_macs_at_224(name, gmacs):
    loaded = load_model(name)
    cap = capture(loaded.module, loaded.inputs)
    macs = sum(layer_metrics(layer).macs or 0 for layer in cap.graph)
    assert abs(macs / 1e9 - gmacs) / gmacs < 0.01


@pytest.mark.parametrize("name", zoo_names())
def test_every_zoo_model_captures_with_known_formulas(name):
    loaded = load_model(name)
    cap = capture(loaded.module, loaded.inputs)
    assert len(cap.graph) > 3
    unknown = [layer.id for layer in cap.graph if not layer_metrics(layer).known]
    assert unknown == []
    assert cap.graph.output_layers, "the output layer is known"
    assert all(a in cap.graph and b in cap.graph for a, b in cap.graph.edges)


def test_fx_failure_falls_back_to_export_and_says_so():
    loaded = load_model("gpt_mini")
    cap = capture(loaded.module, loaded.inputs)
    assert cap.method is CaptureMethod.EXPORT
    assert "torch.fx could not trace" in cap.notes[0]
    # leaf modules are grouped back from aten ops under their module path
    assert "blocks.0.attn.qkv" in cap.graph and cap.graph["blocks.0.attn.qkv"].op_kind == "linear"


def test_ids_parents_and_source_lines():
    loaded = load_model("resnet18")
    g = capture(loaded.module, loaded.inputs).graph
    conv = g["layer1.0.conv1"]
    assert conv.parents == ("layer1", "layer1.0") and conv.module_type.endswith("Conv2d")
    assert conv.source is not None and conv.source.file.endswith("zoo.py") and "conv1" in conv.source.code
    assert "layer1.0.relu:1" in g  # a module called twice gets a call index
    add = next(layer for layer in g if layer.op_kind == "add")
    assert add.id.startswith("layer1.0.") and add.module_path is None


def test_fx_and_export_agree_on_module_layers():
    loaded = load_model("resnet18")
    fx_graph = capture(loaded.module, loaded.inputs, CaptureMethod.FX).graph
    ex_graph = capture(loaded.module, loaded.inputs, CaptureMethod.EXPORT).graph
    fx_mods = {layer.id: layer_metrics(layer).macs for layer in fx_graph if layer.module_path}
    ex_mods = {layer.id: layer_metrics(layer).macs for layer in ex_graph if layer.module_path}
    assert fx_mods == ex_mods


def test_collapse_module_hierarchy():
    loaded = load_model("resnet18")
    g = capture(loaded.module, loaded.inputs).graph
    mapping, edges = g.collapsed(depth=1)
    assert mapping["layer1.0.conv1"] == "layer1" and mapping["conv1"] == "conv1"
    assert ("layer1", "layer2") in edges
    mapping, _ = g.collapsed(depth=1, expanded={"layer1"})
    assert mapping["layer1.0.conv1"] == "layer1.0"
    mapping, _ = g.collapsed(collapsed={"layer2.1"})
    assert mapping["layer2.1.bn2"] == "layer2.1" and mapping["layer2.0.bn2"] == "layer2.0.bn2"


def test_input_shape_and_dtype_options():
    loaded = load_model("tiny_cnn", [(2, 3, 16, 16)], torch.bfloat16)
    assert loaded.inputs[0].shape == (2, 3, 16, 16) and loaded.inputs[0].dtype == torch.bfloat16
    assert next(loaded.module.parameters()).dtype == torch.bfloat16
