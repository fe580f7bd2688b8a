"""Profile a model that is already in memory, as torchinfo and fvcore do:

    import layerscope
    p = layerscope.profile(model, example_inputs)   # a Profile: p.ranked(10), p.to_dataframe(), p.save("p.json")

``example_inputs``: a tensor, a tuple/list of tensors, or a dict of keyword tensors (``input_ids``,
``attention_mask``); ``kwargs`` adds keyword inputs. The model is profiled in eval mode and left in
the mode it was in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from .files.source import check_finite, check_own_inputs, module_with_inputs
from .hardware import resolve_hardware
from .pipeline import profile_model
from .profile import Profile
from .progress import Progress, drive
from .resources import threads as torch_threads

__all__ = ["profile"]


def profile(model: nn.Module, example_inputs: Any = None, *, kwargs: dict[str, Any] | None = None, hardware: str = "this",
            runs: int = 20, warmup: int = 3, static: bool = False, device: str = "cpu", threads: int | None = None,
            name: str | None = None, progress: Callable[[Progress], None] | None = None,
            max_memory_gib: float | None = None) -> Profile:
    """Capture, measure and classify every layer of ``model`` on ``example_inputs``; the same Profile the
    CLI and the app produce. ``hardware``: "this" (this machine, calibrated once and cached), a device
    profile name or a .json file. ``static``: shapes, FLOPs and bytes without timing. ``progress``: a
    callback for each step (``Progress``). ``max_memory_gib``: the activation-memory limit the CLI's
    ``--max-memory`` sets (None: the memory available now; 0: no check), checked before the first run."""
    was_training = getattr(model, "training", False)
    try:
        loaded = module_with_inputs(model, example_inputs, kwargs, name or type(model).__name__, f"<in-memory {type(model).__name__}>",
                                    "module", "layerscope.profile() got")
        check_finite(loaded.module)
        check_own_inputs(loaded, None if max_memory_gib is None else int(max_memory_gib * 2**30))
        with torch_threads(threads):
            hw = drive(resolve_hardware(hardware, "cuda" if device.startswith("cuda") else "cpu"), progress)
            return drive(profile_model(loaded, hw, runs=runs, warmup=warmup, device=device, static=static), progress)
    finally:
        if isinstance(model, nn.Module):
            model.train(was_training)
