"""Which recipe to measure next: the grid in order, or Optuna's multi-objective TPE over (technique,
strength, layers) with the budgets as constraints, seeded with what a resumed sweep already measured."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .budgets import Budgets, check_budgets
from .result import finite_or_far
from .space import Recipe, SearchSpace

if TYPE_CHECKING:
    pass


__all__ = ["Search"]


class Search:
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
        return [finite_or_far(m["size_ratio"]), finite_or_far(m["targets"].get(self.lat_target, {}).get("latency_ratio")),
                finite_or_far(m.get(self.quality))]

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
