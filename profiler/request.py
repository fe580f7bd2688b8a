"""What a workflow is asked to work on: one typed ``ModelRequest`` (which model, on which inputs,
measured how), shared by every job, the sweep's workers, the CLI and the desktop app."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .errors import LayerScopeError
from .files.source import LoadedModel, load_model, parse_dtype, parse_input_shapes, submodule_of
from .graph import CaptureMethod
from .profile import Profile
from .progress import Progress, Work
from .resources import parse_device

__all__ = ["MODEL_HELP", "ModelRequest"]

log = logging.getLogger(__name__)


def _model_help() -> str:
    from .files.zoo import ZOO

    return (f"zoo name ({', '.join(ZOO)}), path/to/file.py:factory, or a .pt2 file (default: resnet18). "
            "A file.py:factory is Python code and runs: use only files you trust. A .pt2 is opened without running "
            "code from it (see --trust-file).")


MODEL_HELP = _model_help()


@dataclass(frozen=True)
class ModelRequest:
    """Which model, on which inputs, measured how: everything the CLI's model options and the app's
    Open-model dialog say, in one place."""

    model: str | None = None  # zoo name, file.py:factory or .pt2; None = the default model
    input_shape: str | None = None  # "1,3,224,224"; several inputs separated by ";"; None = the model's own
    dtype: str | None = None  # cast weights and float inputs; None = the model's own
    runs: int = 20
    warmup: int = 3
    device: str = "cpu"
    hardware: str = "this"  # "this" (calibrated here), a device profile name, or a .json file
    capture: str | None = None  # "fx", "export" or "eager" (static only); None = fx with export as fallback, eager when static
    trust_file: bool = False  # a .pt2 may run code when loaded: only when the user said so
    max_memory_gib: float | None = None  # activation-memory limit; None = what is available now, 0 = off
    threads: int | None = None  # torch intra-op threads while the job runs; None = torch's default
    static: bool = False  # profile without timing (shapes, FLOPs, bytes, bound classes); the only mode on --device meta
    submodule: str | None = None  # work on this named submodule, with the inputs a forward of the whole model gives it

    def check(self) -> None:
        """Everything that can be wrong with the request itself, before any work."""
        if self.runs < 1 or self.warmup < 0:
            raise LayerScopeError("--runs must be >= 1 and --warmup >= 0.")
        if self.capture not in (None, "fx", "export", "eager"):
            raise LayerScopeError(f"capture {self.capture!r}: use fx, export or eager.")
        if self.capture == "eager" and not self.static:
            raise LayerScopeError("--capture eager records shapes only and cannot be timed: add --static, or capture with fx or export.")
        if self.max_memory_gib is not None and not (self.max_memory_gib >= 0 and self.max_memory_gib != float("inf")):
            raise LayerScopeError("--max-memory must be a number of GiB >= 0 (0 turns the memory check off).")
        if parse_device(self.device).type == "meta" and not self.static:
            raise LayerScopeError("--device meta has no values to time: add --static (a profile of shapes, FLOPs and "
                                  "bytes that allocates no weights).")
        if self.threads is not None and not 1 <= self.threads <= 1024:
            raise LayerScopeError(f"--threads {self.threads}: use a number of threads from 1 to 1024.")

    @property
    def method(self) -> CaptureMethod | None:
        return {"fx": CaptureMethod.FX, "export": CaptureMethod.EXPORT, "eager": CaptureMethod.EAGER}.get(self.capture or "")

    @property
    def run_method(self) -> CaptureMethod | None:
        """The capture for work that runs the graph (timing, activations, ONNX mapping): an eager
        capture records shapes only, so a static profile's Apply captures the default way."""
        return None if self.method is CaptureMethod.EAGER else self.method

    def load(self) -> LoadedModel:
        self.check()
        limit = None if self.max_memory_gib is None else int(self.max_memory_gib * 2**30)
        loaded = load_model(self.model, parse_input_shapes(self.input_shape), parse_dtype(self.dtype),
                            trust_file=self.trust_file, max_memory_bytes=limit)
        return submodule_of(loaded, self.submodule) if self.submodule else loaded

    def loading(self, on_loaded: Callable[[LoadedModel], None] | None = None) -> Work[LoadedModel]:
        """``load()`` as every job starts: checked, with load progress, handed to ``on_loaded`` (the CLI
        checks room for model-sized outputs there, or keeps the module for an export)."""
        self.check()
        yield Progress("load", 0, 1, self.model or "default model")
        loaded = self.load()
        yield Progress("load", 1, 1, loaded.name)
        log.info("loaded %s (%s) with inputs %s", loaded.name, loaded.kind, [tuple(t.shape) for t in loaded.inputs])
        if on_loaded is not None:
            on_loaded(loaded)
        return loaded

    @staticmethod
    def add_arguments(p, required: bool = False, runs: int = 20, warmup: int = 3, device: bool = True, static: bool = False) -> None:
        """The request's options on an argparse parser (``layerscope`` and ``layerscope-gui`` alike);
        ``runs``/``warmup`` are the command's defaults (the help says them); ``device`` False for
        commands that measure on the CPU only; ``static`` for commands that can skip timing (profile, gui)."""
        from .hardware import device_profile_names

        p.add_argument("model", nargs=None if required else "?", default=None, help=MODEL_HELP)
        p.add_argument("--trust-file", action="store_true",
                       help="load a .pt2 even if it asks to run code (pickled objects, compiled libraries, guards); only for "
                            "files from a source you trust, like trust_remote_code")
        p.add_argument("--max-memory", type=float, metavar="GIB",
                       help="refuse to run when a forward on --input-shape is estimated to need more activation memory "
                            "(default: the memory available now; 0 turns the check off)")
        p.add_argument("--input-shape", help="input shape, e.g. 1,3,224,224; several inputs separated by ';'")
        p.add_argument("--dtype", choices=["float32", "float16", "bfloat16", "float64"], help="cast weights and float inputs")
        p.add_argument("--runs", type=int, default=runs, help=f"timed runs per layer (default {runs})")
        p.add_argument("--warmup", type=int, default=warmup, help=f"untimed warm-up runs (default {warmup})")
        if device:
            p.add_argument("--device", default="cpu",
                           help="cpu or cuda (CUDA events are used on a GPU); meta with --static: nothing is allocated")
        p.add_argument("--hardware", default="this",
                       help=f"roofline: 'this' (calibrated here, cached) or a device profile ({', '.join(device_profile_names())}) "
                            "or a .json file")
        p.add_argument("--capture", choices=["fx", "export", "eager"] if static else ["fx", "export"],
                       help="force a capture method (default: fx, export as fallback"
                            + ("; a --static profile records one eager forward, which needs no tracing)" if static else ")"))
        if static:
            p.add_argument("--static", action="store_true",
                           help="no timing: shapes, FLOPs, bytes, parameters and bound classes, ranked by FLOPs; with "
                                "--device meta (a factory that builds on torch.device('meta')) no weight is allocated")
        p.add_argument("--submodule", metavar="NAME",
                       help="work on one named submodule (e.g. backbone, model.decoder), fed the inputs a forward of the whole "
                            "model gives it: a detection model without its pre- and post-processing")
        p.add_argument("--threads", type=int, metavar="N",
                       help=f"torch intra-op threads while measuring (default: torch's, {torch.get_num_threads()} here); "
                            "1 keeps rankings steady on a busy machine")

    @classmethod
    def from_args(cls, args: Any, spec: str | None = None) -> ModelRequest:
        """The request an argparse namespace (from ``add_arguments``) describes, checked."""
        req = cls(spec if spec is not None else getattr(args, "model", None), getattr(args, "input_shape", None),
                  getattr(args, "dtype", None), runs=getattr(args, "runs", 20), warmup=getattr(args, "warmup", 3),
                  device=getattr(args, "device", "cpu"), hardware=getattr(args, "hardware", "this"),
                  capture=getattr(args, "capture", None), trust_file=getattr(args, "trust_file", False),
                  max_memory_gib=getattr(args, "max_memory", None), threads=getattr(args, "threads", None),
                  static=getattr(args, "static", False), submodule=getattr(args, "submodule", None))
        req.check()
        return req

    @classmethod
    def for_profile(cls, profile: Profile, trust_file: bool = False, **changes: Any) -> ModelRequest:
        """The request that loads ``profile``'s model again, on the inputs it was profiled with."""
        m = profile.model
        shapes = m.model_input_shapes if m.submodule else m.input_shapes  # a part is found again in the whole model
        req = cls(m.spec, ";".join(",".join(map(str, s)) for s in shapes) or None,
                  None if m.compute_dtype == "float32" else m.compute_dtype, trust_file=trust_file, max_memory_gib=0,
                  submodule=m.submodule)
        return dataclasses.replace(req, **changes)
