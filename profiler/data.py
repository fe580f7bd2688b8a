"""Sample data for calibration, output comparison and accuracy.

A data folder holds one batch per file, read in name order:

* ``.npz`` with an array ``x`` (or ``x0``, ``x1``, … for several inputs, or the model's input names:
  ``input_ids``, ``attention_mask``) and, optionally, ``y`` (integer class labels, one per sample);
* ``.pt`` with a dict of the same keys, or a bare tensor (inputs only).

The built-in digits task (scikit-learn's bundled 8x8 digits, shipped in assets/data) backs the
``digits_cnn`` zoo model so that accuracy numbers are real offline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .errors import InputSpecError
from .resources import check_input_bytes

__all__ = ["SampleSet", "load_data_folder", "random_samples", "digits_split", "builtin_samples", "samples_for", "DIGITS_FILE"]

DIGITS_FILE = "digits.npz"


@dataclass(frozen=True)
class SampleSet:
    batches: tuple[tuple[torch.Tensor, ...], ...]
    labels: tuple[torch.Tensor, ...] | None  # one tensor per batch, or None when unlabelled
    source: str

    @property
    def n_samples(self) -> int:
        return sum(int(b[0].shape[0]) for b in self.batches)

    @property
    def labelled(self) -> bool:
        return self.labels is not None


def _arrays(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: torch.from_numpy(np.array(z[k])) for k in z.files}
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputSpecError(f"Cannot read data file {path}: {type(exc).__name__}: {exc}") from exc
    if isinstance(obj, torch.Tensor):
        return {"x": obj}
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj)
    raise InputSpecError(f"{path}: a .pt data file must hold a tensor or a dict of tensors with keys x (or x0, x1, …) and y.")


def _cast_like(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    if t.is_floating_point() and not ref.is_floating_point():
        raise InputSpecError(f"the model takes {ref.dtype} inputs (token ids?) but the data file holds {t.dtype}.")
    return t.to(ref.dtype)


def load_data_folder(folder: str | Path, like: Sequence[torch.Tensor], names: Sequence[str] = ()) -> SampleSet:
    """Read every .npz/.pt file of ``folder`` as one batch; inputs cast to the model's input dtypes. Arrays are
    taken by the model's input ``names`` when a file has them all, else as x (or x0, x1, …)."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise InputSpecError(f"Data folder not found: {root}.")
    files = sorted(p for p in root.iterdir() if p.suffix in (".npz", ".pt"))
    if not files:
        raise InputSpecError(f"Data folder {root} has no .npz or .pt files; each file should hold one batch (x, and y for labels).")
    batches, labels = [], []
    for f in files:
        arrays = _arrays(f)
        if names and all(n in arrays for n in names):
            keys = list(names)
        else:
            keys = ["x"] if "x" in arrays else sorted((k for k in arrays if k[:1] == "x" and k[1:].isdigit()), key=lambda k: int(k[1:]))
        if len(keys) != len(like):
            by_name = f", or by the model's input names ({', '.join(names)})" if names else ""
            raise InputSpecError(f"{f}: holds {len(keys)} input array(s) ({', '.join(keys) or 'none'}) but the model takes {len(like)}; "
                                 f"name them x, or x0, x1, …{by_name}.")
        xs = tuple(_cast_like(arrays[k], ref) for k, ref in zip(keys, like, strict=True))
        for k, x, ref in zip(keys, xs, like, strict=True):
            if x.dim() != ref.dim() or x.shape[1:] != ref.shape[1:]:
                raise InputSpecError(f"{f}: input of shape {tuple(x.shape)} does not fit the model's input {tuple(ref.shape)} "
                                     f"(every dimension but the batch must match).")
            if x.shape[0] == 0:
                raise InputSpecError(f"{f}: array {k} holds no samples (batch dimension 0).")
            if x.is_floating_point() and not torch.isfinite(x).all():
                bad = int((~torch.isfinite(x)).sum())
                raise InputSpecError(f"{f}: array {k} holds {bad:,} NaN/Inf value(s); every output comparison would be "
                                     f"meaningless. Clean the data first.")
        if len({int(x.shape[0]) for x in xs}) != 1:
            raise InputSpecError(f"{f}: the input arrays have different batch sizes {[int(x.shape[0]) for x in xs]}.")
        batches.append(xs)
        y = arrays.get("y")
        if y is not None and (y.dtype.is_floating_point or y.shape != (xs[0].shape[0],)):
            raise InputSpecError(f"{f}: y must hold one integer class label per sample, got shape {tuple(y.shape)} {y.dtype}.")
        labels.append(y)
    have = [y is not None for y in labels]
    if any(have) and not all(have):
        raise InputSpecError(f"{root}: some files have labels (y) and some do not; label all or none.")
    return SampleSet(tuple(batches), tuple(y for y in labels if y is not None) if all(have) else None, str(root))


def random_samples(like: Sequence[torch.Tensor], n_batches: int, seed: int = 1, high: int | None = None) -> SampleSet:
    """``n_batches`` random batches shaped like the example inputs (normal floats, integers in [0, high))."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n_batches):
        xs = []
        for ref in like:
            if ref.dtype.is_floating_point:
                xs.append(torch.randn(ref.shape, generator=g, dtype=ref.dtype))
            else:
                top = high if high is not None else max(int(ref.max().item()) + 1, 1)
                xs.append(torch.randint(0, top, ref.shape, generator=g, dtype=ref.dtype))
        batches.append(tuple(xs))
    return SampleSet(tuple(batches), None, f"{n_batches} random batch(es) shaped like the example inputs")


def digits_split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The shipped digits data: images as float [N, 1, 8, 8] scaled to [0, 1], labels int64."""
    path = resources.files("layerscope.assets") / "data" / DIGITS_FILE
    with resources.as_file(path) as p, np.load(p) as z:
        x, y = z[f"x_{split}"], z[f"y_{split}"]
    return torch.from_numpy(x).float().div(16).unsqueeze(1), torch.from_numpy(y)


def builtin_samples(name: str, batch_size: int = 60) -> SampleSet:
    """A zoo model's own labelled evaluation set (currently: ``digits`` test split, 360 images)."""
    if name != "digits":
        raise InputSpecError(f"Unknown built-in data set {name!r}; available: digits.")
    x, y = digits_split("test")
    return SampleSet(tuple((b,) for b in x.split(batch_size)), tuple(y.split(batch_size)),
                     "built-in digits test split (360 images)")


def samples_for(loaded, data: str | Path | None = None, n: int = 8) -> SampleSet:
    """A data folder if given, else the zoo model's own labelled set (digits_cnn), else ``n`` random batches."""
    from .zoo import ZOO

    if data:
        return load_data_folder(data, loaded.inputs, loaded.input_names)
    entry = ZOO.get(loaded.spec)
    if entry is not None and entry.dataset:
        return builtin_samples(entry.dataset)
    if n < 1:
        raise InputSpecError("--samples must be >= 1.")
    check_input_bytes([t.shape for t in loaded.inputs], [t.element_size() for t in loaded.inputs], copies=n,
                      what=f"--samples {n} random batches", share=0.5, fix="use fewer samples")
    return random_samples(loaded.inputs, n, high=entry.input_high if entry else None)
