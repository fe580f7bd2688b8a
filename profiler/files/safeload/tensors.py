"""Tensors from a ``.pt2`` without unpickling: raw bytes read by dtype, shape, stride and offset.

Two encodings occur in the archives torch 2.4–2.14 write:

* **raw** (torch >= 2.8): one record of bytes per storage plus a JSON ``PayloadMeta`` (dtype, sizes,
  strides, storage offset) per tensor: read with :func:`torch.frombuffer` and ``as_strided``;
* **a torch.save archive** (``serialized_state_dict.pt``, ``data/weights/model.pt``, the example
  inputs of every release): a zip whose ``data.pkl`` is a pickle that rebuilds tensors over the raw
  storages in ``data/<key>``. :func:`read_torch_save` does not unpickle it: it walks the pickle's
  opcodes (``pickletools.genops``, a parser that executes nothing) with a small stack machine that
  knows containers, numbers, strings and the four rebuild functions torch uses for plain tensors and
  parameters. Any other global, opcode or object is refused by name, so a payload never runs.
"""

from __future__ import annotations

import io
import pickletools
import sys
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["DTYPES", "TensorFormatError", "flat", "view", "read_torch_save"]

# torch._export.serde.schema.ScalarType values (stable on disk) -> dtype
DTYPES: dict[int, torch.dtype] = {
    1: torch.uint8, 2: torch.int8, 3: torch.int16, 4: torch.int32, 5: torch.int64, 6: torch.float16,
    7: torch.float32, 8: torch.float64, 9: torch.complex32, 10: torch.complex64, 11: torch.complex128,
    12: torch.bool, 13: torch.bfloat16,
}
for _code, _name in ((28, "uint16"), (29, "float8_e4m3fn"), (30, "float8_e5m2"), (31, "float8_e4m3fnuz"),
                     (32, "float8_e5m2fnuz"), (33, "float8_e8m0fnu"), (34, "uint32"), (35, "uint64")):
    if hasattr(torch, _name):
        DTYPES[_code] = getattr(torch, _name)

_STORAGES: dict[str, torch.dtype] = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64, "ComplexDoubleStorage": torch.complex128,
}
_MAX_PICKLE_BYTES = 64 << 20
_MAX_OPS = 5_000_000
_MAX_STR = 1 << 16
_MAX_DIMS = 16


class TensorFormatError(ValueError):
    """A tensor record is outside what LayerScope reads; ``unsafe`` when it asks to run code."""

    def __init__(self, message: str, unsafe: bool = False) -> None:
        super().__init__(message)
        self.unsafe = unsafe


def _int(value: object, what: str, low: int = 0, high: int = 1 << 62) -> int:
    if type(value) is not int or not low <= value <= high:
        raise TensorFormatError(f"{what} is {value!r}, not an integer in [{low}, {high}]")
    return value


def flat(raw: bytes | bytearray, dtype: torch.dtype, what: str) -> torch.Tensor:
    """One storage's bytes as a 1-D tensor over a buffer LayerScope owns (a ``bytearray`` is used as it is,
    ``bytes`` copied once); views of it share it, as in torch."""
    item = torch.empty((), dtype=dtype).element_size()
    if len(raw) % item:
        raise TensorFormatError(f"{what}: {len(raw)} bytes is not a whole number of {dtype} elements")
    if not raw:
        return torch.empty(0, dtype=dtype)
    return torch.frombuffer(raw if isinstance(raw, bytearray) else bytearray(raw), dtype=dtype)


def view(storage: torch.Tensor, sizes: list[int], strides: list[int], offset: int, what: str) -> torch.Tensor:
    """A view of a flat storage with the given geometry; every index must fall inside it."""
    if len(sizes) != len(strides) or len(sizes) > _MAX_DIMS:
        raise TensorFormatError(f"{what}: {len(sizes)} sizes and {len(strides)} strides")
    sizes = [_int(s, f"{what}: a size") for s in sizes]
    strides = [_int(s, f"{what}: a stride") for s in strides]
    offset = _int(offset, f"{what}: the storage offset")
    if all(sizes):
        last = offset + sum((s - 1) * st for s, st in zip(sizes, strides, strict=True))
        if last >= storage.numel():
            raise TensorFormatError(f"{what}: its view reaches element {last} of a storage of {storage.numel()}")
    return storage.as_strided(sizes, strides, offset)


# --------------------------------------------------------------------------- torch.save archives
@dataclass(frozen=True)
class _Global:
    name: str


@dataclass
class _StorageRef:
    dtype: torch.dtype
    data: torch.Tensor  # flat


def _rebuild_tensor(storage: object, offset: object, size: object, stride: object, requires_grad: object = False,
                    hooks: object = None, metadata: object = None) -> torch.Tensor:
    if not isinstance(storage, _StorageRef) or not isinstance(size, tuple) or not isinstance(stride, tuple):
        raise TensorFormatError("a tensor rebuilt from something other than a storage, a size and a stride")
    if hooks not in (None, {}) or metadata not in (None, {}):
        raise TensorFormatError("a tensor with backward hooks or metadata", unsafe=True)
    t = view(storage.data, list(size), list(stride), offset, "a tensor")  # type: ignore[arg-type]
    return t.requires_grad_(True) if requires_grad is True and (t.is_floating_point() or t.is_complex()) else t


def _rebuild_parameter(data: object, requires_grad: object, hooks: object, state: object = None) -> torch.Tensor:
    if not isinstance(data, torch.Tensor) or hooks not in (None, {}) or state not in (None, {}):
        raise TensorFormatError("a parameter with hooks or extra state", unsafe=True)
    return torch.nn.Parameter(data, requires_grad=requires_grad is True)


_CALLABLES: dict[str, Callable[..., Any]] = {
    "collections.OrderedDict": lambda *a: OrderedDict(*a) if not a else _refuse_args("OrderedDict"),
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
}


def _refuse_args(what: str) -> Any:
    raise TensorFormatError(f"{what} called with arguments")


class _Reader:
    def __init__(self, zf: zipfile.ZipFile, root: str, origin: str) -> None:
        self.zf, self.root, self.origin = zf, root, origin
        self.storages: dict[str, _StorageRef] = {}

    def storage(self, pid: object) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _Global)
                and isinstance(pid[2], str) and isinstance(pid[3], str)):
            raise TensorFormatError(f"a persistent id {str(pid)[:60]} that is not a storage", unsafe=True)
        kind = pid[1].name.removeprefix("torch.")
        dtype = _STORAGES.get(kind)
        if dtype is None:
            raise TensorFormatError(f"a storage of type {pid[1].name}")
        key = pid[2]
        if key not in self.storages:
            if not key.isdigit():
                raise TensorFormatError(f"a storage key {key[:40]!r}")
            numel = _int(pid[4], "a storage's element count")
            name = f"{self.root}/data/{key}"
            try:
                info = self.zf.getinfo(name)
            except KeyError as exc:
                raise TensorFormatError(f"{name} is missing") from exc
            item = torch.empty((), dtype=dtype).element_size()
            if info.file_size != numel * item:
                raise TensorFormatError(f"{name} holds {info.file_size} bytes, not {numel} × {item}")
            self.storages[key] = _StorageRef(dtype, flat(self.zf.read(info), dtype, name))
        ref = self.storages[key]
        if ref.dtype != dtype:
            raise TensorFormatError(f"storage {key} read as two dtypes")
        return ref

    def run(self, data: bytes) -> Any:
        """The object ``data`` pickles, built by walking its opcodes: only those below are understood."""
        self.stack: list[Any] = []
        self.marks: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        try:
            for count, (op, arg, _pos) in enumerate(pickletools.genops(data)):
                if count > _MAX_OPS:
                    raise TensorFormatError(f"more than {_MAX_OPS:,} pickle operations")
                name = op.name
                if name == "STOP":
                    if len(self.stack) != 1 or self.marks:
                        raise TensorFormatError("a pickle that does not end with one object")
                    return self.stack.pop()
                if not (name in ("PROTO", "FRAME") or self._value(name, arg) or self._container(name) or self._act(name, arg)):
                    raise TensorFormatError(f"the pickle operation {name}", unsafe=True)
        except (IndexError, KeyError, TypeError) as exc:
            raise TensorFormatError(f"a malformed pickle ({type(exc).__name__})") from exc
        except ValueError as exc:
            if isinstance(exc, TensorFormatError):
                raise
            raise TensorFormatError(f"a malformed pickle ({exc})") from exc
        raise TensorFormatError("a pickle with no STOP")

    def _value(self, name: str, arg: Any) -> bool:
        """Constants, numbers (64 bits at most) and strings (64 KiB at most); False: not one of these."""
        if name in ("NONE", "NEWTRUE", "NEWFALSE"):
            self.stack.append({"NONE": None, "NEWTRUE": True, "NEWFALSE": False}[name])
        elif name in ("BININT", "BININT1", "BININT2", "LONG1", "BINFLOAT"):
            if isinstance(arg, int) and abs(arg) > 1 << 64:
                raise TensorFormatError("an integer beyond 64 bits")
            self.stack.append(arg)
        elif name in ("BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"):
            if not isinstance(arg, str) or len(arg) > _MAX_STR:
                raise TensorFormatError("a string longer than 64 KiB")
            self.stack.append(arg)
        elif name in ("EMPTY_TUPLE", "EMPTY_LIST", "EMPTY_DICT"):
            self.stack.append({"EMPTY_TUPLE": (), "EMPTY_LIST": [], "EMPTY_DICT": {}}[name])
        else:
            return False
        return True

    def _container(self, name: str) -> bool:
        """Tuples, lists and dicts, built from marks or the stack; False: not one of these."""
        if name == "MARK":
            self.marks.append(self.stack)
            self.stack = []
        elif name in ("TUPLE", "LIST", "DICT"):
            items, self.stack = self.stack, self.marks.pop()
            self.stack.append(self._pairs({}, items) if name == "DICT" else tuple(items) if name == "TUPLE" else list(items))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            if len(self.stack) < n:
                raise TensorFormatError("a short stack")
            items = self.stack[-n:]
            del self.stack[-n:]
            self.stack.append(tuple(items))
        elif name == "APPEND":
            value = self.stack.pop()
            self._list(self.stack[-1]).append(value)
        elif name == "APPENDS":
            items, self.stack = self.stack, self.marks.pop()
            self._list(self.stack[-1]).extend(items)
        elif name == "SETITEM":
            value, key = self.stack.pop(), self.stack.pop()
            self._pairs(self.stack[-1], [key, value])
        elif name == "SETITEMS":
            items, self.stack = self.stack, self.marks.pop()
            self._pairs(self.stack[-1], items)
        else:
            return False
        return True

    def _act(self, name: str, arg: Any) -> bool:
        """The memo, globals (an allowlist), storages, the four rebuild calls, and the one state torch.save sets."""
        stack = self.stack
        if name in ("BINPUT", "LONG_BINPUT"):
            self.memo[int(arg)] = stack[-1]
        elif name == "MEMOIZE":
            self.memo[len(self.memo)] = stack[-1]
        elif name in ("BINGET", "LONG_BINGET"):
            stack.append(self.memo[int(arg)])
        elif name == "GLOBAL":
            stack.append(self._global(*str(arg).split(" ", 1)))
        elif name == "STACK_GLOBAL":
            qual, module = stack.pop(), stack.pop()
            stack.append(self._global(str(module), str(qual)))
        elif name == "BINPERSID":
            stack.append(self.storage(stack.pop()))
        elif name == "REDUCE":
            args, func = stack.pop(), stack.pop()
            if not isinstance(func, _Global) or func.name not in _CALLABLES or not isinstance(args, tuple):
                raise TensorFormatError(f"a pickle that calls {getattr(func, 'name', type(func).__name__)}", unsafe=True)
            stack.append(_CALLABLES[func.name](*args))
        elif name == "BUILD":
            state = stack.pop()
            # a state dict's ``_metadata`` (module versions) is the one state torch.save sets: ignored
            metadata_only = isinstance(state, dict) and set(state) <= {"_metadata"} and isinstance(stack[-1], dict)
            if state not in (None, {}, ()) and not metadata_only:
                raise TensorFormatError("a pickle that sets an object's state", unsafe=True)
        else:
            return False
        return True

    @staticmethod
    def _global(module: str, qualname: str) -> _Global:
        name = f"{module}.{qualname}"
        if name in _CALLABLES or (module == "torch" and qualname in _STORAGES):
            return _Global(name)
        raise TensorFormatError(f"a pickle that asks for {name[:120]}, which is not a plain tensor or container", unsafe=True)

    @staticmethod
    def _list(target: object) -> list[Any]:
        if not isinstance(target, list):
            raise TensorFormatError(f"an append to a {type(target).__name__}", unsafe=True)
        return target

    @staticmethod
    def _pairs(target: object, items: list[Any]) -> dict[Any, Any]:
        if not isinstance(target, dict) or len(items) % 2:
            raise TensorFormatError(f"an item set on a {type(target).__name__}", unsafe=True)
        for key, value in zip(items[::2], items[1::2], strict=True):
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise TensorFormatError(f"a dictionary key of type {type(key).__name__}")
            target[key] = value
        return target


def read_torch_save(raw: bytes, origin: str) -> Any:
    """The containers and tensors of a ``torch.save`` zip archive, read without unpickling."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(raw))
    except zipfile.BadZipFile as exc:
        kind = "a pickle (the pre-1.6 torch.save format)" if raw[:1] == b"\x80" else "not a torch.save zip archive"
        raise TensorFormatError(f"{origin} is {kind}", unsafe=raw[:1] == b"\x80") from exc
    with zf:
        pkls = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise TensorFormatError(f"{origin} has no single <root>/data.pkl")
        root = pkls[0].split("/", 1)[0]
        if any(not n.startswith(root + "/") for n in zf.namelist()):
            raise TensorFormatError(f"{origin} mixes roots")
        order = f"{root}/byteorder"
        if order in zf.namelist() and zf.read(order).strip() != sys.byteorder.encode():
            raise TensorFormatError(f"{origin} was written on a {zf.read(order).decode(errors='replace')[:10]}-endian machine")
        info = zf.getinfo(pkls[0])
        if info.file_size > _MAX_PICKLE_BYTES:
            raise TensorFormatError(f"{origin}: data.pkl is {info.file_size:,} bytes")
        return _Reader(zf, root, origin).run(zf.read(info))
