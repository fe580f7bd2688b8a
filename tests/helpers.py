import torch
from torch import nn

from layerscope.profiler.capture import capture
from layerscope.profiler.metrics import layer_metrics


def metrics_of(module: nn.Module, *inputs: torch.Tensor, layer_id: str | None = None):
    """Capture ``module`` and return (layer, metrics) of ``layer_id`` (default: the only compute layer)."""
    cap = capture(module.eval(), list(inputs))
    layers = list(cap.graph)
    layer = cap.graph[layer_id] if layer_id else layers[0]
    return layer, layer_metrics(layer)


def run(capsys, *argv):
    """Run the CLI in-process; no traceback may reach the user. Returns (rc, stdout, stderr unwrapped)."""
    from layerscope.cli.main import main

    rc = main(["-q", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, " ".join(err.split())  # undo rich's wrapping


def full_report(capsys, tmp_path, model: str, estimate: str, runs: int = 2):
    """Profile, ONNX mapping and compress JSON of ``model`` (``--estimate``), and the report over all three.
    Returns the paths (profile, onnx, compress, report.html)."""
    profile, onnx, comp, out = (tmp_path / n for n in ("p.json", "o.json", "c.json", "report.html"))
    assert run(capsys, "profile", model, "--runs", str(runs), "--warmup", "1", "--json", str(profile), "--no-history")[0] == 0
    assert run(capsys, "onnx", model, "--runs", str(runs), "--warmup", "1", "--json", str(onnx))[0] == 0
    assert run(capsys, "compress", model, "--estimate", estimate, "--runs", "2", "--json", str(comp), "--no-history")[0] == 0
    rc, _, err = run(capsys, "report", str(profile), "--onnx", str(onnx), "--compress", str(comp), "-o", str(out))
    assert rc == 0, err
    return profile, onnx, comp, out


def plan_of(*specs, model=None):
    """A CompressionPlan from (select, technique, params) tuples."""
    from layerscope.profiler.compression import CompressionPlan, LayerSpec

    return CompressionPlan(tuple(LayerSpec(*s) for s in specs), model=model)
