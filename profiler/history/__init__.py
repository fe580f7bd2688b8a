"""The experiment history: every profile, compress and sweep run in one database.

- ``records``: a run as LayerScope reads it (``RunRecord``), the database URL, the model
  fingerprint, comparing two runs. No SQLAlchemy.
- ``recording``: ``Record`` and ``record_run``, what a job calls when it finishes.
- ``store``: ``HistoryStore``, the database itself (SQLAlchemy Core). Import it where a database
  is opened: this package does not, so commands that record nothing never load SQLAlchemy.
"""

from .recording import Record, profile_layers, profile_metrics, record_run
from .records import LayerDiff, RunRecord, compare_runs, default_url, headline, machine_name, model_fingerprint, resolve_url

__all__ = ["RunRecord", "LayerDiff", "compare_runs", "headline", "default_url", "resolve_url", "machine_name", "model_fingerprint",
           "Record", "record_run", "profile_layers", "profile_metrics"]
