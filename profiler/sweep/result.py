"""A sweep's result: every recorded candidate with its budget checks per target, the Pareto fronts and knees,
what passes, and, when nothing does, which budget binds; the same whether the sweep ran now or is read back."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import SweepError
from ..files.serde import from_jsonable, to_jsonable
from ..profile import Profile
from ..timing import BUSY_LOAD
from .budgets import BudgetCheck, Budgets, check_budgets
from .pareto import knee, pareto_front
from .sensitivity import LayerSensitivity

if TYPE_CHECKING:
    from ..history.store import HistoryStore

__all__ = ["Candidate", "SweepResult", "summarise", "load_sweep", "quality_key", "reference_numbers", "finite_or_far"]


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

    @property
    def settled(self) -> bool:
        """No budget verdict of it lies within the timing noise (see ``BudgetCheck.inconclusive``)."""
        return not any(c.get("inconclusive") for checks in self.checks.values() for c in checks)

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


def quality_key(labelled: bool) -> str:
    return "top1" if labelled else "output_sqnr_db"


def finite_or_far(v: Any) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return math.nan
    return x if not math.isinf(x) else (1e9 if x > 0 else -1e9)  # inf SQNR (unchanged output) sorts as best, stays finite


def summarise(run_id: int, model: str, model_hash: str, history: str, budgets: Budgets, labelled: bool, records: list[dict],
              sensitivity: tuple[LayerSensitivity, ...], reference: dict[str, Any], status: str, search: str,
              notes: tuple[str, ...] = ()) -> SweepResult:
    """The result of a sweep from its recorded candidates (the same whether it ran now or is read back)."""
    quality = quality_key(labelled)
    cands = []
    for i, r in enumerate(records, 1):
        metrics = _revive(r.get("metrics"))
        checks = {t: [to_jsonable(c) for c in cs] for t, cs in check_budgets(budgets, metrics).items()} if metrics else {}
        cands.append(Candidate(i, r.get("label", ""), r["recipe"], r.get("plan"), metrics, checks, tuple(r.get("warnings", ())),
                               r.get("error"), r.get("host", "")))
    ok = [c for c in cands if c.ok]
    lat_target = budgets.latency_target

    def front(cost) -> tuple[tuple[int, ...], int | None]:
        pts = [(cost(c), finite_or_far(c.metrics.get(quality))) for c in ok if c.metrics]
        f = pareto_front(pts)
        k = knee(pts, f)
        return tuple(ok[i].id for i in f), (ok[k].id if k is not None else None)

    noise = _latency_noise([c.metrics["targets"][lat_target]["latency_ms_reference"] for c in ok
                            if c.metrics and c.metrics["targets"].get(lat_target, {}).get("measured")])
    step = max(noise or 0.0, 0.01)

    def lat_cost(c: Candidate) -> float:
        t = (c.metrics or {})["targets"].get(lat_target, {})
        r = finite_or_far(t.get("latency_ratio"))
        return round(r / step) * step if t.get("measured") and not math.isnan(r) else r  # within the noise: a tie

    fs, ks = front(lambda c: finite_or_far((c.metrics or {})["size_ratio"]))
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
        return finite_or_far(m["size_ratio"]), finite_or_far(m["targets"].get(lat_target, {}).get("latency_ratio")), -finite_or_far(m.get(quality))

    passing = sorted((c for c in ok if c.passes()), key=lambda c: (not c.settled, *rank(c)))  # settled verdicts first
    unsettled = [c.id for c in passing if not c.settled]
    if unsettled:
        notes = (*notes, f"{len(unsettled)} passing candidate(s) meet a latency budget only within the timing noise "
                         f"(#{', #'.join(map(str, unsettled[:8]))}{' …' if len(unsettled) > 8 else ''}): not failed on noise, "
                         f"ranked after the settled ones; measure again with more --runs to settle them")
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


def reference_numbers(profile: Profile, first: dict | None) -> dict[str, Any]:
    m = (first or {}).get("metrics") or {}
    return {"size_bytes": m.get("size_bytes_reference", profile.model.total_weight_bytes),
            "latency_ms": m.get("latency_ms_reference", profile.summary.end_to_end_ms),
            "top1": m.get("top1_reference"), "peak_memory_bytes": profile.summary.peak_memory_bytes,
            "flops": profile.total_flops, "layers": len(profile.graph)}


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
    ref = reference_numbers(profile, records[0] if records else None) if profile else {}
    status = run.status
    result = summarise(run_id, run.model, run.model_hash, store.where, budgets, bool(cfg.get("labelled")), records, sens, ref,
                       status, cfg.get("search", "grid"))
    return result, profile
