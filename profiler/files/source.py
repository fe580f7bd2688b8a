"""Turn what a user names (a zoo model, ``file.py:factory``, a ``.pt2``) into a module + inputs.

Every failure a user can cause raises ``ModelLoadError`` / ``InputSpecError`` naming the file,
factory, parameter or shape at fault.
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import keyword
import re
import sys
import traceback
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch import nn

from ..errors import InputSpecError, ModelLoadError, describe
from ..resources import MAX_DIMS, check_input_bytes, check_memory, untouched
from .data import random_like
from .zoo import DEFAULT_MODEL, ZOO, build_zoo_model

__all__ = ["module_with_inputs", "LoadedModel", "load_model", "parse_input_shapes", "parse_dtype", "DTYPES"]

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


@dataclass
class LoadedModel:
    name: str  # short display name
    spec: str  # what the user asked for, as given
    kind: str  # "zoo" | "factory" | "pt2"
    module: nn.Module
    inputs: tuple[torch.Tensor, ...]
    exported: torch.export.ExportedProgram | None = None  # set for .pt2 sources
    notes: list[str] = field(default_factory=list)
    submodule: str | None = None  # the named part of ``spec`` this is (submodule_of); inputs are then the part's
    model_input_shapes: tuple[tuple[int, ...], ...] = ()  # with a submodule: the whole model's input shapes

    @property
    def input_shapes(self) -> list[tuple[int, ...]]:
        return [tuple(t.shape) for t in self.inputs]

    @property
    def input_names(self) -> tuple[str, ...]:
        """A name per input: the forward's parameter names (``input_ids``, ``attention_mask``); () when unknown."""
        names = getattr(self.module, "input_names", None)
        if isinstance(names, tuple):
            return names
        try:
            params = [p for p in inspect.signature(self.module.forward).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        except (TypeError, ValueError):
            return ()
        return tuple(p.name for p in params[:len(self.inputs)]) if len(params) >= len(self.inputs) else ()


def parse_dtype(text: str | None) -> torch.dtype | None:
    if text is None:
        return None
    try:
        return DTYPES[text]
    except KeyError as exc:
        raise InputSpecError(f"--dtype {text!r} is not supported; choose one of {', '.join(DTYPES)}.") from exc


def parse_input_shapes(text: str | None) -> list[tuple[int, ...]] | None:
    """``"1,3,224,224"`` or several inputs separated by ``;``: ``"1,128;1,128"``."""
    if text is None or not text.strip():
        return None
    if len(text) > 1000:
        raise InputSpecError(f"--input-shape is {len(text)} characters long; give one shape per input, e.g. 1,3,224,224.")
    shapes = []
    for part in text.split(";"):
        try:
            dims = tuple(int(d) for d in re.split(r"[,x×]", part.strip()))  # "1,3,224,224" or "1x3x224x224"
        except ValueError as exc:
            raise InputSpecError(f"--input-shape {text!r}: {part!r} is not a comma-separated list of integers, e.g. 1,3,224,224.") from exc
        if not dims or any(d <= 0 for d in dims):
            raise InputSpecError(f"--input-shape {text!r}: every dimension must be a positive integer.")
        if len(dims) > MAX_DIMS or any(d >= 2**31 for d in dims):
            raise InputSpecError(f"--input-shape {text!r}: at most {MAX_DIMS} dimensions, each below 2^31.")
        shapes.append(dims)
    return shapes


def _load_zoo(name: str, seed: int) -> LoadedModel:
    e = ZOO[name]
    module = build_zoo_model(name, seed)
    placeholder = tuple(torch.zeros(s, dtype=e.input_dtype) for s in e.input_shapes)
    inputs = random_like(placeholder, e.input_shapes, seed=seed, high=e.input_high)
    return LoadedModel(name, name, "zoo", module, inputs)


def _user_frame(exc: BaseException, file: Path) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).resolve() == file.resolve()]
    return f" (at {file.name}:{frames[-1].lineno})" if frames else ""


def _load_factory(spec: str, seed: int) -> LoadedModel:
    file_text, _, factory = spec.rpartition(":")
    path = Path(file_text).expanduser()
    if not factory:
        raise ModelLoadError(f"{spec!r}: name the factory after a colon, e.g. {file_text}:build_model.")
    if not path.is_file():
        raise ModelLoadError(f"Model file not found: {path}. Pass an existing .py file as path/to/file.py:factory.")
    mod_name = f"layerscope_user_{path.stem}_{uuid.uuid4().hex[:8]}"
    try:
        spec_obj = importlib.util.spec_from_file_location(mod_name, path)
        assert spec_obj is not None and spec_obj.loader is not None
        module = importlib.util.module_from_spec(spec_obj)
        sys.modules[mod_name] = module  # dataclasses and pickling look modules up here
        spec_obj.loader.exec_module(module)
    except Exception as exc:
        raise ModelLoadError(f"Importing {path} failed{_user_frame(exc, path)}: {type(exc).__name__}: {exc}") from exc
    fn = getattr(module, factory, None)
    if fn is None or not callable(fn):
        names = [n for n in vars(module) if callable(getattr(module, n)) and not n.startswith("_")]
        hint = difflib.get_close_matches(factory, names, n=1)
        raise ModelLoadError(f"{path} has no callable {factory!r}"
                             + (f"; did you mean {hint[0]!r}?" if hint else f"; callables: {', '.join(names[:10]) or 'none'}."))
    torch.manual_seed(seed)
    try:
        result = fn()
    except Exception as exc:
        raise ModelLoadError(f"Factory {path.name}:{factory}() raised{_user_frame(exc, path)}: {type(exc).__name__}: {exc}") from exc
    if isinstance(result, tuple) and len(result) in (2, 3) and isinstance(result[0], nn.Module):
        args, kwargs = (result[1], {}) if len(result) == 2 else result[1:]
        return module_with_inputs(result[0], args, kwargs, f"{path.stem}:{factory}", spec, "factory", f"{path.name}:{factory}() returned")
    if not isinstance(result, nn.Module):
        raise ModelLoadError(f"{path.name}:{factory}() returned {type(result).__name__}; return an nn.Module or (module, example_inputs).")
    return LoadedModel(f"{path.stem}:{factory}", spec, "factory", result.eval(), ())


def module_with_inputs(model: nn.Module, args: Any, kwargs: Any, name: str, spec: str, kind: str, what: str) -> LoadedModel:
    """A module and its example inputs as a ``LoadedModel``: ``args`` a tensor, a tuple/list of tensors or a
    dict of keyword tensors (``input_ids``, ``attention_mask``); ``kwargs`` more keyword inputs. A module
    called with keywords is wrapped (``CallWith``) so every capture sees plain positional tensors.
    ``what`` starts the error messages (``models.py:build() returned``, ``layerscope.profile() got``)."""
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"{what} {type(model).__name__} for the model; pass an nn.Module.")
    kwargs = {} if kwargs is None else kwargs
    if isinstance(args, dict):  # (module, {"input_ids": ..., "attention_mask": ...})
        args, kwargs = (), {**args, **kwargs} if isinstance(kwargs, dict) else kwargs
    args = () if args is None else (args,) if isinstance(args, torch.Tensor) else tuple(args)
    if not all(isinstance(t, torch.Tensor) for t in args):
        raise ModelLoadError(f"{what} positional example inputs that are not all tensors; pass the others by keyword: "
                             f"(module, args, kwargs).")
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise ModelLoadError(f"{what} {type(kwargs).__name__} as keyword inputs; give a dict of name -> tensor.")
    inputs = tuple(args) + tuple(v for v in kwargs.values() if isinstance(v, torch.Tensor))
    module = model if not kwargs else CallWith(model, args, kwargs)
    return LoadedModel(name, spec, kind, module.eval(), inputs)


class SameModel(nn.Module):
    """A stand-in for ``model`` that changes how it is called, not what it holds: it shares the model's
    submodules, parameters and buffers (its layer ids are the model's own, not ``wrapped.…``) and its forward
    calls the model's forward directly."""

    wrapped: nn.Module

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "wrapped", model)  # not a child: its children are ours
        self._modules = model._modules
        self._parameters = model._parameters
        self._buffers = model._buffers


class CallWith(SameModel):
    """A model called with keyword, optional or nested inputs (``model(input_ids=..., attention_mask=...)``,
    a detection head's list of feature maps) as one that takes positional tensors, so every pass (trace,
    export, timing, ONNX, comparison) can feed it a tuple (a ``SameModel``: the layer ids are the model's own);
    values that are not tensors (None, ``use_cache=False``, sizes) stay fixed. Its forward names each tensor
    (``input_ids``, ``features_0``), so fx traces it and the profile names its inputs."""

    def __init__(self, model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        super().__init__(model)
        leaves, self.spec = pytree.tree_flatten((tuple(args), dict(kwargs)))
        self.slots = [i for i, v in enumerate(leaves) if isinstance(v, torch.Tensor)]
        self.fixed = [None if isinstance(v, torch.Tensor) else v for v in leaves]
        names = _input_names(model, args, kwargs)
        self.input_names = tuple(names)
        scope: dict[str, Any] = {}
        # names checked by _input_names: identifiers, no keywords. The forward lives on a class of this instance's
        # own, because torch.fx traces type(root).forward.
        exec(f"def forward(self, {', '.join(names)}):\n    return self.call_wrapped(({''.join(n + ', ' for n in names)}))", scope)
        self.__class__ = type(type(model).__name__, (CallWith,), {"forward": scope["forward"], "__module__": __name__})
        self.train(model.training)

    def call_wrapped(self, tensors: tuple[torch.Tensor, ...]) -> Any:
        leaves = list(self.fixed)
        for i, t in zip(self.slots, tensors, strict=True):
            leaves[i] = t
        args, kwargs = pytree.tree_unflatten(leaves, self.spec)
        return type(self.wrapped).forward(self.wrapped, *args, **kwargs)

    def train(self, mode: bool = True) -> CallWith:
        super().train(mode)
        self.wrapped.training = mode
        return self


def _input_names(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
    """A Python name per tensor input: the forward's parameter name (``input_ids``), with ``_0``, ``_1`` for the
    tensors of a list or dict argument."""
    try:
        params = [p.name for p in inspect.signature(type(model).forward).parameters.values()][1:]
    except (TypeError, ValueError):
        params = []
    names: list[str] = []
    for i, value in enumerate(args):
        base = params[i] if i < len(params) and params[i].isidentifier() else f"arg{i}"
        names += _leaf_names(base, value)
    for key, value in kwargs.items():
        names += _leaf_names(key if key.isidentifier() else "kwarg", value)
    out, seen = [], set()
    for n in names:
        n = n if not keyword.iskeyword(n) and n != "self" else f"{n}_"
        while n in seen:
            n += "_"
        seen.add(n)
        out.append(n)
    return out


def _leaf_names(base: str, value: Any) -> list[str]:
    leaves = [v for v in pytree.tree_leaves(value) if isinstance(v, torch.Tensor)]
    return [base] if isinstance(value, torch.Tensor) else [f"{base}_{k}" for k in range(len(leaves))]


class _Recorded(Exception):
    """Raised by the pre-hook once the submodule's inputs are recorded: the rest of the forward is not needed."""


def submodule_of(loaded: LoadedModel, name: str) -> LoadedModel:
    """``loaded``'s submodule ``name``, with the inputs one real forward of the whole model gives it: profile a
    detection model's backbone and head without its pre- and post-processing (which tracing cannot take)."""
    model = loaded.module
    try:
        sub = model.get_submodule(name)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        close = difflib.get_close_matches(name, names, n=3)
        top = [n for n, _ in model.named_children()]
        raise ModelLoadError(f"{loaded.name} has no submodule {name!r}"
                             + (f"; did you mean {', '.join(map(repr, close))}?" if close else f"; its children: {', '.join(top[:12])}.")) from None
    seen: dict[str, Any] = {}

    def record(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        seen["call"] = (args, kwargs)
        raise _Recorded

    handle = sub.register_forward_pre_hook(record, with_kwargs=True)
    try:
        with untouched(model), torch.no_grad():
            model(*loaded.inputs)
    except _Recorded:
        pass
    except Exception as exc:
        raise InputSpecError(f"Running {loaded.name} to record the inputs of {name!r} failed: {describe(exc)}") from exc
    finally:
        handle.remove()
    if "call" not in seen:
        raise ModelLoadError(f"{name!r} is not called in a forward of {loaded.name} on these inputs: nothing to profile.")
    args, kwargs = pytree.tree_map(lambda v: v.detach().clone() if isinstance(v, torch.Tensor) else v, seen["call"])
    tensors = tuple(v for v in pytree.tree_leaves((args, kwargs)) if isinstance(v, torch.Tensor))
    plain = not kwargs and all(isinstance(a, torch.Tensor) for a in args)
    module = sub if plain else CallWith(sub, args, kwargs)
    shapes = ", ".join("x".join(map(str, t.shape)) for t in tensors)
    note = (f"submodule {name!r} of {loaded.name} ({type(sub).__name__}), with the inputs one forward of the whole model "
            f"gave it ({shapes}); its layer ids are relative to {name!r}")
    return LoadedModel(f"{loaded.name}.{name}", loaded.spec, loaded.kind, module.eval(), tensors, None, [*loaded.notes, note],
                       name, tuple(tuple(int(s) for s in t.shape) for t in loaded.inputs))


def _load_pt2(path: Path, trust: bool) -> LoadedModel:
    from .safeload import load_exported_program

    ep, module, warnings = load_exported_program(path, trust=trust)
    args, kwargs = ep.example_inputs if ep.example_inputs is not None else ((), {})
    if kwargs:
        raise ModelLoadError(f"{path}: keyword example inputs are not supported; export with positional inputs.")
    if not all(isinstance(a, torch.Tensor) for a in args):
        raise ModelLoadError(f"{path}: its example inputs are not all tensors; export with tensor inputs.")
    notes = ["loaded with --trust-file: checks for code in the file were skipped", *warnings] if trust else []
    return LoadedModel(path.stem, str(path), "pt2", module, tuple(args), exported=ep, notes=notes)


_CHECK_OWN_INPUTS_ABOVE = 64 * 2**20


def check_own_inputs(loaded: LoadedModel, max_memory_bytes: int | None) -> None:
    """The activation-memory check for inputs that came with the model (a factory's, a .pt2's, the tensors given to
    ``layerscope.profile``): they were chosen by the model's author, so only large ones are worth the ~2 s a
    first fake-tensor run costs. Shapes typed by the user (``--input-shape``) are always checked."""
    if loaded.inputs and max_memory_bytes != 0 and sum(t.nbytes for t in loaded.inputs) > _CHECK_OWN_INPUTS_ABOVE:
        check_memory(loaded.module, [(tuple(t.shape), t.dtype) for t in loaded.inputs], max_memory_bytes, loaded.name)


def check_finite(module: nn.Module) -> None:
    """NaN/Inf weights make every number meaningless. Tensors on the meta device have no values and are
    skipped (the static profile says so)."""
    bad = [n for n, t in [*module.named_parameters(), *module.named_buffers()]
           if t.is_floating_point() and not t.is_meta and not bool(torch.isfinite(t).all())]
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise ModelLoadError(f"The model has NaN/Inf values in {', '.join(bad[:3])}{more}; timings and FLOPs would be meaningless. "
                             f"Fix or re-initialise those weights.")


def load_model(spec: str | None = None, input_shapes: Sequence[tuple[int, ...]] | None = None,
               dtype: torch.dtype | None = None, seed: int = 0, trust_file: bool = False,
               max_memory_bytes: int | None = None) -> LoadedModel:
    """Load a model by zoo name, ``file.py:factory`` or ``.pt2`` path; None means the default.

    A ``.pt2`` is opened without running code carried by the file unless ``trust_file`` (see
    ``safeload``); a ``file.py:factory`` *is* code and runs. Before inputs of ``input_shapes`` are
    allocated, their size and the activation memory of one forward (estimated on fake tensors) are
    checked against ``max_memory_bytes`` (None: the memory available now; 0: no check)."""
    if spec is not None and not spec.strip():
        raise ModelLoadError("The model name is empty; give a zoo name, path/to/file.py:factory or a .pt2 file.")
    spec = spec or DEFAULT_MODEL
    if spec in ZOO:
        loaded = _load_zoo(spec, seed)
    elif spec.endswith(".pt2"):
        loaded = _load_pt2(Path(spec).expanduser(), trust_file)
    elif ":" in spec and spec.rpartition(":")[0].endswith(".py"):
        loaded = _load_factory(spec, seed)
    elif spec.endswith(".py"):
        raise ModelLoadError(f"{spec!r}: name the factory too, as {spec}:build_model.")
    else:
        hint = difflib.get_close_matches(spec, list(ZOO), n=1)
        raise ModelLoadError(
            f"Unknown model {spec!r}." + (f" Did you mean {hint[0]!r}?" if hint else "")
            + f" Built-in models: {', '.join(ZOO)}; or pass path/to/file.py:factory or a .pt2 file."
        )
    check_finite(loaded.module)
    if dtype is not None:
        if loaded.exported is not None:
            raise InputSpecError(f"{loaded.spec}: --dtype cannot change an exported program; export it in the dtype you want.")
        loaded.module = loaded.module.to(dtype)
        loaded.inputs = tuple(t.to(dtype) if t.is_floating_point() else t for t in loaded.inputs)
    if input_shapes:
        like = loaded.inputs or tuple(torch.zeros(0, dtype=dtype or torch.float32) for _ in input_shapes)
        if len(input_shapes) != len(like):
            raise InputSpecError(f"--input-shape gives {len(input_shapes)} input(s) but the model takes {len(like)}; "
                                 f"separate inputs with ';'.")
        specs = [(tuple(sh), t.dtype) for sh, t in zip(input_shapes, like, strict=True)]
        if max_memory_bytes != 0:  # before a byte is allocated: the inputs, then one forward's activations
            check_input_bytes([sh for sh, _ in specs], [dt.itemsize for _, dt in specs], max_memory_bytes)
            check_memory(loaded.module, specs, max_memory_bytes, loaded.name)
        loaded.inputs = random_like(like, input_shapes, seed=seed, high=ZOO[spec].input_high if spec in ZOO else None)
    else:
        check_own_inputs(loaded, max_memory_bytes)
    if not loaded.inputs:
        raise InputSpecError(f"{loaded.spec}: no example inputs; pass --input-shape (e.g. 1,3,224,224) or return (module, inputs) from the factory.")
    return loaded
