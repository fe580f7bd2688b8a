"""Save a (compressed) model as a torch.export program (.pt2) that ``layerscope`` can load again."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ..errors import LayerScopeError, describe, first_line
from ..files.safeio import atomic_path
from ..resources import untouched
from .trace import quiet_torch_logs

__all__ = ["save_pt2"]


def save_pt2(model: torch.nn.Module, inputs: Sequence[torch.Tensor], path: str | Path) -> None:
    """Export and write ``path`` atomically: a failure (or Ctrl+C) never leaves a truncated file
    in place of a good one."""
    try:
        with quiet_torch_logs(), untouched(model):
            ep = torch.export.export(model, tuple(inputs), strict=False)
    except Exception as exc:
        raise LayerScopeError(f"Could not save {path} as a torch.export program: {describe(exc)}") from exc
    with atomic_path(path, "--out") as tmp:
        try:
            torch.export.save(ep, str(tmp))
        except RuntimeError as exc:  # torch's zip writer reports a full disk as RuntimeError
            raise OSError(first_line(exc)) from exc
