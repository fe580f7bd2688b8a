"""Budgets, compression sweeps and trade-offs: search recipes under a user's budgets, measure each
candidate (size, latency, peak memory, quality) on this machine and estimate it on target devices,
record everything in the history database, and summarise with Pareto fronts and pass/fail tables."""

from .budgets import BUDGET_KEYS, BudgetCheck, Budgets, Target, check_budgets, resolve_targets
from .pareto import knee, pareto_front
from .result import Candidate, SweepResult, load_sweep, summarise
from .runner import SweepOptions, run_sweep
from .sensitivity import LayerSensitivity, sensitivity_ranking
from .space import DEFAULT_SPACE, Recipe, SearchSpace

__all__ = ["BUDGET_KEYS", "BudgetCheck", "Budgets", "Target", "check_budgets", "resolve_targets", "knee", "pareto_front",
           "Candidate", "SweepOptions", "SweepResult", "load_sweep", "run_sweep", "summarise", "LayerSensitivity",
           "sensitivity_ranking", "DEFAULT_SPACE", "Recipe", "SearchSpace"]
