"""Ranking metrics over a run and qrels, computed with ranx.

Which queries count (the denominator of every mean):

* a query counts when the qrels give it at least one judgment with grade >= ``relevance_level`` (1);
  this is pytrec_eval / BEIR practice, and a query with nothing relevant cannot be scored;
* a counted query that the run lacks (or returns nothing for) scores 0 on every metric and is listed in
  ``EvalResult.missing_from_run`` (trec_eval ``-c``; plain pytrec_eval would skip it and average over fewer);
* qrels queries with judgments but none relevant are excluded and listed in ``no_relevant``;
* run queries absent from the qrels are ignored and listed in ``unjudged_in_run``.

Documents are ranked in :func:`retrdistill.evaluation.runs.ranked` order (ties as trec_eval), and
every metric equals pytrec_eval's: ``ndcg@k`` = ``ndcg_cut_k`` (linear gain = grade), ``recall@k`` =
``recall_k``, ``precision@k`` = ``P_k``, ``map`` = ``map``, ``map@k`` = ``map_cut_k``, ``mrr`` =
``recip_rank`` and ``mrr@k`` = ``recip_rank`` on the run cut to its top k.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from retrdistill.errors import ConfigError
from retrdistill.evaluation.runs import rank_scores

log = logging.getLogger(__name__)

# The accepted metric names, defined once. "@k" means a positive integer cut-off is required, "[@k]" optional.
ACCEPTED_METRICS: dict[str, str] = {
    "ndcg[@k]": "normalised DCG, gain = grade (Jarvelin & Kekalainen), as trec_eval ndcg_cut",
    "map[@k]": "mean average precision",
    "mrr[@k]": "reciprocal rank of the first relevant document",
    "recall@k": "relevant documents in the top k / all relevant documents",
    "precision@k": "relevant documents in the top k / k",
}
_FAMILIES = {name.split("@")[0].rstrip("["): name.endswith("[@k]") for name in ACCEPTED_METRICS}
_METRIC_RE = re.compile(r"^([a-z]+)(?:@([1-9][0-9]*))?$")

DEFAULT_METRICS = ("ndcg@10", "recall@100", "mrr@10", "map")


def validate_metrics(metrics: str | Iterable[str]) -> tuple[str, ...]:
    """Canonical (lower-case, de-duplicated, ordered) metric names; ConfigError naming the accepted ones."""
    if isinstance(metrics, str):
        metrics = (metrics,)
    out: list[str] = []
    for raw in metrics:
        name = str(raw).strip().lower()
        m = _METRIC_RE.match(name)
        family = m.group(1) if m else None
        if m is None or family not in _FAMILIES or (m.group(2) is None and not _FAMILIES[family]):
            accepted = ", ".join(ACCEPTED_METRICS)
            raise ConfigError(f"unknown metric {raw!r}; accepted: {accepted} (k a positive integer, e.g. ndcg@10)")
        if name not in out:
            out.append(name)
    if not out:
        raise ConfigError(f"no metrics given; accepted: {', '.join(ACCEPTED_METRICS)}")
    return tuple(out)


def _ranx_name(metric: str, relevance_level: int) -> str:
    return f"{metric}-l{relevance_level}"  # our names are ranx's; "-lN" sets its relevance level


@dataclass
class EvalResult:
    """Metric means and per-query values; see the module docstring for which queries count."""

    metrics: tuple[str, ...]
    mean: dict[str, float]
    per_query: dict[str, dict[str, float]]  # query id -> metric -> value, for every counted query
    n_queries: int
    missing_from_run: list[str] = field(default_factory=list)  # counted, scored 0
    no_relevant: list[str] = field(default_factory=list)  # in qrels, nothing relevant: excluded
    unjudged_in_run: list[str] = field(default_factory=list)  # in the run, not in qrels: ignored
    relevance_level: int = 1

    def scores(self, metric: str) -> dict[str, float]:
        """query id -> value of one metric."""
        return {q: vals[metric] for q, vals in self.per_query.items()}


def evaluate(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Mapping[str, float]],
    metrics: str | Iterable[str] = DEFAULT_METRICS,
    *,
    relevance_level: int = 1,
    threads: int = 0,
) -> EvalResult:
    """Score ``run`` against ``qrels`` with ranx. ``threads=0`` lets ranx (numba) use every core."""
    names = validate_metrics(metrics)
    if relevance_level < 1:
        raise ConfigError(f"relevance_level must be >= 1, not {relevance_level}")
    counted = sorted(q for q, docs in qrels.items() if any(g >= relevance_level for g in docs.values()))
    if not counted:
        raise ValueError(f"the qrels judge no query with a grade >= {relevance_level}; nothing to evaluate")
    no_relevant = sorted(set(qrels) - set(counted))
    unjudged = sorted(set(run) - set(qrels))
    scored = [q for q in counted if run.get(q)]
    missing = [q for q in counted if not run.get(q)]
    per_query = {q: {m: 0.0 for m in names} for q in counted}
    if scored:
        import ranx  # deferred: numba start-up is slow

        r_qrels = ranx.Qrels({q: {d: int(g) for d, g in qrels[q].items()} for q in scored})
        r_run = ranx.Run({q: rank_scores(run[q]) for q in scored})
        order = list(r_run.keys())
        if order != list(r_qrels.keys()):
            raise AssertionError("ranx query order of qrels and run differ")
        wanted = [_ranx_name(m, relevance_level) for m in names]
        # ranx 0.3.x fails on a one-metric list (it indexes its result by the bare metric name), so a lone
        # metric is asked for twice: the result is then always a dict keyed by the names given
        asked = wanted * 2 if len(wanted) == 1 else wanted
        out = ranx.evaluate(r_qrels, r_run, asked, return_mean=False, threads=threads, save_results_in_run=False)
        for metric, ranx_name in zip(names, wanted):
            for q, value in zip(order, out[ranx_name]):
                per_query[q][metric] = float(value)
    if missing:
        log.warning("%d judged queries have no results in the run; they score 0: %s", len(missing), missing[:5])
    if unjudged:
        log.info("%d run queries are not in the qrels and are ignored", len(unjudged))
    if no_relevant:
        log.info("%d qrels queries have no relevant judgment and are excluded", len(no_relevant))
    mean = {m: float(np.mean([per_query[q][m] for q in counted])) for m in names}
    return EvalResult(
        metrics=names,
        mean=mean,
        per_query=per_query,
        n_queries=len(counted),
        missing_from_run=missing,
        no_relevant=no_relevant,
        unjudged_in_run=unjudged,
        relevance_level=relevance_level,
    )
