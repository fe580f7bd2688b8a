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
import math
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
from ..timing import BUSY_LOAD
from .backends import check_ray_address, make_backend
from .budgets import BudgetCheck, Budgets, check_budgets
from .evaluate import SweepSetup
from .pareto import knee, pareto_front
from .sensitivity import LayerSensitivity, sensitivity_ranking
from .space import Recipe, SearchSpace

if TYPE_CHECKING:
    from ..history.store import HistoryStore

__all__ = ["SweepOptions", "SweepResult", "Candidate", "run_sweep", "load_sweep", "summarise"]

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


@dataclass(frozen=True)
class Candidate:
    """One finished candidate as recorded: its recipe, plan, metrics, and budget checks per target."""

    id: int  # 1-based, in order of completion
    label: str
    recipe: dict[str, Any]
    plan: dict[str, Any] | None
    metrics: dict[str, Any] | None
    checks: dict[str, list[dict[str, Any]]]  # target -> [{budget, limit, value, ok}]
    warnings: tuple[str, ...] = ()
    error: str | None = None
    host: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def runs_in_ort(self) -> bool:
        """Its plan ran as real int8 in ONNX Runtime (``--export-ort`` can export it)."""
        return self.ok and any(t.get("ort_int8_ms") is not None for t in (self.metrics or {}).get("targets", {}).values())

    def passes(self, target: str | None = None) -> bool:
        if not self.ok:
            return False
        targets = [target] if target else list(self.checks)
        return all(c["ok"] for t in targets for c in self.checks.get(t, []))

    def failed(self, target: str | None = None) -> list[str]:
        targets = [target] if target else list(self.checks)
        return sorted({c["budget"] for t in targets for c in self.checks.get(t, []) if not c["ok"]})

    def excess(self) -> float:
        """Sum over failed budgets (all targets) of how far past each limit, relative to it (``BudgetCheck.excess``)."""
        return sum(BudgetCheck(**_revive(c)).excess for checks in self.checks.values() for c in checks if not c["ok"])


@dataclass(frozen=True)
class SweepResult:
    run_id: int
    model: str
    model_hash: str
    history: str  # where it is recorded
    budgets: Budgets
    quality: str  # "top1" (labelled data) or "output_sqnr_db"
    candidates: tuple[Candidate, ...]
    front_size: tuple[int, ...]  # candidate ids on the quality-vs-size front, by size
    front_latency: tuple[int, ...]  # on the quality-vs-latency (this machine, or the first target) front
    knee_size: int | None
    knee_latency: int | None
    passing: tuple[int, ...]  # candidates that meet every budget on every target, best first
    per_target: dict[str, tuple[int, ...]]  # target -> candidates passing there
    binding: tuple[str, ...]  # when nothing passes: the budgets that stop it (see ``why_none``)
    why_none: str  # one sentence: which budget binds and how close the closest candidates come
    closest: tuple[int, ...]  # when nothing passes: the candidates nearest to passing
    sensitivity: tuple[LayerSensitivity, ...]
    reference: dict[str, Any]  # float model: size, latency, top-1 …
    status: str  # done | interrupted
    search: str
    notes: tuple[str, ...] = ()
    # this machine's timing noise: ~2 sigma of the float model's latency, relative, across the candidates'
    # interleaved measurements (the float model is timed next to each one); latency ratios closer than this tie
    latency_noise: float | None = None

    def by_id(self, cid: int) -> Candidate:
        return self.candidates[cid - 1]

    def quality_of(self, c: Candidate) -> float:
        v = (c.metrics or {}).get(self.quality)
        return math.nan if v is None else float(v)

    def latency_target(self) -> str:
        return self.budgets.latency_target

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)


def _quality_key(labelled: bool) -> str:
    return "top1" if labelled else "output_sqnr_db"


def _finite(v: Any) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return math.nan
    return x if not math.isinf(x) else (1e9 if x > 0 else -1e9)  # inf SQNR (unchanged output) sorts as best, stays finite


def summarise(run_id: int, model: str, model_hash: str, history: str, budgets: Budgets, labelled: bool, records: list[dict],
              sensitivity: tuple[LayerSensitivity, ...], reference: dict[str, Any], status: str, search: str,
              notes: tuple[str, ...] = ()) -> SweepResult:
    """The result of a sweep from its recorded candidates (the same whether it ran now or is read back)."""
    quality = _quality_key(labelled)
    cands = []
    for i, r in enumerate(records, 1):
        metrics = _revive(r.get("metrics"))
        checks = {t: [to_jsonable(c) for c in cs] for t, cs in check_budgets(budgets, metrics).items()} if metrics else {}
        cands.append(Candidate(i, r.get("label", ""), r["recipe"], r.get("plan"), metrics, checks, tuple(r.get("warnings", ())),
                               r.get("error"), r.get("host", "")))
    ok = [c for c in cands if c.ok]
    lat_target = budgets.latency_target

    def front(cost) -> tuple[tuple[int, ...], int | None]:
        pts = [(cost(c), _finite(c.metrics.get(quality))) for c in ok if c.metrics]
        f = pareto_front(pts)
        k = knee(pts, f)
        return tuple(ok[i].id for i in f), (ok[k].id if k is not None else None)

    noise = _latency_noise([c.metrics["targets"][lat_target]["latency_ms_reference"] for c in ok
                            if c.metrics and c.metrics["targets"].get(lat_target, {}).get("measured")])
    step = max(noise or 0.0, 0.01)

    def lat_cost(c: Candidate) -> float:
        t = (c.metrics or {})["targets"].get(lat_target, {})
        r = _finite(t.get("latency_ratio"))
        return round(r / step) * step if t.get("measured") and not math.isnan(r) else r  # within the noise: a tie

    fs, ks = front(lambda c: _finite((c.metrics or {})["size_ratio"]))
    fl, kl = front(lat_cost)
    busy = [c.id for c in ok if ((c.metrics or {})["targets"].get(lat_target, {}).get("other_load") or 0.0) > BUSY_LOAD]
    if busy:
        notes = (*notes, f"{len(busy)} candidate(s) were timed while other processes used more than {BUSY_LOAD:.0%} of the CPUs "
                         f"(#{', #'.join(map(str, busy[:8]))}{' …' if len(busy) > 8 else ''}): their latency ratios are the least "
                         f"trustworthy; the float model was timed interleaved with each, so the ratio, not the ms, is what to read")
    if noise is not None and noise > 0.02:
        notes = (*notes, f"the float model's own latency here varied by ±{noise:.0%} between the candidates' measurements "
                         f"(timing noise on this machine): latency ratios closer than that count as ties on the front")
    def rank(c: Candidate) -> tuple[float, float, float]:
        m = c.metrics or {}
        return _finite(m["size_ratio"]), _finite(m["targets"].get(lat_target, {}).get("latency_ratio")), -_finite(m.get(quality))

    passing = sorted((c for c in ok if c.passes()), key=rank)
    per_target = {t: tuple(c.id for c in ok if c.passes(t)) for t in budgets.targets}
    binding: tuple[str, ...] = ()
    why = ""
    closest: tuple[int, ...] = ()
    if ok and not passing and budgets.limits():
        binding, why, closest = _binding(budgets, ok)
    return SweepResult(run_id, model, model_hash, history, budgets, quality, tuple(cands), fs, fl, ks, kl,
                       tuple(c.id for c in passing), per_target, binding, why, closest, sensitivity, reference, status, search, notes,
                       noise)


def _latency_noise(refs: list[float]) -> float | None:
    """~2 sigma of repeated measurements of the same model, relative to their median (robust: MAD)."""
    import statistics

    if len(refs) < 3:
        return None
    med = statistics.median(refs)
    mad = statistics.median(abs(r - med) for r in refs)
    return 2 * 1.4826 * mad / med if med > 0 else None


def _revive(obj: Any) -> Any:
    """Metrics as measured: JSON holds an infinite SQNR (an unchanged output) as the string "inf"."""
    if isinstance(obj, dict):
        return {k: _revive(v) for k, v in obj.items()}
    if obj in ("inf", "-inf"):
        return float(obj)
    return obj


def _binding(budgets: Budgets, ok: list[Candidate]) -> tuple[tuple[str, ...], str, tuple[int, ...]]:
    """Which budgets stop every candidate: those no candidate meets; else the one whose removal lets
    the most candidates through. With the closest candidates (smallest total relative excess)."""
    keys = list(budgets.limits())
    met = {k: [c for c in ok if all(ch["ok"] for chs in c.checks.values() for ch in chs if ch["budget"] == k)] for k in keys}
    never = [k for k in keys if not met[k]]
    if never:
        binding = never
    else:
        freed = {k: sum(1 for c in ok if set(c.failed()) == {k}) for k in keys}
        best = max(freed.values())
        binding = [k for k in keys if freed[k] == best] if best else keys
    closest = sorted(ok, key=lambda c: c.excess())[:3]
    parts = []
    for k in binding:
        values = [ch["value"] for c in ok for chs in c.checks.values() for ch in chs if ch["budget"] == k and ch["value"] is not None]
        lim = budgets.limits()[k]
        if values:
            best_v = max(values) if k.startswith("min_") else min(values)
            parts.append(f"{k} {lim:g}: the best candidate reaches {best_v:.4g}")
        else:
            parts.append(f"{k} {lim:g}: no candidate could be measured against it")
    why = ("No candidate meets every budget. Binding: " + "; ".join(parts) + ". Closest: "
           + "; ".join(f"#{c.id} {c.label} (fails {', '.join(c.failed())})" for c in closest) + ".")
    return tuple(binding), why, tuple(c.id for c in closest)


# --------------------------------------------------------------------------- search
class _Search:
    """Proposes recipes: the grid in order, or Optuna's TPE over (technique, strength, layers)."""

    def __init__(self, space: SearchSpace, method: str, trials: int, seed: int, budgets: Budgets, quality: str,
                 lat_target: str) -> None:
        self.grid = space.recipes()
        self.method = method
        self.trials = trials
        self.quality, self.lat_target, self.budgets = quality, lat_target, budgets
        self.study = None
        self.asked: dict[str, Any] = {}  # recipe key -> optuna trial
        if method == "optuna":
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            # TPE over the conditional space (each technique has its own strengths); budgets are its constraints
            sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(3, min(10, trials // 3)))
            self.study = optuna.create_study(directions=["minimize", "minimize", "maximize"], sampler=sampler)
            self.dists = _distributions(space)

    def seed_with(self, done: list[dict]) -> None:
        """Tell the sampler what earlier sessions of this sweep measured (resume)."""
        if self.study is None:
            return
        import optuna

        for r in done:
            if r.get("metrics"):
                params = _params(Recipe.from_dict(r["recipe"]))
                dists = {k: self.dists[k] for k in params}
                self.study.add_trial(optuna.trial.create_trial(
                    params=params, distributions=dists, values=self._values(r), constraints=self._constraint_values(r)))

    def _values(self, r: dict) -> list[float]:
        m = r["metrics"]
        return [_finite(m["size_ratio"]), _finite(m["targets"].get(self.lat_target, {}).get("latency_ratio")),
                _finite(m.get(self.quality))]

    def _constraint_values(self, r: dict) -> dict[str, float]:
        """Per budget and target: 0 when met, else how far past the limit (relative); Optuna's feasibility."""
        return {f"{target}:{c.budget}": 0.0 if c.ok else (c.excess if math.isfinite(c.excess) else 1e6)
                for target, checks in check_budgets(self.budgets, r["metrics"]).items() for c in checks}

    def propose(self, skip: set[str]) -> Recipe | None:
        """The next recipe not in ``skip`` (measured or in flight); None when the search is over."""
        if self.study is None:
            return next((r for r in self.grid if r.key not in skip), None)
        for _ in range(50):  # TPE may propose a measured recipe again: tell it the known result, ask again
            trial = self.study.ask()
            recipe = _recipe_of(trial, self.dists)
            if recipe.key not in skip:
                self.asked[recipe.key] = trial
                return recipe
            self.study.tell(trial, state=_pruned())
        return next((r for r in self.grid if r.key not in skip), None)  # nearly exhausted: finish in grid order

    def tell(self, record: dict) -> None:
        if self.study is None:
            return
        trial = self.asked.pop(record.get("label", ""), None)
        if trial is None:
            return
        if record.get("metrics"):
            for key, value in self._constraint_values(record).items():
                trial.set_constraint(key, value)
            self.study.tell(trial, self._values(record))
        else:
            self.study.tell(trial, state=_pruned())


def _pruned():
    import optuna

    return optuna.trial.TrialState.PRUNED


def _distributions(space: SearchSpace) -> dict[str, Any]:
    import optuna

    techs = list(space.techniques) + (["mixed"] if space.mixed_bits and space.mixed_keep else [])
    d: dict[str, Any] = {"technique": optuna.distributions.CategoricalDistribution(techs)}
    for t, values in space.techniques.items():
        d[f"{t}.strength"] = optuna.distributions.CategoricalDistribution(values)
        layers = [x for x in space.layers if not (t == "cast" and x.startswith("all-but"))]
        d[f"{t}.layers"] = optuna.distributions.CategoricalDistribution(layers)
    if "mixed" in techs:
        d["mixed.strength"] = optuna.distributions.CategoricalDistribution(list(space.mixed_bits))
        d["mixed.keep"] = optuna.distributions.CategoricalDistribution(list(space.mixed_keep))
    return d


def _recipe_of(trial, dists: dict[str, Any]) -> Recipe:
    """The recipe a trial suggests: technique first, then that technique's own strength and layers."""
    def pick(name: str) -> Any:
        return trial.suggest_categorical(name, dists[name].choices)

    tech = pick("technique")
    strength = pick(f"{tech}.strength")
    if tech == "mixed":
        return Recipe("mixed", strength, "all", pick("mixed.keep"))
    return Recipe(tech, strength, pick(f"{tech}.layers"))


def _params(r: Recipe) -> dict[str, Any]:
    if r.technique == "mixed":
        return {"technique": "mixed", "mixed.strength": r.strength, "mixed.keep": r.keep}
    return {"technique": r.technique, f"{r.technique}.strength": r.strength, f"{r.technique}.layers": r.layers}


# --------------------------------------------------------------------------- the job
def _config(req: ModelRequest, opts: SweepOptions, method: str, total: int, labelled: bool,
            sensitivity: tuple[LayerSensitivity, ...]) -> dict:
    """What a resume needs to continue the same sweep."""
    return {"request": to_jsonable(req), "budgets": to_jsonable(opts.budgets), "space": opts.space.raw, "data": opts.data,
            "samples": opts.samples, "trials": opts.trials, "total": total, "search": method, "seed": opts.seed,
            "labelled": labelled, "ort": opts.ort, "sensitivity": to_jsonable(list(sensitivity))}


def _reference(profile: Profile, first: dict | None) -> dict[str, Any]:
    m = (first or {}).get("metrics") or {}
    return {"size_bytes": m.get("size_bytes_reference", profile.model.total_weight_bytes),
            "latency_ms": m.get("latency_ms_reference", profile.summary.end_to_end_ms),
            "top1": m.get("top1_reference"), "peak_memory_bytes": profile.summary.peak_memory_bytes,
            "flops": profile.total_flops, "layers": len(profile.graph)}


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
    run = None
    if opts.resume is not None:
        run, req, opts = _resumed(store, opts.resume, req, opts)
    budgets, space = opts.budgets, opts.space
    yield Progress("load", 0, 1, req.model or "default model")
    loaded = req.load()
    samples = samples_for(loaded, opts.data, opts.samples)
    if budgets.needs_labels and not samples.labelled:
        raise BudgetError(f"max_top1_drop_points needs labelled data, and {samples.source} has no labels: give --data DIR with "
                          f"batches that hold y (class labels), or budget quality with min_output_sqnr_db / min_output_cosine.")
    model_hash = model_fingerprint(loaded.module)
    yield Progress("load", 1, 1, loaded.name)
    if run is not None:
        profile, sensitivity = _stored_reference(store, run, model_hash)
    else:
        profile, sensitivity = yield from _measure_reference(store, req, space, loaded, samples, model_hash)
    grid = space.recipes()
    total = min(opts.trials or len(grid), len(grid))
    method = opts.search if opts.search != "auto" else ("grid" if total >= len(grid) else "optuna")
    quality = _quality_key(samples.labelled)
    lat_target = budgets.latency_target
    n_threads = torch.get_num_threads()
    workers, capped = (opts.workers, None) if opts.ray is not None else worker_limit(opts.workers, weight_bytes(loaded.module).total)
    setup = SweepSetup(req, opts.data, opts.samples, profile.to_json(), tuple(s.layer_id for s in sensitivity), budgets.targets,
                       runs=req.runs, warmup=req.warmup, compute_threads=max(1, n_threads // workers),
                       timing_threads=req.threads or n_threads, ort=opts.ort)
    yield Progress("workers", 0, 1, "starting" + (" Ray" if opts.ray is not None else ""))
    # an unreachable cluster fails here, before anything is recorded; one worker in this process reuses the loaded model
    backend = make_backend(setup, workers, opts.ray, loaded, samples, profile)
    model_spec = req.model or loaded.spec
    del loaded  # workers in other processes hold their own copy; this one is no longer needed here
    yield Progress("workers", 1, 1, f"{backend.workers} ready")
    if run is None:
        config = _config(req, opts, method, total, samples.labelled, sensitivity)
        run_id = store.add_run("sweep", model_spec, model_hash, status="running", config=config,
                               profile_json=profile.to_json(), note=opts.note)
    else:
        run_id = run.id
        store.update_run(run_id, status="running")
    done = store.candidates(run_id)
    search = _Search(space, method, total, opts.seed, budgets, quality, lat_target)
    search.seed_with(done)
    in_flight: set[str] = set()
    skip = {r["key"] for r in done}
    resumed = len(done)
    if resumed:
        log.info("run %d: %d candidate(s) already measured, not measured again", run_id, resumed)
    t0 = time.perf_counter()
    yield Progress("sweep", len(done), total, f"{method} search, {backend.workers} worker(s)"
                   + (f", {resumed} already measured" if resumed else ""))
    try:
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
        backend.close()
        records = store.candidates(run_id)
        notes = ((f"{resumed} candidate(s) were measured by an earlier session of this sweep",) if resumed else ()) + \
            ((capped,) if capped else ())
        result = summarise(run_id, model_spec, model_hash, store.where, budgets, samples.labelled, records, sensitivity,
                           _reference(profile, records[0] if records else None), "done", method, notes)
    except BaseException as exc:  # Ctrl-C, Cancel, SIGTERM, a closed generator: interrupted; anything else: failed
        backend.close(cancel=True)
        stopped = not isinstance(exc, Exception) or isinstance(exc, (Cancelled, Terminated))
        store.update_run(run_id, status="interrupted" if stopped else "failed")
        raise
    store.update_run(run_id, status="done", metrics=_finish_metrics(result))
    store.close()
    return result


def load_sweep(store: HistoryStore, run_id: int) -> tuple[SweepResult, Profile | None]:
    """A recorded sweep read back (finished or interrupted) and its reference profile."""
    run = store.run(run_id)
    if run.kind != "sweep" or not run.config:
        raise SweepError(f"Run {run_id} is a {run.kind} run, not a sweep.")
    cfg = run.config
    text = store.profile_json(run_id)
    profile = Profile.from_json(text, f"run {run_id}'s reference profile") if text else None
    records = store.candidates(run_id)
    sens = tuple(from_jsonable(LayerSensitivity, s) for s in cfg.get("sensitivity") or [])
    budgets = Budgets.from_dict(cfg["budgets"], f"run {run_id}'s budgets")
    ref = _reference(profile, records[0] if records else None) if profile else {}
    status = run.status
    result = summarise(run_id, run.model, run.model_hash, store.where, budgets, bool(cfg.get("labelled")), records, sens, ref,
                       status, cfg.get("search", "grid"))
    return result, profile

