"""Fuse several runs into one with ranx.

Methods and the score normalisation each applies first (``norm="default"``):

* ``rrf``: reciprocal rank fusion, sum of 1 / (k + rank), ``k=60``; uses ranks only, no normalisation.
  Ranks follow :func:`retrdistill.evaluation.runs.ranked` (ties as trec_eval), so the result is deterministic.
* ``combsum``: sum of min-max normalised scores.
* ``combmnz``: combsum times the number of runs that returned the document.
* ``combmax``: maximum of min-max normalised scores.
* ``wsum``: weighted sum of min-max normalised scores; ``weights`` one per run.

A query missing from some runs is fused from the runs that have it (the others add nothing).
Pass ``norm=None`` (or another ranx normalisation: ``"max"``, ``"sum"``, ``"zmuv"``, ``"rank"``) to override.
Min-max maps a query whose documents all share one score to 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from retrdistill.errors import ConfigError
from retrdistill.evaluation.runs import Run, rank_scores

# our name -> (ranx method, default normalisation)
FUSION_METHODS: dict[str, tuple[str, str | None]] = {
    "rrf": ("rrf", None),
    "combsum": ("sum", "min-max"),
    "combmnz": ("mnz", "min-max"),
    "combmax": ("max", "min-max"),
    "wsum": ("wsum", "min-max"),
}
NORMALISATIONS = ("min-max", "max", "sum", "zmuv", "rank")


def fuse_runs(
    runs: Sequence[Mapping[str, Mapping[str, float]]],
    method: str = "rrf",
    *,
    norm: str | None = "default",
    k: int = 60,
    weights: Sequence[float] | None = None,
) -> Run:
    """Fuse ``runs`` (at least two) and return the fused run as plain dicts."""
    if method not in FUSION_METHODS:
        raise ConfigError(f"unknown fusion method {method!r}; accepted: {', '.join(FUSION_METHODS)}")
    if len(runs) < 2:
        raise ConfigError(f"fusion needs at least two runs, got {len(runs)}")
    ranx_method, default_norm = FUSION_METHODS[method]
    if norm == "default":
        norm = default_norm
    if norm is not None and norm not in NORMALISATIONS:
        raise ConfigError(f"unknown normalisation {norm!r}; accepted: {', '.join(NORMALISATIONS)} or None")
    params: dict = {}
    if method == "rrf":
        params["k"] = k
    if method == "wsum":
        if weights is None or len(weights) != len(runs):
            raise ConfigError(f"wsum needs one weight per run ({len(runs)}), got {weights!r}")
        params["weights"] = [float(w) for w in weights]
    elif weights is not None:
        raise ConfigError(f"weights apply to wsum only, not {method!r}")

    for i, run in enumerate(runs):
        if not any(run.values()):
            raise ConfigError(f"run {i} holds no results; nothing to fuse")
    import ranx  # deferred: numba start-up is slow

    queries = sorted({q for run in runs for q, docs in run.items() if docs})
    # ranx wants the same queries in every run: a run without a query contributes nothing to it
    prepared = [ranx.Run({q: _prepared(run.get(q, {}), method) for q in queries}) for run in runs]
    out = ranx.fuse(prepared, norm=norm, method=ranx_method, params=params)
    return {q: {d: float(s) for d, s in docs.items()} for q, docs in out.to_dict().items()}


def _prepared(docs: Mapping[str, float], method: str) -> dict[str, float]:
    # rrf reads ranks from ranx's (unstable) sort order; strictly decreasing scores pin it down
    return rank_scores(docs) if method == "rrf" else {d: float(s) for d, s in docs.items()}
