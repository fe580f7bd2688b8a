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
