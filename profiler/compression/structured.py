"""Structured channel pruning that really removes channels (so FLOPs and latency drop).

Torch-Pruning's dependency graph finds every layer coupled to a pruned channel (the BatchNorm
after a conv, the next conv's input channels, every conv on the same residual sum) and repairs
them together. Channels are ranked by the L1 or L2 norm of the selected layer's output-channel
weights; the lowest ``amount`` fraction go.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import PlanError

__all__ = ["ChannelPruneReport", "prune_channels"]


@dataclass(frozen=True)
class ChannelPruneReport:
    layer_id: str
    spec_index: int
    norm: str
    channels_before: int
    channels_after: int
    coupled_layers: tuple[str, ...]  # other modules the dependency graph changed with it


def _out_channels(module: nn.Module) -> int:
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.out_channels
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.Embedding):
        return module.embedding_dim
    raise TypeError(type(module).__name__)


def _channel_scores(module: nn.Module, norm: str) -> torch.Tensor:
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    w = weight.detach().float()
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        w = w.transpose(0, 1)  # [in, out/groups, ...] -> output channels first
    if isinstance(module, nn.Embedding):
        w = w.t()
    flat = w.reshape(w.shape[0], -1)
    return flat.abs().sum(1) if norm == "l1" else flat.pow(2).sum(1).sqrt()


def prune_channels(model: nn.Module, inputs: Sequence[torch.Tensor],
                   targets: Sequence[tuple[str, str, int, float, str]]) -> list[ChannelPruneReport]:
    """Prune ``model`` in place. ``targets``: (layer id, module path, spec index, amount, norm)."""
    import torch_pruning as tp

    if not targets:
        return []
    ref_shape = _output_shape(model, inputs)
    try:
        with torch.inference_mode(False), torch.enable_grad():  # the dependency graph is traced through autograd
            dg = tp.DependencyGraph().build_dependency(model, example_inputs=tuple(inputs))
    except Exception as exc:
        raise PlanError(f"prune_channels: Torch-Pruning could not build the model's dependency graph: {type(exc).__name__}: {exc}") from exc
    names = {m: n for n, m in model.named_modules()}
    # Amounts are fractions of each layer's channels in the model as given: a layer already
    # shrunk through coupling with an earlier target is pruned only down to its own target.
    original = {path: _out_channels(model.get_submodule(path)) for _, path, _, _, _ in targets}
    reports = []
    for layer_id, path, spec_index, amount, norm in targets:
        module = model.get_submodule(path)
        before = original[path]
        keep = max(1, before - round(amount * before))
        n_prune = _out_channels(module) - keep
        if n_prune <= 0:
            reports.append(ChannelPruneReport(layer_id, spec_index, norm, before, _out_channels(module), ()))
            continue
        idxs = torch.argsort(_channel_scores(module, norm), stable=True)[:n_prune].tolist()
        try:
            pruner = dg.get_pruner_of_module(module)
            group = dg.get_pruning_group(module, pruner.prune_out_channels, idxs=idxs)
            if not dg.check_pruning_group(group):
                raise PlanError(f"spec {spec_index}: prune_channels on {layer_id!r} would leave a coupled layer with no channels.")
            coupled = sorted({names.get(dep.target.module, "") for dep, _ in group} - {path, ""})
            with torch.no_grad():
                group.prune()
        except PlanError:
            raise
        except Exception as exc:
            raise PlanError(f"spec {spec_index}: prune_channels cannot prune layer {layer_id!r}: {type(exc).__name__}: {exc}") from exc
        reports.append(ChannelPruneReport(layer_id, spec_index, norm, before, _out_channels(module), tuple(coupled)))
    try:
        shape = _output_shape(model, inputs)
    except Exception as exc:
        raise PlanError(f"prune_channels: the pruned model no longer runs ({type(exc).__name__}: {exc}); "
                        f"exclude {reports[-1].layer_id!r} and its coupled layers.") from exc
    if shape != ref_shape:
        raise PlanError(f"prune_channels changed the model output shape from {ref_shape} to {shape}; exclude the layers next to the output.")
    return reports


@torch.no_grad()
def _output_shape(model: nn.Module, inputs: Sequence[torch.Tensor]) -> tuple[tuple[int, ...], ...]:
    """The shape of every tensor the model returns (a tensor, tuple, dict or Hugging Face ModelOutput)."""
    import torch.utils._pytree as pytree

    out = model(*inputs)
    leaves = pytree.tree_leaves(dict(out) if isinstance(out, dict) else out)
    return tuple(tuple(t.shape) for t in leaves if isinstance(t, torch.Tensor))
