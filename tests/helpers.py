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


# sweeps on digits_cnn (real labelled data), against a datasheet roof: no calibration
def _sweep_request():
    from layerscope.profiler.request import ModelRequest

    return ModelRequest("digits_cnn", runs=3, warmup=1, hardware="raspberry-pi-5")


REQ = _sweep_request()
# small but real: int8/int4 and 4-bit palettes on every layer or all but the most sensitive, and mixed precision
SMALL = {"techniques": {"quantize": {"bits": [8, 4]}, "palettize": {"bits": [4]}}, "layers": ["all", "all-but-sensitive:1"],
         "mixed": {"bits": [4], "keep_int8": [1]}}


def sweep(tmp_path, budgets, space=None, req=REQ, **kw):
    """A sweep recorded in tmp_path's history (ORT off unless ``ort=True``)."""
    from layerscope.profiler.progress import drive
    from layerscope.profiler.sweep import SearchSpace, SweepOptions, run_sweep

    opts = SweepOptions(budgets, SearchSpace.from_dict(space if space is not None else SMALL), history=str(tmp_path / "h.sqlite"),
                        ort=kw.pop("ort", False), **kw)
    return drive(run_sweep(req, opts))
