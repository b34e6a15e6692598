"""Significance of several systems against one baseline, with a correction for multiple comparisons.

Tests are paired over the counted queries (see :mod:`retrdistill.evaluation.metrics`) and two-sided:

* ``"student"``: paired Student t-test (``scipy.stats.ttest_rel``, what ranx uses). When every per-query
  difference is the same, p is 1 if they are all zero and 0 otherwise.
* ``"fisher"``: Fisher's randomisation test on the mean difference; each query's pair is swapped with
  probability 1/2. ``n_permutations`` counts the observed labelling, so
  p = (1 + #{random labellings at least as extreme}) / n_permutations >= 1 / n_permutations. When 2**n_queries
  <= n_permutations every labelling is enumerated and p is exact. The draw is seeded and single-threaded
  (ranx's numba version gives a different p on every call when threads > 1), so p is reproducible.

Corrections (``"holm"`` by default, ``"bonferroni"``, ``"none"``) run over the systems for each metric
(``correct_over="systems"``) or over every (system, metric) pair (``"all"``).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from retrdistill.errors import ConfigError
from retrdistill.evaluation.metrics import DEFAULT_METRICS, EvalResult, evaluate

log = logging.getLogger(__name__)

Test = Literal["student", "fisher"]
Correction = Literal["holm", "bonferroni", "none"]
TIE_TOLERANCE = 1e-12  # per-query differences smaller than this are ties
_CHUNK = 1024


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm–Bonferroni adjusted p-values: step down through the sorted p, times (m - i), kept monotone, capped at 1."""
    keys = sorted(p_values, key=lambda k: p_values[k])
    m = len(keys)
    out: dict[str, float] = {}
    running = 0.0
    for i, key in enumerate(keys):
        running = max(running, min(1.0, (m - i) * p_values[key]))
        out[key] = running
    return out


def bonferroni(p_values: Mapping[str, float]) -> dict[str, float]:
    return {k: min(1.0, len(p_values) * p) for k, p in p_values.items()}


def _correct(p_values: Mapping[str, float], correction: Correction) -> dict[str, float]:
    if correction == "holm":
        return holm(p_values)
    if correction == "bonferroni":
        return bonferroni(p_values)
    return dict(p_values)


def paired_t_test(baseline: np.ndarray, system: np.ndarray) -> float:
    """Two-sided paired Student t-test p-value."""
    from scipy.stats import ttest_rel

    diff = np.asarray(system, dtype=float) - np.asarray(baseline, dtype=float)
    if diff.size < 2:
        raise ValueError("a paired t-test needs at least 2 queries")
    if np.ptp(diff) <= TIE_TOLERANCE:  # zero variance: t is 0/0 or infinite
        return 1.0 if abs(diff[0]) <= TIE_TOLERANCE else 0.0
    return float(ttest_rel(system, baseline).pvalue)


def fisher_randomization_test(
    baseline: np.ndarray, system: np.ndarray, n_permutations: int = 10_000, seed: int = 42
) -> float:
    """Two-sided paired randomisation test on the mean difference (see the module docstring)."""
    diff = np.asarray(system, dtype=float) - np.asarray(baseline, dtype=float)
    n = diff.size
    if n == 0:
        raise ValueError("a randomisation test needs at least 1 query")
    if n_permutations < 1:
        raise ValueError("n_permutations must be >= 1")
    observed = abs(diff.mean()) - TIE_TOLERANCE
    if n <= 20 and 2**n <= n_permutations:  # exact: every sign pattern, the observed one included
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        return float(np.mean(np.abs(signs @ diff) / n >= observed))
    rng = np.random.default_rng(seed)
    extreme, left = 1, n_permutations - 1  # the observed labelling counts as one
    while left:
        size = min(left, _CHUNK)
        signs = rng.choice((-1.0, 1.0), size=(size, n))
        extreme += int(np.count_nonzero(np.abs(signs @ diff) / n >= observed))
        left -= size
    return extreme / n_permutations


@dataclass
class Comparison:
    """Every system against ``baseline`` on every metric; per-query values kept in ``results``."""

    baseline: str
    metrics: tuple[str, ...]
    test: Test
    correction: Correction
    correct_over: str
    alpha: float
    n_permutations: int
    seed: int
    queries: list[str]  # the paired queries, sorted
    results: dict[str, EvalResult]  # system -> its evaluation (baseline included)
    p_values: dict[str, dict[str, float]]  # system -> metric -> raw p (baseline excluded)
    p_corrected: dict[str, dict[str, float]]
    win_tie_loss: dict[str, dict[str, tuple[int, int, int]]]  # system -> metric -> (wins, ties, losses)

    @property
    def systems(self) -> list[str]:
        return list(self.p_values)

    def significant(self, system: str, metric: str) -> bool:
        return self.p_corrected[system][metric] < self.alpha

    def deltas(self, system: str, metric: str) -> dict[str, float]:
        """query id -> system minus baseline."""
        s, b = self.results[system].per_query, self.results[self.baseline].per_query
        return {q: s[q][metric] - b[q][metric] for q in self.queries}

    def outcomes(self, system: str, metric: str) -> dict[str, str]:
        """query id -> "win", "tie" or "loss" for ``system`` against the baseline."""
        return {q: _outcome(d) for q, d in self.deltas(system, metric).items()}


def _outcome(delta: float) -> str:
    if delta > TIE_TOLERANCE:
        return "win"
    if delta < -TIE_TOLERANCE:
        return "loss"
    return "tie"


def compare_results(
    results: Mapping[str, EvalResult],
    baseline: str,
    *,
    test: Test = "student",
    correction: Correction = "holm",
    correct_over: Literal["systems", "all"] = "systems",
    alpha: float = 0.05,
    n_permutations: int = 10_000,
    seed: int = 42,
    metrics: Iterable[str] | None = None,
) -> Comparison:
    """Test each system's per-query values against the baseline's; all must cover the same queries."""
    if test not in ("student", "fisher"):
        raise ConfigError(f"unknown test {test!r}; accepted: student, fisher")
    if correction not in ("holm", "bonferroni", "none"):
        raise ConfigError(f"unknown correction {correction!r}; accepted: holm, bonferroni, none")
    if correct_over not in ("systems", "all"):
        raise ConfigError(f"unknown correct_over {correct_over!r}; accepted: systems, all")
    if baseline not in results:
        raise ConfigError(f"baseline {baseline!r} is not among the systems: {sorted(results)}")
    if len(results) < 2:
        raise ConfigError("comparing needs the baseline and at least one other system")
    base = results[baseline]
    names = tuple(metrics) if metrics is not None else base.metrics
    queries = sorted(base.per_query)
    for name, res in results.items():
        if sorted(res.per_query) != queries:
            raise ValueError(f"system {name!r} was scored on other queries than the baseline {baseline!r}")
        if not set(names) <= set(res.metrics):
            raise ValueError(f"system {name!r} lacks metrics {sorted(set(names) - set(res.metrics))}")
    others = [s for s in results if s != baseline]
    raw: dict[str, dict[str, float]] = {s: {} for s in others}
    wtl: dict[str, dict[str, tuple[int, int, int]]] = {s: {} for s in others}
    for system in others:
        for metric in names:
            b = np.array([base.per_query[q][metric] for q in queries])
            s = np.array([results[system].per_query[q][metric] for q in queries])
            if test == "student":
                raw[system][metric] = paired_t_test(b, s)
            else:
                raw[system][metric] = fisher_randomization_test(b, s, n_permutations, seed)
            outcomes = [_outcome(d) for d in s - b]
            wtl[system][metric] = (outcomes.count("win"), outcomes.count("tie"), outcomes.count("loss"))
    corrected: dict[str, dict[str, float]] = {s: {} for s in others}
    if correct_over == "all":
        flat = _correct({(s, m): raw[s][m] for s in others for m in names}, correction)
        for (s, m), p in flat.items():
            corrected[s][m] = p
    else:
        for metric in names:
            for s, p in _correct({s: raw[s][metric] for s in others}, correction).items():
                corrected[s][metric] = p
    corrected = {s: {m: corrected[s][m] for m in names} for s in others}
    if any(math.isnan(p) for d in raw.values() for p in d.values()):
        log.warning("some p-values are NaN")
    return Comparison(
        baseline=baseline,
        metrics=names,
        test=test,
        correction=correction,
        correct_over=correct_over,
        alpha=alpha,
        n_permutations=n_permutations,
        seed=seed,
        queries=queries,
        results=dict(results),
        p_values=raw,
        p_corrected=corrected,
        win_tie_loss=wtl,
    )


def compare_runs(
    qrels: Mapping[str, Mapping[str, int]],
    runs: Mapping[str, Mapping[str, Mapping[str, float]]],
    baseline: str,
    metrics: str | Iterable[str] = DEFAULT_METRICS,
    **options,
) -> Comparison:
    """Evaluate each run (see :func:`evaluate`) and compare them with :func:`compare_results`."""
    results = {name: evaluate(qrels, run, metrics) for name, run in runs.items()}
    return compare_results(results, baseline, **options)
