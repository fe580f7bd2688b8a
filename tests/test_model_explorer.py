"""Model Explorer overlays, checked against Model Explorer itself (optional extra): every file rebuilds
through its node_data_builder dataclasses unchanged, and every node key is a node id of the graph its own
PyTorch / ONNX adapter builds from the model file we wrote."""

import json

import pytest
import torch

from layerscope.cli.main import main
from layerscope.profiler import load_model
from layerscope.profiler.capture import capture, capture_exported
from layerscope.profiler.reports.model_explorer import layer_nodes

pytestmark = pytest.mark.toolchain  # Model Explorer's adapters, torch.export and ONNX


def _through_builder(data: dict) -> dict:
    """The file as Model Explorer's Python builder writes it from the same fields (an unknown field or a
    value of the wrong shape fails in its dataclasses)."""
    from model_explorer.node_data_builder import GradientItem, GraphNodeData, ModelNodeData, NodeDataResult, ThresholdItem

    graphs = {}
    for gid, g in data.items():
        assert set(g) <= {"name", "results", "gradient", "thresholds"}
        graphs[gid] = GraphNodeData(name=g["name"], results={k: NodeDataResult(**v) for k, v in g["results"].items()},
                                    gradient=[GradientItem(**x) for x in g.get("gradient", [])],
                                    thresholds=[ThresholdItem(**x) for x in g.get("thresholds", [])])
    return json.loads(ModelNodeData(graphsData=graphs).to_json_string())


def _check_files(folder, names, graph_nodes: dict[str, set[str]]) -> dict[str, dict]:
    out = {}
    for name in names:
        data = json.loads((folder / f"{name}.json").read_text())
        rebuilt = _through_builder(data)
        for gid, g in data.items():
            assert gid in graph_nodes, f"{name}: graph {gid!r} is not one Model Explorer builds"
            assert g["results"] and set(g["results"]) <= graph_nodes[gid], f"{name}: keys that are no node of {gid!r}"
            assert all(rebuilt[gid][k] == g[k] for k in g)  # nothing lost or reshaped by the builder
            assert all(isinstance(v["value"], int | float) for v in g["results"].values())
        out[name] = data
    return out


def _pt2_nodes(path) -> dict[str, set[str]]:
    """Graph id -> node ids, as Model Explorer's built-in PyTorch adapter builds them from the .pt2 file."""
    from model_explorer.builtin_pytorch_exportedprogram_adapter import BuiltinPytorchExportedProgramAdapter

    graphs = BuiltinPytorchExportedProgramAdapter().convert(str(path), {"const_element_count_limit": 16})["graphs"]
    return {g.id: {n.id for n in g.nodes} for g in graphs}


def test_profile_model_explorer_lines_up_with_its_pytorch_adapter(tmp_path, capsys):
    pytest.importorskip("model_explorer")
    folder = tmp_path / "me"
    assert main(["-q", "profile", "resnet18", "--runs", "2", "--warmup", "1", "--no-history", "--top", "1",
                 "--json", str(tmp_path / "p.json"), "--model-explorer", str(folder)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "69 of 69 layers placed" in out and f"model-explorer {folder / 'model.pt2'} --node_data_paths=" in out
    nodes = _pt2_nodes(folder / "model.pt2")
    files = _check_files(folder, ["latency_ms", "latency_share_pct", "flops", "bound", "roof_pct"], nodes)
    latency = files["latency_ms"]["graph"]["results"]
    assert len(latency) == 69  # one node per layer: module groups in Model Explorer sum to the layer sums
    profile = json.loads((tmp_path / "p.json").read_text())
    total = sum(t["latency_ms"] for t in profile["timings"].values())
    assert sum(v["value"] for v in latency.values()) == pytest.approx(total, rel=1e-6)
    assert set(v["value"] for v in files["bound"]["graph"]["results"].values()) == {0, 1}


def test_compress_model_explorer_carries_sqnr_and_a_pt2_keeps_its_own_nodes(tmp_path, capsys):
    pytest.importorskip("model_explorer")
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"version": 1, "specs": [{"select": "type:Conv2d", "technique": "quantize", "params": {"bits": 4}}]}))
    folder = tmp_path / "me"
    assert main(["-q", "compress", "digits_cnn", "--plan", str(plan), "--runs", "2", "--no-history", "--out", str(tmp_path / "c.pt2"),
                 "--model-explorer", str(folder)]) == 0
    nodes = _pt2_nodes(folder / "model.pt2")
    files = _check_files(folder, ["latency_ms", "flops", "bound", "sqnr_db"], nodes)
    sqnr = files["sqnr_db"]["graph"]
    assert {"conv2d", "conv2d_1", "conv2d_2"} <= set(sqnr["results"]) and sqnr["thresholds"][0]["value"] == 20

    capsys.readouterr()  # a .pt2 is opened as it is: the overlay points at that file and uses its node names
    assert main(["-q", "profile", str(tmp_path / "c.pt2"), "--runs", "1", "--no-history", "--top", "1",
                 "--model-explorer", str(tmp_path / "me2")]) == 0
    assert not (tmp_path / "me2" / "model.pt2").exists() and str(tmp_path / "c.pt2") in capsys.readouterr().out
    nodes = _pt2_nodes(tmp_path / "c.pt2")
    _check_files(tmp_path / "me2", ["latency_ms", "flops"], nodes)


def test_onnx_model_explorer_lines_up_with_its_onnx_adapter(tmp_path, capsys):
    pytest.importorskip("model_explorer_onnx")
    from model_explorer_onnx.main import ONNXAdapter

    folder = tmp_path / "me"
    assert main(["-q", "onnx", "resnet18", "--runs", "2", "--warmup", "1", "--top", "1", "--json", str(tmp_path / "o.json"),
                 "--model-explorer", str(folder)]) == 0
    graphs = ONNXAdapter().convert(str(folder / "model.onnx"), {})["graphs"]
    files = _check_files(folder, ["ort_ms", "ort_share_pct"], {g.id: {n.id for n in g.nodes} for g in graphs})
    result = json.loads((tmp_path / "o.json").read_text())
    placed = files["ort_ms"][next(iter(files["ort_ms"]))]["results"]
    assert sum(v["value"] for v in placed.values()) == pytest.approx(sum(o["latency_ms"] for o in result["ops"]), rel=1e-6)
    fused = [o for o in result["ops"] if len(o["onnx_nodes"]) > 1]
    assert fused and all(sum(n in placed for n in o["onnx_nodes"]) >= 1 for o in fused)  # a fused op sits on one of its nodes
    assert result["onnx_path"] == ""  # the scratch export is gone; the copy in the folder is what Model Explorer opens
    import onnx

    onnx.checker.check_model(str(folder / "model.onnx"), full_check=True)  # with its weights (the exporter's external data)
    capsys.readouterr()  # and a plain .onnx file is pointed at where it is, with the same node ids
    assert main(["-q", "onnx", str(folder / "model.onnx"), "--runs", "1", "--top", "1", "--model-explorer", str(tmp_path / "me2")]) == 0
    assert str(folder / "model.onnx") in capsys.readouterr().out and not (tmp_path / "me2" / "model.onnx").exists()
    _check_files(tmp_path / "me2", ["ort_ms"], {g.id: {n.id for n in g.nodes} for g in graphs})


def test_a_model_output_class_is_flattened_so_model_explorer_loads_the_program(tmp_path, capsys):
    """A Hugging Face model returns a ModelOutput, a pytree class only a process that imported transformers can
    rebuild: Model Explorer's process could not load that program. Its outputs are written as a flat tuple,
    and the program loads in a fresh process (the same node ids, every layer placed)."""
    pytest.importorskip("model_explorer")
    import subprocess
    import sys
    from pathlib import Path

    spec = f"{Path(__file__).parent / 'patterns.py'}:output_model"
    folder = tmp_path / "me"
    assert main(["-q", "profile", spec, "--runs", "2", "--no-history", "--top", "1", "--model-explorer", str(folder)]) == 0
    assert "3 of 3 layers placed" in " ".join(capsys.readouterr().out.split())
    code = ("import json, sys; from model_explorer.builtin_pytorch_exportedprogram_adapter import "
            "BuiltinPytorchExportedProgramAdapter as A; g = A().convert(sys.argv[1], {'const_element_count_limit': 16})['graphs']; "
            "print(json.dumps({x.id: [n.id for n in x.nodes] for x in g}))")
    done = subprocess.run([sys.executable, "-c", code, str(folder / "model.pt2")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]  # without the flattening: "Deserializing tests.patterns.Output ... not registered"
    nodes = {gid: set(ids) for gid, ids in json.loads(done.stdout.strip().splitlines()[-1]).items()}
    _check_files(folder, ["latency_ms", "flops"], nodes)


def test_layers_match_across_fx_and_export_names():
    """fx and torch.export name functional calls differently (resnet's ``add`` vs ``add_``): such layers pair up by
    enclosing module and op kind, so every layer of a torch.fx profile lands on a node of the exported program."""
    src = load_model("resnet18")
    fx_graph = capture(src.module, src.inputs).graph
    ep = torch.export.export(src.module.eval(), tuple(src.inputs), strict=False)
    nodes = layer_nodes(fx_graph, capture_exported(ep, src.module, src.inputs).graph)
    assert len(nodes) == len(fx_graph) and len(set(nodes.values())) == len(fx_graph)
    assert nodes["layer1.0.add"].startswith("add") and nodes["layer1.0.conv1"].startswith("conv2d")
    ep_nodes = {n.name for n in ep.graph_module.graph.nodes}
    assert set(nodes.values()) <= ep_nodes


def test_model_explorer_folder_errors(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert main(["-q", "profile", "tiny_cnn", "--static", "--no-history", "--model-explorer", str(tmp_path / "f")]) == 2
    assert "not a folder" in " ".join(capsys.readouterr().err.split())
    assert main(["-q", "profile", "tiny_cnn", "--static", "--no-history", "--model-explorer", str(tmp_path / "no" / "me")]) == 2
    assert "does not exist" in " ".join(capsys.readouterr().err.split())
