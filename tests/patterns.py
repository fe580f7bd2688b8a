"""Small in-repo models that reproduce patterns of real third-party architectures (issue 13), each
named after the model it stands for. Factories return (module, inputs) for ``file.py:factory``."""

from __future__ import annotations

import torch
from torch import nn


def _grid(h: int, w: int) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return torch.stack((xs, ys), 0).unsqueeze(0) + 0.5


class AnchorHead(nn.Module):
    """ultralytics' Detect: anchors are computed on the first forward and cached on the module."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)
        self.shape: tuple[int, ...] | None = None
        self.anchors = self.strides = torch.empty(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(torch.relu(self.stem(x)))
        if self.shape != tuple(x.shape):
            self.anchors, self.strides = _grid(x.shape[2], x.shape[3]), torch.full((1, 1, 1, 1), 8.0)
            self.shape = tuple(x.shape)
        return (y + self.anchors) * self.strides


def anchor_head():
    torch.manual_seed(0)
    return AnchorHead().eval(), (torch.randn(1, 3, 16, 16),)


class DeviceBiasCache(nn.Module):
    """timm's LeViT attention: a bias gathered from a table, cached per ``str(device)`` in eval."""

    def __init__(self, n: int = 16) -> None:
        super().__init__()
        self.proj = nn.Linear(n, n)
        self.table = nn.Parameter(torch.randn(4, n))
        self.register_buffer("idx", torch.arange(n) % 4, persistent=False)
        self.cache: dict[str, torch.Tensor] = {}

    def bias(self, device: torch.device) -> torch.Tensor:
        if self.training:
            return self.table[self.idx, 0]
        key = str(device)
        if key not in self.cache:
            self.cache[key] = self.table[self.idx, 0]
        return self.cache[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x) + self.bias(x.device)


def device_bias_cache():
    torch.manual_seed(0)
    return nn.Sequential(DeviceBiasCache(), nn.ReLU(), DeviceBiasCache()).eval(), (torch.randn(2, 16),)


class TiedDecoder(nn.Module):
    """GPT-2 / T5: the output projection is the token embedding (one storage, two layers)."""

    def __init__(self, vocab: int = 512, dim: int = 64) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, dim)
        self.block = nn.Linear(dim, dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(torch.relu(self.block(self.wte(ids))))


def tied_decoder():
    torch.manual_seed(0)
    return TiedDecoder().eval(), (torch.randint(0, 512, (1, 16)),)
