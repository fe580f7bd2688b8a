"""How many bytes a model's weights take: the one definition every number in LayerScope uses.

Parameters and buffers are counted once per distinct storage, at the storage's size: a tied weight
(GPT-2's ``lm_head.weight`` is ``wte.weight``), two parameters that are views of one tensor, and a
module registered under two names all count once — what memory really holds. Tensors without real
storage (the meta device) count at their own size."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["WeightBytes", "weight_bytes", "storage_key"]


@dataclass(frozen=True)
class WeightBytes:
    total: int  # bytes of all distinct parameter and buffer storages
    parameters: int  # distinct parameter elements (a tied weight once)
    storages: frozenset[int]  # data pointers of those storages (timing tells weights from activations by them)


def storage_key(t: torch.Tensor) -> tuple[str, int]:
    """One key per storage: (device, data pointer); tensors without real storage (meta) by identity."""
    try:
        ptr = t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        ptr = 0
    return (str(t.device), ptr) if ptr else ("id", id(t))


def weight_bytes(model: nn.Module) -> WeightBytes:
    sizes: dict[tuple[str, int], int] = {}
    elements: dict[tuple[tuple[str, int], int, tuple[int, ...], tuple[int, ...]], int] = {}
    for kind, tensors in (("param", model.parameters()), ("buffer", model.buffers())):
        for t in tensors:
            key = storage_key(t)
            sizes[key] = t.untyped_storage().nbytes() if key[0] != "id" else t.numel() * t.element_size()
            if kind == "param":
                elements[(key, int(t.storage_offset()), tuple(t.shape), tuple(t.stride()))] = t.numel()
    return WeightBytes(sum(sizes.values()), sum(elements.values()), frozenset(k[1] for k in sizes if k[0] != "id"))
