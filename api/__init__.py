"""LayerScope: find the bottleneck layers of a PyTorch model and compress exactly those layers.

    import layerscope
    p = layerscope.profile(model, example_inputs)      # every layer: shapes, FLOPs, bytes, latency, bound
    p.ranked(10)                                       # the ten slowest layers (rows with .layer, .timing, .metrics)
    p.to_dataframe()                                   # one row per layer (needs pandas); p.to_csv(), p.save("p.json")

The headless core is ``layerscope.profiler`` (jobs, compression, sweeps); the command line is
``layerscope`` (or ``python -m layerscope``); the desktop app ``layerscope gui``.
"""

from layerscope.profiler import LayerScopeError, Profile, __version__
from layerscope.profiler.api import profile

__all__ = ["profile", "Profile", "LayerScopeError", "__version__"]
