"""Write the .pt2 fixtures the reader's tests load: one small program per torch release, saved by that
release's own ``torch.export.save`` (run this file under each torch you want covered).

    python scripts/make_pt2_fixtures.py tests/data/pt2

Each ``torch-X.Y.pt2`` comes with ``torch-X.Y.json``: the torch that wrote it, the input and the output
that release computed, so a later torch reading the file can be checked against the writer's numbers.
The model has what real programs carry: parameters, buffers (one non-persistent), a lifted tensor
constant, a batch norm, a dynamic batch dimension (symbolic shapes and range constraints), a float
``-inf`` argument, a string argument and two outputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch import nn


class Fixture(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Sequential(nn.Linear(4, 6), nn.GELU(approximate="tanh"), nn.Linear(6, 2))
        self.register_buffer("scale", torch.tensor([2.0, 0.5]))
        self.register_buffer("offset", torch.tensor(0.25), persistent=False)
        self.table = torch.arange(4, dtype=torch.float32) / 4  # a plain tensor attribute: a lifted constant

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.relu(self.bn(self.conv(x)))
        pooled = y.mean((2, 3)) + self.table
        masked = pooled.masked_fill(pooled > 100.0, float("-inf"))
        return self.head(masked) * self.scale + self.offset, y.flatten(1)[:, : x.shape[0] * 2]


def main(out: Path) -> None:
    torch.manual_seed(0)
    model = Fixture().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 1.5)
    x = torch.randn(3, 3, 5, 5)
    batch = torch.export.Dim("batch", min=2, max=16)
    ep = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    version = ".".join(torch.__version__.split("+")[0].split(".")[:2])
    out.mkdir(parents=True, exist_ok=True)
    torch.export.save(ep, str(out / f"torch-{version}.pt2"))
    with torch.no_grad():
        outputs = ep.module()(x)
    record = {"torch": torch.__version__, "input": x.tolist(), "outputs": [o.tolist() for o in outputs]}
    (out / f"torch-{version}.json").write_text(json.dumps(record))
    print(f"wrote {out / f'torch-{version}.pt2'} with torch {torch.__version__}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "tests/data/pt2"))
