"""Files in and out: what LayerScope reads (models, data, saved programs) and how it writes.

- ``source``: what a user names (a zoo model, ``file.py:factory``, a ``.pt2``) -> module + inputs.
- ``safeload``: the allowlist ``.pt2`` reader (nothing in a file runs unless ``--trust-file``).
- ``zoo``: the built-in models, defined in code. ``data``: data folders, the shipped digits set,
  and random inputs shaped like the example inputs (``random_like``: the one place they are built).
- ``safeio``: atomic writes, output checks, bounded JSON; ``serde``: dataclasses <-> JSON.
- ``workspace``: the work and cache folders, removed when a job ends.
"""

from .safeio import OutputFolder, atomic_write_text, check_output_path, read_json
from .serde import from_jsonable, to_jsonable
from .source import LoadedModel, load_model

__all__ = ["LoadedModel", "load_model", "OutputFolder", "atomic_write_text", "check_output_path", "read_json", "to_jsonable",
           "from_jsonable"]
