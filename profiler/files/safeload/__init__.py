"""Open a saved ``torch.export`` program (``.pt2``) by reading what LayerScope understands, and nothing else.

``torch.export.load`` trusts its input: weights, constants and example inputs may be pickles; symbolic
shapes go through ``sympy.sympify`` (an ``eval``); input guards are ``exec``-ed; names from the file
are written into the ``forward()`` torch generates; a pytree spec may import any module; a
``data/aotinductor/`` entry loads a compiled library. A file someone sent you could run code the
moment it is opened (paper 6.2: practitioners pass models around).

So LayerScope does not call it. It reads the archive itself (:mod:`.archive`: the layouts torch 2.4–2.14
write, entry by entry, bounded), the tensors as raw bytes by dtype/shape/stride/offset, never
unpickled (:mod:`.tensors`), and the program JSON through a strict schema with allowlists for every
string that could reach code (:mod:`.program`, :mod:`.exprs`). Only what passed is handed to torch's
graph builder; the input guards are dropped, never executed. Anything else is refused with
``UnsafeFileError`` naming the file and the part it did not understand, or ``ModelLoadError`` for a
file that is merely broken.

``trust=True`` (``--trust-file``, the app's *Trust this file*) calls ``torch.export.load`` as torch
would, with torch's own warnings shown. ``file.py:factory`` sources are code by design and always run.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ...errors import ModelLoadError, UnsafeFileError, first_line
from . import program as _program
from .archive import MAX_CONFIG_BYTES, MAX_PROGRAM_BYTES, Archive, ArchiveError, open_archive
from .program import ProgramError, check_target
from .strings import SYM_TARGETS
from .tensors import DTYPES, TensorFormatError, flat, read_torch_save, view

__all__ = ["load_exported_program", "read_pt2", "Pt2Contents", "TRUST_HINT", "check_target"]

TRUST_HINT = ("LayerScope opens .pt2 files by reading only the parts it understands. If you trust where this file "
              "came from, pass --trust-file (in the app: tick 'Trust this file' in File → Open model) to load it with "
              "torch.export.load.")


def _refuse(path: Path, what: str) -> UnsafeFileError:
    return UnsafeFileError(f"{path}: refused to load: {what}. {TRUST_HINT}")


def _broken(path: Path, what: str) -> ModelLoadError:
    return ModelLoadError(f"{path} is not a readable torch.export program (.pt2): {what}.")


@dataclass
class Pt2Contents:
    """What a ``.pt2`` holds, read without running anything from it."""

    program: Any  # the checked program, as torch's schema dataclasses
    schema_major: int
    state_dict: dict[str, torch.Tensor]
    constants: dict[str, torch.Tensor]
    example_inputs: tuple[tuple[Any, ...], dict[str, Any]] | None
    layout: str
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- tensors
def _names(data: object, what: str) -> dict[str, torch.Tensor]:
    if not isinstance(data, dict):
        raise TensorFormatError(f"{what} is a {type(data).__name__}, not a dictionary of tensors")
    for k, v in data.items():
        _program.ident(k, f"{what}[{str(k)[:40]!r}]", dotted=True)
        if type(v) not in (torch.Tensor, torch.nn.Parameter):
            raise TensorFormatError(f"{what}[{k!r}] is a {type(v).__name__}, not a tensor")
    return data


def _payloads(archive: Archive, config_name: str, folder: str, what: str, notes: list[str]) -> dict[str, torch.Tensor]:
    from ..safeio import parse_json

    raw = archive.read(config_name, MAX_CONFIG_BYTES)
    cfg = parse_json(raw, config_name, ValueError, max_bytes=MAX_CONFIG_BYTES, max_depth=64)
    if not isinstance(cfg, dict) or set(cfg) != {"config"} or not isinstance(cfg["config"], dict):
        raise TensorFormatError(f"{config_name} is not a payload config")
    walker = _program._Walker()
    storages: dict[str, torch.Tensor] = {}
    out: dict[str, torch.Tensor] = {}
    on_device: set[str] = set()
    for fqn, meta in cfg["config"].items():
        at = f"{config_name}[{str(fqn)[:40]!r}]"
        _program.ident(fqn, at, dotted=True)
        if not isinstance(meta, dict) or set(meta) - {"path_name", "is_param", "use_pickle", "tensor_meta"}:
            raise TensorFormatError(f"{at} is not a payload entry")
        pname = meta.get("path_name")
        if not isinstance(pname, str) or not archive.has(f"{folder}{pname}"):
            raise TensorFormatError(f"{at} points at {str(pname)[:40]!r}, which is not in the archive")
        if pname.startswith(("custom_obj_", "opaque_obj_")):
            raise TensorFormatError(f"{at} is a custom object ({pname}), which is unpickled as code", unsafe=True)
        if meta.get("use_pickle") is True:
            value = read_torch_save(archive.read(f"{folder}{pname}"), f"{folder}{pname}")
            if not isinstance(value, torch.Tensor):
                raise TensorFormatError(f"{at} is a pickled {type(value).__name__}, not a tensor")
            out[fqn] = value
            continue
        tm = walker.value(_program.schema_types().TensorMeta, meta.get("tensor_meta"), f"{at}.tensor_meta")
        dims = []
        for key, symints in (("sizes", tm.sizes), ("strides", tm.strides)):
            if not all(s.type == "as_int" for s in symints):
                raise TensorFormatError(f"{at}: a stored tensor with symbolic {key}")
            dims.append([s.value for s in symints])
        dtype = DTYPES.get(tm.dtype)
        if dtype is None or tm.storage_offset.type != "as_int":
            raise TensorFormatError(f"{at}: dtype code {tm.dtype} or its storage offset is not one LayerScope reads")
        if pname not in storages:
            storages[pname] = flat(archive.read_buffer(f"{folder}{pname}"), dtype, f"{folder}{pname}")
        if storages[pname].dtype != dtype:  # one record, two dtypes: torch keeps one typed storage per record
            raise TensorFormatError(f"{at}: {pname} is read as {storages[pname].dtype} and as {dtype}")
        if not storages[pname].numel():
            tensor = torch.zeros(dims[0], dtype=dtype)
        else:
            tensor = view(storages[pname], dims[0], dims[1], tm.storage_offset.value, at)
        if tm.device.type != "cpu":
            on_device.add(tm.device.type)
        grad = bool(tm.requires_grad) and (tensor.is_floating_point() or tensor.is_complex())
        out[fqn] = torch.nn.Parameter(tensor, requires_grad=grad) if meta.get("is_param") is True else tensor
    if on_device:
        notes.append(f"its {what} were saved on {', '.join(sorted(on_device))}; they were read into CPU memory")
    return out


def _example_inputs(value: object, origin: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if not (isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], (tuple, list))
            and isinstance(value[1], dict)):
        raise TensorFormatError(f"{origin} is not (args, kwargs)")
    for leaf in torch.utils._pytree.tree_leaves(value):
        if not isinstance(leaf, (torch.Tensor, int, float, bool, str)) and leaf is not None:
            raise TensorFormatError(f"{origin} holds a {type(leaf).__name__}")
    return tuple(value[0]), value[1]


# --------------------------------------------------------------------------- read
def read_pt2(path: Path, max_bytes: int | None = None) -> Pt2Contents:
    """Read a ``.pt2`` into checked parts; ``UnsafeFileError`` / ``ModelLoadError`` otherwise."""
    from ...resources import available_memory_bytes
    from ..safeio import parse_json

    limit = max_bytes if max_bytes is not None else available_memory_bytes()
    try:
        archive = open_archive(path, limit or 0)
    except ArchiveError as exc:
        raise (_refuse(path, f"the archive {exc}") if exc.unsafe else _broken(path, str(exc))) from exc
    notes: list[str] = []
    with archive.zf:
        part, entry = "the program", ""
        try:
            legacy = archive.layout == "legacy"
            name = "program" if legacy else "models/model.json"
            entry = "serialized_exported_program.json" if legacy else name
            raw = archive.read(name, MAX_PROGRAM_BYTES)
            data = parse_json(raw, entry, ValueError, max_bytes=MAX_PROGRAM_BYTES, max_depth=400, non_finite=True)
            clean, major, found = _program.sanitize(data)
            notes += found
            if isinstance(data, dict) and data.get("guards_code"):
                notes.append(f"its {len(data['guards_code'])} input guard(s) are code and were not run "
                             f"(the program's own shape checks still apply)")
            part = "the weights"
            if legacy:
                weights = _names(read_torch_save(archive.read("weights"), "serialized_state_dict.pt"), "the weights")
                part = "the constants"
                constants = _names(read_torch_save(archive.read("constants"), "serialized_constants.pt"), "the constants")
            else:
                if archive.has("data/weights/model.pt"):  # torch 2.7
                    weights = _names(read_torch_save(archive.read("data/weights/model.pt"), "data/weights/model.pt"),
                                     "the weights")
                else:
                    weights = _payloads(archive, "data/weights/model_weights_config.json", "data/weights/", "weights", notes)
                part = "the constants"
                if archive.has("data/constants/model.pt"):
                    constants = _names(read_torch_save(archive.read("data/constants/model.pt"), "data/constants/model.pt"),
                                       "the constants")
                elif archive.has("data/constants/model_constants_config.json"):
                    constants = _payloads(archive, "data/constants/model_constants_config.json", "data/constants/",
                                          "constants", notes)
                else:
                    constants = {}
            part = "the example inputs"
            key = "inputs" if legacy else "data/sample_inputs/model.pt"
            inputs = None
            if archive.has(key) and archive.size(key):
                inputs = _example_inputs(read_torch_save(archive.read(key), key), key)
        except ProgramError as exc:
            what = f"{entry}, at {exc.where}: {exc.what}"
            raise (_refuse(path, what) if exc.unsafe else _broken(path, what)) from exc
        except TensorFormatError as exc:
            raise (_refuse(path, f"{part}: {exc}") if exc.unsafe else _broken(path, f"{part}: {exc}")) from exc
        except ArchiveError as exc:
            raise _broken(path, str(exc)) from exc
        except ValueError as exc:  # JSON (parse_json raises the error type it is given)
            raise _broken(path, f"{part}: {exc}") from exc
    return Pt2Contents(clean, major, weights, constants, inputs, archive.layout, notes)


# --------------------------------------------------------------------------- build
def _build(contents: Pt2Contents) -> torch.export.ExportedProgram:
    from torch._export.serde.schema import SCHEMA_VERSION
    from torch._export.serde.serialize import ExportedProgramDeserializer

    serialized = contents.program
    deserializer = ExportedProgramDeserializer()
    kwargs: dict[str, Any] = {}
    if contents.schema_major != SCHEMA_VERSION[0] and \
            "_unsafe_skip_version_check" in inspect.signature(deserializer.deserialize).parameters:
        kwargs["_unsafe_skip_version_check"] = True  # an older schema: its fields were checked above
        contents.notes.append(f"written with export schema {contents.schema_major}.x; this torch reads "
                              f"{SCHEMA_VERSION[0]}.{SCHEMA_VERSION[1]}")
    ep = deserializer.deserialize(serialized, contents.state_dict, contents.constants, None, **kwargs)
    if contents.example_inputs is not None:
        try:
            ep.example_inputs = contents.example_inputs
        except (ValueError, TypeError, AttributeError) as exc:
            contents.notes.append(f"its example inputs do not fit the program ({first_line(exc)}); they were left out")
    return ep


def _module(ep: torch.export.ExportedProgram) -> torch.nn.Module:
    if "check_guards" in inspect.signature(ep.module).parameters:
        return ep.module(check_guards=False)  # the file's guards are code: never executed
    return ep.module()


def _verify_graphs(ep: torch.export.ExportedProgram, path: Path) -> None:
    """Defence in depth: every node of the built graphs calls an allowed operator."""
    op_types = (torch._ops.OpOverload, torch._ops.HigherOrderOperator)
    allowed = set(SYM_TARGETS.values())
    for gm in ep.graph_module.modules():
        graph = getattr(gm, "graph", None)
        if graph is None:
            continue
        for n in graph.nodes:
            if n.op in ("call_method", "call_module"):
                raise _refuse(path, f"has a {n.op} node {n.name!r}, which exported programs do not contain")
            if n.op == "call_function" and not (isinstance(n.target, op_types) or n.target in allowed):
                raise _refuse(path, f"calls {getattr(n.target, '__qualname__', n.target)!r} in node {n.name!r}, "
                                    f"which is not an allowed operator")


class _Collect(logging.Filter):
    """A logger filter that keeps torch's warnings as text and stops every record there, so none
    reaches a handler mid-load (torch formats some of its own warnings wrongly; with TORCH_LOGS set,
    its handlers then raise out of the load)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            try:
                text = record.getMessage()
            except Exception:  # noqa: BLE001 - a malformed torch format string
                text = str(record.msg)
            self.lines.append(" ".join(text.split())[:300])
        return False


@contextlib.contextmanager
def _torch_warnings() -> Iterator[_Collect]:
    import torch._export.serde.serialize  # noqa: F401 - its loggers exist before the filter is added

    collect = _Collect()
    loggers = [logging.getLogger("torch")] + [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)
                                              if n.startswith("torch.")]
    for lg in loggers:
        lg.addFilter(collect)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield collect
    finally:
        for lg in loggers:
            lg.removeFilter(collect)


def load_exported_program(path: Path, trust: bool = False) -> tuple[torch.export.ExportedProgram, torch.nn.Module, list[str]]:
    """(ExportedProgram, runnable module, notes). Refuses (``UnsafeFileError``) anything outside what
    LayerScope reads unless ``trust``; a broken file is a ``ModelLoadError``."""
    if not path.is_file():
        raise ModelLoadError(f"Exported program not found: {path}.")
    module: torch.nn.Module
    if trust:
        with _torch_warnings() as warned:
            try:
                ep = torch.export.load(str(path))
                module = ep.module()
            except Exception as exc:
                raise _broken(path, f"{type(exc).__name__}: {first_line(exc)}") from exc
        return ep, module, [f"torch warned while loading: {line}" for line in warned.lines]
    contents = read_pt2(path)
    with _torch_warnings():
        try:
            ep = _build(contents)
            module = _module(ep)
        except Exception as exc:
            raise _broken(path, f"{type(exc).__name__}: {first_line(exc)}") from exc
    _verify_graphs(ep, path)
    return ep, module, contents.notes

