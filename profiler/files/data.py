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

from ..errors import InputSpecError
from ..resources import check_input_bytes

__all__ = ["SampleSet", "load_data_folder", "random_like", "random_samples", "digits_split", "builtin_samples", "samples_for", "DIGITS_FILE"]

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

    def split_for_calibration(self, seed: int = 0) -> tuple[SampleSet, SampleSet]:
        """(calibration, evaluation): a seeded quarter of the batches (at least one) to fit activation ranges on,
        the rest to measure output and accuracy on, so no range is fitted on the samples it is judged by. One
        batch cannot be split: (self, self), and the caller says so."""
        n = len(self.batches)
        if n < 2:
            return self, self
        chosen = sorted(torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: max(1, n // 4)].tolist())
        rest = [k for k in range(n) if k not in chosen]

        def part(ks: list[int], what: str) -> SampleSet:
            labels = tuple(self.labels[k] for k in ks) if self.labels is not None else None
            return SampleSet(tuple(self.batches[k] for k in ks), labels,
                             f"{self.source}, {what}: batch{'es' if len(ks) > 1 else ''} {', '.join(map(str, ks))} of {n}")

        return part(chosen, "calibration"), part(rest, "evaluation")


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


def random_like(like: Sequence[torch.Tensor], shapes: Sequence[Sequence[int]] | None = None, *, seed: int = 1,
                high: int | None = None, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
    """Random inputs like the example inputs ``like``: the same dtypes, at ``shapes`` (default: the
    examples' own shapes). The one place LayerScope invents inputs (profile, compress, compare, sweep):

    - floating point: standard normal;
    - bool: all True (a mask that attends everywhere, never one that masks out everything);
    - integers (token ids, class ids): uniform in [0, ``high``), ``high`` defaulting to the example's
      largest value + 1, and to 1 (zeros) for an example without elements.
    """
    g = generator if generator is not None else torch.Generator().manual_seed(seed)
    out = []
    for ref, shape in zip(like, shapes if shapes is not None else [t.shape for t in like], strict=True):
        size = tuple(int(s) for s in shape)
        if ref.dtype.is_floating_point:
            out.append(torch.randn(size, generator=g, dtype=ref.dtype))
        elif ref.dtype == torch.bool:
            out.append(torch.ones(size, dtype=torch.bool))
        else:
            top = high if high is not None else max(int(ref.max().item()) + 1, 1) if ref.numel() else 1
            out.append(torch.randint(0, top, size, generator=g, dtype=ref.dtype))
    return tuple(out)


def random_samples(like: Sequence[torch.Tensor], n_batches: int, seed: int = 1, high: int | None = None) -> SampleSet:
    """``n_batches`` random batches like the example inputs (see ``random_like``)."""
    g = torch.Generator().manual_seed(seed)
    batches = tuple(random_like(like, high=high, generator=g) for _ in range(n_batches))
    return SampleSet(batches, None, f"{n_batches} random batch(es) shaped like the example inputs")


def digits_split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The shipped digits data: images as float [N, 1, 8, 8] scaled to [0, 1], labels int64."""
    path = resources.files("layerscope.assets") / "data" / DIGITS_FILE
    with resources.as_file(path) as p, np.load(p) as z:
        x, y = z[f"x_{split}"], z[f"y_{split}"]
    return torch.from_numpy(x).float().div(16).unsqueeze(1), torch.from_numpy(y)


def builtin_samples(name: str, batch_size: int = 60, batches: int | None = None) -> SampleSet:
    """A zoo model's own labelled evaluation set (currently: ``digits`` test split, 360 images), in
    batches of ``batch_size``; its first ``batches`` batches when given (all when None)."""
    if name != "digits":
        raise InputSpecError(f"Unknown built-in data set {name!r}; available: digits.")
    x, y = digits_split("test")
    xs, ys = x.split(batch_size), y.split(batch_size)
    if batches is not None and batches < len(xs):
        xs, ys = xs[:batches], ys[:batches]
    n = sum(len(b) for b in xs)
    what = f"{n} of {len(x)} images" if n < len(x) else f"{n} images"
    return SampleSet(tuple((b,) for b in xs), tuple(ys), f"built-in digits test split ({what})")


def samples_for(loaded, data: str | Path | None = None, n: int = 8) -> SampleSet:
    """A data folder if given, else the first ``n`` batches of the zoo model's own labelled set
    (digits_cnn), else ``n`` random batches."""
    from .zoo import ZOO

    if data:
        return load_data_folder(data, loaded.inputs, loaded.input_names)
    if n < 1:
        raise InputSpecError("--samples must be >= 1.")
    entry = ZOO.get(loaded.spec)
    if entry is not None and entry.dataset:
        return builtin_samples(entry.dataset, batches=n)
    check_input_bytes([t.shape for t in loaded.inputs], [t.element_size() for t in loaded.inputs], copies=n,
                      what=f"--samples {n} random batches", share=0.5, fix="use fewer samples")
    return random_samples(loaded.inputs, n, high=entry.input_high if entry else None)
