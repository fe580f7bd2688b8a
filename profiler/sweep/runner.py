"""The sweep: measure the float model once (profile, sensitivity), then search compression recipes
(grid, or Optuna's multi-objective TPE under the budgets as constraints), measure each candidate on
a backend, record it in the history database the moment it finishes, and summarise: Pareto fronts,
knees, the candidates that pass every budget, and which budget binds when none does.

Interrupting loses nothing: every finished candidate is already in the database, and
``resume=RUN_ID`` continues without measuring them again.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..capture.weights import weight_bytes
from ..errors import BudgetError, Cancelled, SweepError
from ..files.data import SampleSet, samples_for
from ..files.serde import from_jsonable, to_jsonable
from ..files.source import LoadedModel
from ..files.workspace import Terminated
from ..format import fmt_bytes
from ..hardware import resolve_hardware
from ..history import RunRecord, model_fingerprint
from ..pipeline import profile_model
from ..profile import Profile
from ..progress import Progress, Work
from ..request import ModelRequest
from ..resources import available_memory_bytes
from .backends import check_ray_address, make_backend
from .budgets import Budgets
from .evaluate import SweepSetup
from .result import SweepResult, quality_key, reference_numbers, summarise
from .search import Search
from .sensitivity import LayerSensitivity, sensitivity_ranking
from .space import SearchSpace

if TYPE_CHECKING:
    from ..history.store import HistoryStore

__all__ = ["SweepOptions", "run_sweep", "worker_limit"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepOptions:
    budgets: Budgets = field(default_factory=Budgets)
    space: SearchSpace = field(default_factory=lambda: SearchSpace.load(None))
    data: str | None = None  # folder of .npz/.pt batches; default the model's own set (digits_cnn) or random batches
    samples: int = 8
    trials: int | None = None  # None: every recipe of the grid
    search: str = "auto"  # grid | optuna | auto (grid when the grid fits in --trials)
    workers: int = 1
    ray: str | None = None  # None: no Ray; "": a local instance; "HOST:PORT": an existing cluster
    seed: int = 0
    note: str = ""
    history: str | None = None  # database URL or path; None: $LAYERSCOPE_HISTORY or the default file
    resume: int | None = None  # a sweep run id to continue
    ort: bool = True  # measure real ONNX Runtime int8 speed for int8 recipes

    def check(self) -> None:
        if self.workers < 1:
            raise BudgetError("--workers must be >= 1.")
        if self.trials is not None and self.trials < 1:
            raise BudgetError("--trials must be >= 1.")
        if self.search not in ("auto", "grid", "optuna"):
            raise BudgetError(f"--search {self.search!r}: use grid, optuna or auto.")


def _config(req: ModelRequest, opts: SweepOptions, method: str, total: int, labelled: bool,
            sensitivity: tuple[LayerSensitivity, ...]) -> dict:
    """What a resume needs to continue the same sweep."""
    return {"request": to_jsonable(req), "budgets": to_jsonable(opts.budgets), "space": opts.space.raw, "data": opts.data,
            "samples": opts.samples, "trials": opts.trials, "total": total, "search": method, "seed": opts.seed,
            "labelled": labelled, "ort": opts.ort, "sensitivity": to_jsonable(list(sensitivity))}


def _finish_metrics(result: SweepResult) -> dict[str, Any]:
    best = result.by_id(result.passing[0]).label if result.passing else None
    return {"candidates": len(result.candidates), "passing": len(result.passing), "best": best,
            "front_size": list(result.front_size), "front_latency": list(result.front_latency)}


def _resumed(store: HistoryStore, run_id: int, req: ModelRequest, opts: SweepOptions) -> tuple[RunRecord, ModelRequest, SweepOptions]:
    """The run to continue, and the request and options it was started with (threads, workers and Ray may change)."""
    run = store.run(run_id)
    if run.kind != "sweep" or not run.config:
        raise SweepError(f"Run {run.id} is a {run.kind} run, not a sweep: nothing to resume (`layerscope history --kind sweep`).")
    cfg = run.config
    req = dataclasses.replace(from_jsonable(ModelRequest, cfg["request"]), threads=req.threads)
    opts = dataclasses.replace(opts, budgets=Budgets.from_dict(cfg["budgets"], f"run {run.id}'s budgets"),
                               space=SearchSpace.from_dict(cfg["space"], f"run {run.id}'s search space"), data=cfg["data"],
                               samples=cfg["samples"], trials=cfg["trials"], seed=cfg["seed"], search=cfg["search"],
                               ort=cfg.get("ort", True))
    return run, req, opts


def _stored_reference(store: HistoryStore, run: RunRecord, model_hash: str) -> tuple[Profile, tuple[LayerSensitivity, ...]]:
    """A resumed sweep's float-model profile and sensitivity ranking, as its first session measured them."""
    if run.model_hash != model_hash:
        raise SweepError(f"The model {run.model!r} is not the one run {run.id} swept (its weights or structure changed): "
                         f"start a new sweep.")
    text = store.profile_json(run.id)
    if text is None:
        raise SweepError(f"Run {run.id} has no reference profile stored; start a new sweep.")
    sensitivity = tuple(from_jsonable(LayerSensitivity, s) for s in (run.config or {}).get("sensitivity") or [])
    return Profile.from_json(text, f"run {run.id}'s reference profile"), sensitivity


def _measure_reference(store: HistoryStore, req: ModelRequest, space: SearchSpace, loaded: LoadedModel, samples: SampleSet,
                       model_hash: str) -> Work[tuple[Profile, tuple[LayerSensitivity, ...]]]:
    """Profile the float model (bound classes and per-layer latency feed the selectors) and, when the
    space needs it, rank the layers by sensitivity (reused from the history for the same model and data)."""
    hw = yield from resolve_hardware(req.hardware or "this")
    profile = yield from profile_model(loaded, hw, runs=req.runs, warmup=req.warmup, method=req.run_method)
    if not space.uses_sensitivity:
        return profile, ()
    key = f"{space.sensitivity_technique} {space.sensitivity_strength}-bit | {samples.source} | {samples.n_samples}"
    cached = store.sensitivity(model_hash, key)
    if cached is not None:
        log.info("sensitivity ranking reused from the history (%s)", key)
        return profile, tuple(from_jsonable(LayerSensitivity, s) for s in cached)
    ranking = yield from sensitivity_ranking(loaded.module, profile, samples, space.sensitivity_technique, space.sensitivity_strength)
    store.save_sensitivity(model_hash, key, ranking)
    return profile, tuple(ranking)


_WORKER_OVERHEAD = 400 * 2**20  # a worker process with torch imported, before the model


def worker_limit(asked: int, model_bytes: int) -> tuple[int, str | None]:
    """(the workers this machine can run, a note when fewer than asked). Each local worker is a process
    holding its own copy of the model and a compressed candidate (~3× the model) beside torch itself; more
    workers than cores only time each other."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    avail = available_memory_bytes()
    by_memory = max(1, avail // (3 * model_bytes + _WORKER_OVERHEAD)) if avail else asked
    limit = max(1, min(asked, cores, by_memory))
    if limit == asked:
        return asked, None
    why = (f"this machine has {cores} core(s)" if limit == cores else
           f"{fmt_bytes(avail)} of memory is free and each worker needs about {fmt_bytes(3 * model_bytes + _WORKER_OVERHEAD)}")
    return limit, f"--workers {asked} was capped at {limit}: {why}"


@dataclass
class _Sweep:
    """What a sweep works with once the float model is measured (or read back, when resumed)."""

    run: RunRecord | None
    req: ModelRequest
    opts: SweepOptions
    loaded: LoadedModel
    samples: SampleSet
    model_hash: str
    profile: Profile
    sensitivity: tuple[LayerSensitivity, ...]


def _start(store: HistoryStore, req: ModelRequest, opts: SweepOptions) -> Work[_Sweep]:
    """Load the model and its samples, and measure the float model (profile, sensitivity) or, when
    resuming, read what the interrupted sweep measured."""
    run = None
    if opts.resume is not None:
        run, req, opts = _resumed(store, opts.resume, req, opts)
    loaded = yield from req.loading()
    samples = samples_for(loaded, opts.data, opts.samples)
    if opts.budgets.needs_labels and not samples.labelled:
        raise BudgetError(f"max_top1_drop_points needs labelled data, and {samples.source} has no labels: give --data DIR with "
                          f"batches that hold y (class labels), or budget quality with min_output_sqnr_db / min_output_cosine.")
    model_hash = model_fingerprint(loaded.module)
    if run is not None:
        profile, sensitivity = _stored_reference(store, run, model_hash)
    else:
        profile, sensitivity = yield from _measure_reference(store, req, opts.space, loaded, samples, model_hash)
    return _Sweep(run, req, opts, loaded, samples, model_hash, profile, sensitivity)


def _measure_candidates(store: HistoryStore, run_id: int, backend: Any, search: Search, total: int, method: str) -> Work[None]:
    """Propose, measure and record candidates until ``total`` are done (or the search has no more);
    each is in the database the moment it finishes."""
    done = store.candidates(run_id)
    search.seed_with(done)
    in_flight: set[str] = set()
    skip = {r["key"] for r in done}
    resumed = len(done)
    if resumed:
        log.info("run %d: %d candidate(s) already measured, not measured again", run_id, resumed)
    t0 = time.perf_counter()
    yield Progress("sweep", len(done), total, f"{method} search, {backend.workers} worker(s)"
                   + (f", {resumed} already measured" if resumed else ""))
    while len(done) < total:
        while backend.pending < backend.workers and len(done) + backend.pending < total:
            recipe = search.propose(skip | in_flight)
            if recipe is None:
                break
            in_flight.add(recipe.key)
            backend.submit(recipe.to_dict())
        if backend.pending == 0:
            break
        rec = backend.next_done()
        rec["host"] = os.uname().nodename
        store.add_candidate(run_id, rec["label"], rec)
        in_flight.discard(rec["label"])
        skip.add(rec["label"])
        search.tell(rec)
        done.append(rec)
        rate = (len(done) - resumed) / max(time.perf_counter() - t0, 1e-9) * 60
        yield Progress("sweep", len(done), total, f"{rec['label']} ({rate:.1f}/min)")


def run_sweep(req: ModelRequest, opts: SweepOptions) -> Work[SweepResult]:
    """Measure the float model, search recipes, record every candidate, and summarise.

    With ``workers`` > 1 the pool spawns processes: a script that calls this must guard its entry
    point with ``if __name__ == "__main__":`` (as with any multiprocessing code)."""
    import torch

    opts.check()
    if opts.ray is not None:
        check_ray_address(opts.ray)  # before any work: an unreachable cluster is named at once
    from ..history.store import HistoryStore  # SQLAlchemy: loaded when a sweep runs, not when the CLI starts

    store = HistoryStore(opts.history)
    s = yield from _start(store, req, opts)
    req, opts, profile, sensitivity, samples = s.req, s.opts, s.profile, s.sensitivity, s.samples
    budgets, space = opts.budgets, opts.space
    grid = space.recipes()
    total = min(opts.trials or len(grid), len(grid))
    method = opts.search if opts.search != "auto" else ("grid" if total >= len(grid) else "optuna")
    n_threads = torch.get_num_threads()
    workers, capped = (opts.workers, None) if opts.ray is not None else worker_limit(opts.workers, weight_bytes(s.loaded.module).total)
    setup = SweepSetup(req, opts.data, opts.samples, profile.to_json(), tuple(x.layer_id for x in sensitivity), budgets.targets,
                       runs=req.runs, warmup=req.warmup, compute_threads=max(1, n_threads // workers),
                       timing_threads=req.threads or n_threads, ort=opts.ort)
    yield Progress("workers", 0, 1, "starting" + (" Ray" if opts.ray is not None else ""))
    # an unreachable cluster fails here, before anything is recorded; one worker in this process reuses the loaded model
    backend = make_backend(setup, workers, opts.ray, s.loaded, samples, profile)
    model_spec = req.model or s.loaded.spec
    s.loaded = None  # type: ignore[assignment]  # workers in other processes hold their own copy; this one is no longer needed
    yield Progress("workers", 1, 1, f"{backend.workers} ready")
    if s.run is None:
        run_id = store.add_run("sweep", model_spec, s.model_hash, status="running", profile_json=profile.to_json(), note=opts.note,
                               config=_config(req, opts, method, total, samples.labelled, sensitivity))
    else:
        run_id = s.run.id
        store.update_run(run_id, status="running")
    resumed = len(store.candidates(run_id))
    search = Search(space, method, total, opts.seed, budgets, quality_key(samples.labelled), budgets.latency_target)
    try:
        yield from _measure_candidates(store, run_id, backend, search, total, method)
        backend.close()
        records = store.candidates(run_id)
        notes = ((f"{resumed} candidate(s) were measured by an earlier session of this sweep",) if resumed else ()) + \
            ((capped,) if capped else ())
        result = summarise(run_id, model_spec, s.model_hash, store.where, budgets, samples.labelled, records, sensitivity,
                           reference_numbers(profile, records[0] if records else None), "done", method, notes)
    except BaseException as exc:  # Ctrl-C, Cancel, SIGTERM, a closed generator: interrupted; anything else: failed
        backend.close(cancel=True)
        stopped = not isinstance(exc, Exception) or isinstance(exc, (Cancelled, Terminated))
        store.update_run(run_id, status="interrupted" if stopped else "failed")
        raise
    store.update_run(run_id, status="done", metrics=_finish_metrics(result))
    store.close()
    return result
