"""Small in-repo models that reproduce patterns of real third-party architectures (issue 13), each
named after the model it stands for. Factories return (module, inputs) for ``file.py:factory``."""

from __future__ import annotations

import collections

import torch
import torch.utils._pytree as pytree
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


class Conv1D(nn.Module):
    """transformers.pytorch_utils.Conv1D (GPT-2's c_attn, c_proj, c_fc): a linear layer with its weight
    transposed, (in, out), called as addmm; it is no torch.nn layer type."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size_out = x.size()[:-1] + (self.nf,)
        x = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
        return x.view(size_out)


class AttentionBlock(nn.Module):
    """torchvision ViT's encoder block: nn.MultiheadAttention, then a GPT-2 style MLP of Conv1D layers."""

    def __init__(self, dim: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.c_fc = Conv1D(4 * dim, dim)
        self.c_proj = Conv1D(dim, 4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.c_proj(torch.relu(self.c_fc(x)))


def attention_block():
    torch.manual_seed(0)
    return AttentionBlock().eval(), (torch.randn(1, 16, 64),)


class InPlaceResidual(nn.Module):
    """torchvision's ResNet block: BatchNorm then ReLU(inplace=True), an `out += identity` residual, then an
    in-place ReLU method. ``inplace=False`` builds the twin that overwrites nothing."""

    def __init__(self, inplace: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=inplace)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn(self.conv(x)))
        out = self.conv2(out)
        if self.inplace:
            out += x
            return out.relu_()
        return torch.relu(out + x)


def in_place_residual(inplace: bool = True):
    torch.manual_seed(0)
    m = InPlaceResidual(inplace)
    with torch.no_grad():
        m.bn.running_mean.uniform_(-0.5, 0.5)
        m.bn.running_var.uniform_(0.5, 2.0)
    return m.eval(), (torch.randn(1, 8, 8, 8),)


class RelativeBuckets(nn.Module):
    """T5's relative-position bucketing: log(0) = -inf for the nearby positions, discarded by torch.where."""

    def __init__(self, n: int = 16, dim: int = 32) -> None:
        super().__init__()
        self.n = n
        self.bias = nn.Embedding(8, 1)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(x.shape[1], device=x.device)
        rel = (pos[None, :] - pos[:, None]).abs()
        is_small = rel < 4
        large = 4 + (torch.log(rel.float() / 4) / 2).to(torch.long)  # log(0) = -inf where rel == 0
        buckets = torch.where(is_small, rel, large.clamp(max=7))
        scores = self.proj(x) @ x.transpose(-1, -2) + self.bias(buckets)[..., 0]
        return scores.softmax(-1) @ x


def relative_buckets():
    torch.manual_seed(0)
    return RelativeBuckets().eval(), (torch.randn(1, 16, 32),)


def nan_output():
    """A model whose output itself holds -inf (log of a ReLU's zeros)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), _Log()).eval(), (torch.randn(4, 8),)


class _Log(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x)


class _Backbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU())
        self.stage = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.stem(x)
        return [f1, self.stage(f1)]


class _Head(nn.Module):
    """SSD/YOLO-style: one class and one box conv per feature level, fed a list of feature maps."""

    def __init__(self) -> None:
        super().__init__()
        self.cls = nn.ModuleList([nn.Conv2d(8, 3, 1), nn.Conv2d(16, 3, 1)])
        self.box = nn.ModuleList([nn.Conv2d(8, 4, 1), nn.Conv2d(16, 4, 1)])

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        cls = torch.cat([c(f).flatten(2) for c, f in zip(self.cls, features, strict=True)], 2)
        box = torch.cat([b(f).flatten(2) for b, f in zip(self.box, features, strict=True)], 2)
        return cls, box


class TinyDetector(nn.Module):
    """torchvision SSDlite / ultralytics: the network between pre-processing and a data-dependent NMS loop."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.backbone = _Backbone()
        self.head = _Head()

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = images - self.mean
        scores, boxes = self.head(self.backbone(x))
        best = scores.sigmoid().amax(1)[0]
        keep: list[int] = []
        order = best.argsort(descending=True)
        while order.numel() > 0 and len(keep) < 5:  # NMS-like: a loop on tensor values
            keep.append(int(order[0]))
            order = order[1:][best[order[1:]] < best[order[0]] - 0.01]
        return [boxes[0, :, keep]]


def tiny_detector():
    torch.manual_seed(0)
    return TinyDetector().eval(), (torch.randn(1, 3, 32, 32),)


def constant_output():
    """A random-weight model whose output ignores its input: the first layer's ReLU is always 0."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    with torch.no_grad():
        m[0].bias.fill_(-100.0)
    return m.eval(), (torch.randn(1, 8),)


class TinyBranches(nn.Module):
    """An add of two branches whose ranges differ 100x, both around 1e-10: numerically zero."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x) * 1e-10 + self.b(x) * 1e-12


def tiny_branches():
    torch.manual_seed(0)
    return TinyBranches().eval(), (torch.randn(1, 8),)


class LSTMTagger(nn.Module):
    """A sequence tagger: embedding, a 2-layer bidirectional LSTM, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(100, 16)
        self.lstm = nn.LSTM(16, 32, num_layers=2, bidirectional=True, batch_first=True)
        self.out = nn.Linear(64, 5)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.lstm(self.emb(ids))[0])


def lstm_tagger():
    torch.manual_seed(0)
    return LSTMTagger().eval(), (torch.randint(0, 100, (1, 12)),)


def window_attention(x: torch.Tensor, qkv_weight: torch.Tensor) -> torch.Tensor:
    """Registered with torch.fx.wrap like torchvision's shifted_window_attention: fx keeps it as one node."""
    return torch.nn.functional.linear(x, qkv_weight).softmax(-1)


def padded_window_attention(x: torch.Tensor, qkv_weight: torch.Tensor) -> torch.Tensor:
    """Wrapped too, with Python control flow on a shape (fx cannot trace inside; export can)."""
    if x.shape[-1] % 2:
        x = torch.nn.functional.pad(x, (0, 1))
    return torch.nn.functional.linear(x, qkv_weight)


torch.fx.wrap("window_attention")
torch.fx.wrap("padded_window_attention")


class WrappedAttention(nn.Module):
    def __init__(self, padded: bool = False) -> None:
        super().__init__()
        self.padded = padded
        self.qkv = nn.Parameter(torch.randn(24, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return padded_window_attention(x, self.qkv) if self.padded else window_attention(x, self.qkv)


class Output(collections.OrderedDict):
    """A Hugging Face ``ModelOutput``'s shape: an OrderedDict subclass registered as a pytree node with a
    serialised name, so a .pt2 exported from it loads only in a process that registered it too."""


pytree.register_pytree_node(Output, lambda o: (list(o.values()), list(o.keys())),
                            lambda values, keys: Output(zip(keys, values, strict=True)),
                            serialized_type_name="tests.patterns.Output")


class OutputModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(16, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> Output:
        h = torch.relu(self.proj(x))
        return Output(last_hidden_state=h, logits=self.head(h))


def output_model():
    torch.manual_seed(0)
    return OutputModel().eval(), (torch.randn(2, 16),)


class _CheckpointingLayer(nn.Module):
    """transformers' GradientCheckpointingLayer: every decoder block of a Hugging Face model overrides __call__."""

    def __call__(self, *args, **kwargs):
        return super().__call__(*args, **kwargs)


class _Block(_CheckpointingLayer):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(32, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x))


class CheckpointingBlocks(nn.Module):
    """A Hugging Face decoder's layout: blocks in a ModuleList that override __call__ (NNCF 3.4 then names block 1's
    linear ``fc/linear/1``, not ``h/1/fc/linear/0``), and an output layer tied to the embedding (GPT-2's lm_head)."""

    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(64, 32)
        self.h = nn.ModuleList([_Block(), _Block()])
        self.lm_head = nn.Linear(32, 64, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.wte(ids)
        for block in self.h:
            x = block(x)
        return self.lm_head(x)


def checkpointing_blocks():
    torch.manual_seed(0)
    return CheckpointingBlocks().eval(), (torch.randint(0, 64, (1, 8)),)
