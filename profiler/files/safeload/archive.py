"""The zip layouts ``torch.export.save`` writes, read entry by entry with bounds.

* **legacy** (torch 2.4–2.6): ``serialized_exported_program.json``, ``serialized_state_dict.pt``,
  ``serialized_constants.pt``, ``serialized_example_inputs.pt``, ``version`` (the three ``.pt`` are
  torch.save archives);
* **pt2 archive** (torch >= 2.7): ``<root>/archive_format`` = ``pt2``, ``models/<name>.json``,
  ``data/sample_inputs/<name>.pt``, and weights and constants either as torch.save archives
  (``data/weights/<name>.pt``, torch 2.7) or as raw records with a JSON payload config
  (``data/weights/weight_N`` + ``<name>_weights_config.json``, torch >= 2.8).

Any other entry is refused by name (AOTInductor's compiled libraries, ExecuTorch or MTIA payloads,
external weight folders); ``extra/`` files are text the program does not use and are ignored.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Archive", "ArchiveError", "open_archive", "MAX_PROGRAM_BYTES"]

MAX_ENTRIES = 200_000
MAX_PROGRAM_BYTES = 256 << 20
MAX_CONFIG_BYTES = 64 << 20
_LEGACY = {"serialized_exported_program.json": "program", "serialized_state_dict.pt": "weights",
           "serialized_constants.pt": "constants", "serialized_example_inputs.pt": "inputs", "version": "version"}
_PT2_FIXED = {"archive_format", "archive_version", "byteorder", "version", ".data/version", ".data/serialization_id"}
_PT2_PATTERNS = [re.compile(p) for p in (
    r"models/[A-Za-z0-9_.-]+\.json", r"data/sample_inputs/[A-Za-z0-9_.-]+\.pt",
    r"data/weights/(weight_[0-9]+|[A-Za-z0-9_.-]+_weights_config\.json|[A-Za-z0-9_.-]+\.pt)",
    r"data/constants/(tensor_[0-9]+|custom_obj_[0-9]+|opaque_obj_[0-9]+|[A-Za-z0-9_.-]+_constants_config\.json|"
    r"[A-Za-z0-9_.-]+\.pt)",
    r"extra/.+")]
_REFUSED_DIRS = {"data/aotinductor/": "carries compiled native code (an AOTInductor package)",
                 "data/executorch/": "carries an ExecuTorch program", "data/mtia": "carries MTIA device code",
                 "xl_model_weights/": "keeps its weights in an external folder layout"}


class ArchiveError(ValueError):
    def __init__(self, what: str, unsafe: bool = False) -> None:
        super().__init__(what)
        self.unsafe = unsafe


@dataclass
class Archive:
    """The entries of one program, by role; ``read`` returns an entry's bytes (bounded)."""

    zf: zipfile.ZipFile
    layout: str  # "legacy" | "pt2"
    root: str
    entries: dict[str, zipfile.ZipInfo] = field(default_factory=dict)

    def has(self, name: str) -> bool:
        return name in self.entries

    def read(self, name: str, limit: int | None = None) -> bytes:
        info = self.entries[name]
        if limit is not None and info.file_size > limit:
            raise ArchiveError(f"{name} is {info.file_size:,} bytes, more than the {limit:,} LayerScope reads there")
        with self.zf.open(info) as f:  # zipfile stops at the declared size and checks the CRC
            return f.read()

    def read_buffer(self, name: str) -> bytearray:
        """An entry's bytes in a buffer of its own (tensors view it without another copy)."""
        info = self.entries[name]
        buf = bytearray(info.file_size)
        with self.zf.open(info) as f:
            got = f.readinto(buf)  # type: ignore[attr-defined]  # a ZipExtFile is a BufferedIOBase
            if got != info.file_size or f.read(1):
                raise ArchiveError(f"{name} holds other than the {info.file_size:,} bytes its header declares")
        return buf

    def size(self, name: str) -> int:
        return self.entries[name].file_size


def _safe_name(name: str) -> bool:
    return not (name.startswith(("/", "\\")) or "\\" in name or ".." in name.split("/") or "\x00" in name)


def open_archive(path: Path, max_bytes: int) -> Archive:
    """The archive's layout and entries; ``ArchiveError`` (``unsafe`` for code it carries) otherwise."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ArchiveError(f"not a zip archive ({exc})") from exc
    try:
        infos = zf.infolist()
        if len(infos) > MAX_ENTRIES:
            raise ArchiveError(f"holds {len(infos):,} entries; a torch.export program has far fewer")
        total = sum(i.file_size for i in infos)
        if max_bytes and total > max_bytes:
            raise ArchiveError(f"unpacks to {total:,} bytes, more than the {max_bytes:,} of memory available")
        names = [i.filename for i in infos if not i.is_dir()]
        bad = next((n for n in names if not _safe_name(n)), None)
        if bad is not None:
            raise ArchiveError(f"has an entry named {bad[:80]!r}")
        by_name = {i.filename: i for i in infos if not i.is_dir()}
        if set(names) & set(_LEGACY) or all(n.split("/", 1)[-1] in _LEGACY for n in names) and names:
            return _legacy(zf, by_name)
        roots = {n.split("/", 1)[0] for n in names}
        if len(roots) == 1 and all("/" in n for n in names):
            root = roots.pop()
            inner = {n.split("/", 1)[1]: i for n, i in by_name.items()}
            if "archive_format" in inner:
                return _pt2(zf, root, inner)
            if set(inner) & set(_LEGACY):
                return _legacy(zf, inner, root)
        raise ArchiveError("is not in a layout torch.export.save writes (no models/*.json under one root folder, "
                           "no serialized_exported_program.json)")
    except BaseException:
        zf.close()
        raise


def _legacy(zf: zipfile.ZipFile, by_name: dict[str, zipfile.ZipInfo], root: str = "") -> Archive:
    entries: dict[str, zipfile.ZipInfo] = {}
    for name, info in by_name.items():
        if name in _LEGACY:
            entries[_LEGACY[name]] = info
        elif name.startswith("extra_files/"):
            continue
        else:
            raise ArchiveError(f"has the entry {name[:80]!r}, which torch.export.save (legacy layout) does not write",
                               unsafe=name.endswith((".so", ".dll", ".dylib", ".pyc", ".py", ".pkl")))
    missing = [k for k in ("program", "weights", "constants") if k not in entries]
    if missing:
        raise ArchiveError(f"lacks {', '.join(n for n, k in _LEGACY.items() if k in missing)}")
    return Archive(zf, "legacy", root, entries)


def _pt2(zf: zipfile.ZipFile, root: str, inner: dict[str, zipfile.ZipInfo]) -> Archive:
    for name in inner:
        for prefix, why in _REFUSED_DIRS.items():
            if name.startswith(prefix):
                raise ArchiveError(f"{why} ({root}/{name[:80]})", unsafe=True)
        if name not in _PT2_FIXED and not any(p.fullmatch(name) for p in _PT2_PATTERNS):
            raise ArchiveError(f"has the entry {root}/{name[:80]!r}, which torch.export.save does not write")
    archive = Archive(zf, "pt2", root, {k: v for k, v in inner.items() if not k.startswith("extra/")})
    fmt = archive.read("archive_format", 64).decode(errors="replace").strip()
    if fmt != "pt2":
        raise ArchiveError(f"says its format is {fmt[:20]!r}, not pt2")
    if "models/model.json" not in inner:
        found = sorted(n for n in inner if n.startswith("models/"))
        raise ArchiveError(f"has no program named 'model' (models/model.json){': it holds ' + ', '.join(found) if found else ''}")
    return archive
