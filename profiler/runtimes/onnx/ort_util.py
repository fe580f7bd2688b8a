"""Small helpers around ONNX Runtime's Python API shared by the int8 quantizer and the QDQ cross-check."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from ...files.data import SampleSet

__all__ = ["quiet_root_logger", "calibration_reader"]


@contextlib.contextmanager
def quiet_root_logger() -> Iterator[None]:
    """ORT's quantization tools log through the root logger at INFO: silence them for the call."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


class _Reader:
    """onnxruntime.quantization.CalibrationDataReader over our samples (duck-typed: get_next)."""

    def __init__(self, names: list[str], samples: SampleSet) -> None:
        self._it = iter([dict(zip(names, [t.numpy() for t in b], strict=True)) for b in samples.batches])

    def get_next(self):
        return next(self._it, None)

    def __iter__(self):
        return self

    def __next__(self):
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def calibration_reader(names: list[str], samples: SampleSet) -> Any:
    """A real ``onnxruntime.quantization.CalibrationDataReader`` over ``samples`` (its isinstance checks pass)."""
    from onnxruntime.quantization import CalibrationDataReader

    return type("Reader", (_Reader, CalibrationDataReader), {})(names, samples)
