"""Build the shipped digits task: assets/data/digits.npz and assets/models/digits_cnn.pt.

Data: scikit-learn's bundled copy of the UCI "Optical Recognition of Handwritten Digits" test set
(1,797 images, 8x8, values 0-16; CC BY 4.0). Needs scikit-learn only here, at build time:
    .venv/bin/pip install scikit-learn && .venv/bin/python scripts/make_digits.py
The split (seeded permutation, 1,437 train / 360 test) and the training are deterministic.
"""

from pathlib import Path

import numpy as np
import torch

from layerscope.profiler.files.data import DIGITS_FILE, digits_split
from layerscope.profiler.files.zoo import DIGITS_WEIGHTS, DigitsCNN

ROOT = Path(__file__).resolve().parents[1]


def make_data() -> None:
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = d.images.astype(np.uint8), d.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(y))
    test, train = perm[:360], perm[360:]
    np.savez_compressed(ROOT / "assets" / "data" / DIGITS_FILE, x_train=x[train], y_train=y[train], x_test=x[test], y_test=y[test])


def train() -> None:
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    x, y = digits_split("train")
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _epoch in range(40):
        model.train()
        for idx in torch.randperm(len(y), generator=gen).split(64):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
    model.eval()
    xt, yt = digits_split("test")
    with torch.no_grad():
        acc = (model(xt).argmax(1) == yt).float().mean().item()
    print(f"test accuracy {acc:.4f} on {len(yt)} images")
    torch.save(model.state_dict(), ROOT / "assets" / "models" / DIGITS_WEIGHTS)


if __name__ == "__main__":
    make_data()
    train()
