"""Label-free validation metrics (registered under kind ``validation_metric``) and the view they read.

Both metrics read the held-out scored groups of a train step: each has a query, its candidates (the
pseudo-positives first: for inverse-cloze or LLM-written queries, the passage the query was made from) and
the teacher's score of every candidate. Neither reads a relevance judgment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from retrdistill.kinds import ScoredGroup
from retrdistill.parts import ValidationMetric

CORRELATIONS = ("spearman", "kendall")


@dataclass
class ValidationView:
    """What a validation metric reads: the held-out ``groups``, the student's embeddings of their queries (row
    i = group i) and of passages, and exact search over the whole corpus
    through the student's ``family``.

    ``passages``: embeddings of corpus rows; ``passage_row``: corpus row -> row of ``passages`` (None: the row
    numbers are the same, ``passages`` is the whole corpus in corpus order). ``doc_row``: doc id -> corpus row.
    ``corpus_ids``: corpus row -> doc id, for the rows searched. ``searched_rows``: where ``passages`` holds a
    searchable part of the corpus (a fixed sample plus the held-out candidates), the corpus row of each of its
    rows in order; searches then run over that part. ``teacher_top``: per group, the doc ids of the teacher's own
    top passages of the corpus, best first (only when a metric reads them; the searched part always holds them).
    """

    groups: list[ScoredGroup]
    queries: np.ndarray
    passages: np.ndarray
    doc_row: Any  # Mapping[str, int]
    passage_row: dict[int, int] | None = None
    corpus_ids: Any = None  # Callable[[list[int]], list[str]]
    searched_rows: np.ndarray | None = None
    teacher_top: list[list[str]] | None = None
    family: Any = None  # the student's retrdistill.parts.Family (None: dense), which scores and searches encodings
    _ranked: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    def candidate_scores(self, i: int) -> np.ndarray:
        """The student's scores (inner products) of group ``i``'s candidates, in the group's order."""
        rows = [int(self.doc_row[d]) for d in self.groups[i].docids]
        if self.passage_row is not None:
            rows = [self.passage_row[r] for r in rows]
        return self._family().scores(self.queries[i:i + 1], self.passages[rows])[0]

    def search(self, k: int) -> np.ndarray:
        """Corpus rows of the top ``k`` per query over the whole corpus (``passage_row`` None) or over the
        searched part (``searched_rows``), best first, exact; -1 where fewer than ``k`` passages are searched."""
        if self.passage_row is not None and self.searched_rows is None:
            raise ValueError("a corpus search needs the whole corpus, or a searched part of it, encoded")
        if k not in self._ranked:
            scores, rows = self._family().top_k(self.queries, self.passages, k)
            if self.searched_rows is not None:  # rows of ``passages`` -> corpus rows
                rows = np.where(rows >= 0, np.asarray(self.searched_rows)[np.maximum(rows, 0)], -1)
            self._ranked[k] = (scores, rows)
        return self._ranked[k][1]

    def _family(self) -> Any:
        if self.family is None:
            from retrdistill import families

            self.family = families.get("dense")
        return self.family


def reciprocal_rank(ranked: list[str], positives: set[str], k: int) -> float:
    """1 / rank of the first of ``positives`` in the top ``k`` of ``ranked``; 0 if none is there."""
    for rank, doc in enumerate(ranked[:k], start=1):
        if doc in positives:
            return 1.0 / rank
    return 0.0


def recall(ranked: list[str], positives: set[str], k: int) -> float:
    """Share of ``positives`` in the top ``k`` of ``ranked``."""
    return len(positives & set(ranked[:k])) / len(positives)


def minmax_gains(teacher: np.ndarray) -> np.ndarray | None:
    """Per-query gains from teacher scores: ``(s - min) / (max - min)``, so the teacher's favourite gains 1 and
    its least favoured 0; None when every score is equal (no preference to agree with)."""
    teacher = np.asarray(teacher, dtype=np.float64)
    span = float(teacher.max() - teacher.min())
    if span <= 0:
        return None
    return (teacher - teacher.min()) / span


def ndcg(order: np.ndarray, gains: np.ndarray, k: int) -> float:
    """nDCG@k of the candidates listed in ``order`` (indices, best first) with graded ``gains``: linear gains,
    discount ``1 / log2(rank + 1)``, normalised by the DCG of the gains in decreasing order."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    top = np.asarray(gains)[np.asarray(order)[:k]]
    ideal = np.sort(np.asarray(gains))[::-1][:k]
    best = float(ideal @ discounts[: len(ideal)])
    return float(top @ discounts[: len(top)]) / best if best > 0 else 0.0


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``values`` (ascending), tied values sharing the mean of their ranks."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rho (the Pearson correlation of average ranks); None if either side is constant."""
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb) / denom if denom > 0 else None


def kendall(a: np.ndarray, b: np.ndarray) -> float | None:
    """Kendall's tau-b (ties corrected) over every pair; None if either side is constant."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    i, j = np.triu_indices(len(a), k=1)
    sa, sb = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    untied_a, untied_b = float(np.count_nonzero(sa)), float(np.count_nonzero(sb))
    if untied_a == 0 or untied_b == 0:
        return None
    return float((sa * sb).sum()) / math.sqrt(untied_a * untied_b)


class PseudoPositive(ValidationMetric):
    """Where the student ranks each held-out query's pseudo-positive in the WHOLE corpus.

    The pseudo-positives are the group's first ``positives`` doc ids (the passage an inverse-cloze or LLM query
    was written from). ``pseudo-mrr@{mrr_k}``: mean of 1 / rank of the first pseudo-positive in the student's
    exact top ``mrr_k`` (0 if absent); ``pseudo-recall@{recall_k}``: mean share of the pseudo-positives in its
    top ``recall_k``. Groups without a positive are left out of both means.
    """

    @dataclass
    class Options:
        mrr_k: int = field(default=10, metadata={"min": 1})
        recall_k: int = field(default=100, metadata={"min": 1})

        def __post_init__(self) -> None:
            if self.mrr_k < 1 or self.recall_k < 1:
                raise ValueError("mrr_k and recall_k must be positive")

    def names(self) -> list[str]:
        return [f"pseudo-mrr@{self.options.mrr_k}", f"pseudo-recall@{self.options.recall_k}"]

    def search_depth(self) -> int:
        return max(self.options.mrr_k, self.options.recall_k)

    def compute(self, view: ValidationView) -> dict[str, float]:
        rows = view.search(self.search_depth())
        rr, rec = [], []
        for i, group in enumerate(view.groups):
            if group.positives < 1:
                continue
            positives = set(group.docids[:group.positives])
            ranked = view.corpus_ids([int(r) for r in rows[i] if r >= 0])
            rr.append(reciprocal_rank(ranked, positives, self.options.mrr_k))
            rec.append(recall(ranked, positives, self.options.recall_k))
        mrr_name, recall_name = self.names()
        return {mrr_name: _mean(rr), recall_name: _mean(rec)}


class TeacherAgreement(ValidationMetric):
    """How closely the student's ranking of each held-out group's candidates follows the teacher's scores.

    Per query, over the group's candidates (pseudo-positives and mined negatives):

    * ``teacher-ndcg@{k}``: nDCG@k of the student's order (by its inner product, ties in the group's order)
      with graded pseudo-relevance from the teacher: each candidate's gain is its teacher score min-max
      normalised within the query, ``(s - min) / (max - min)`` (the teacher's favourite gains 1, its least
      favoured 0), used linearly (no ``2^g - 1``), discount ``1 / log2(rank + 1)``, normalised by the teacher's
      own order;
    * ``teacher-{correlation}``: Spearman's rho of average ranks, or Kendall's tau-b, between the student's and
      the teacher's scores.

    Both are averaged over the queries; a query whose teacher scores (or, for the correlation, the student's)
    are all equal is left out.
    """

    @dataclass
    class Options:
        k: int = field(default=10, metadata={"min": 1})
        correlation: str = "spearman"

        def __post_init__(self) -> None:
            if self.k < 1:
                raise ValueError("k must be positive")
            if self.correlation not in CORRELATIONS:
                raise ValueError(f"correlation must be one of {', '.join(CORRELATIONS)}, got {self.correlation!r}")

    example_variants: ClassVar[dict[str, Any]] = {"correlation": "kendall"}

    def names(self) -> list[str]:
        return [f"teacher-ndcg@{self.options.k}", f"teacher-{self.options.correlation}"]

    def compute(self, view: ValidationView) -> dict[str, float]:
        correlate = spearman if self.options.correlation == "spearman" else kendall
        gains_ndcg, corr = [], []
        for i, group in enumerate(view.groups):
            teacher = np.asarray(group.scores, dtype=np.float64)
            student = view.candidate_scores(i).astype(np.float64)
            gains = minmax_gains(teacher)
            if gains is None:
                continue
            order = np.argsort(-student, kind="stable")
            gains_ndcg.append(ndcg(order, gains, self.options.k))
            value = correlate(student, teacher)
            if value is not None:
                corr.append(value)
        ndcg_name, corr_name = self.names()
        return {ndcg_name: _mean(gains_ndcg), corr_name: _mean(corr)}


class TeacherRetrieval(ValidationMetric):
    """How much of the teacher's own top ``k`` of the WHOLE corpus the student retrieves in its top ``k``.

    ``teacher-overlap@{k}``: per held-out query, the share of the teacher's top ``k`` passages (its ``retrieve``
    over the corpus, computed once before training) found in the student's exact top ``k`` (over the same
    searched part, which always holds them), averaged over the queries. Unlike ``teacher-agreement`` it sees
    what the student brings up from outside the mined candidates: a student that learns to order its groups
    while its ranking of the rest of the corpus drifts scores lower here. No judgment is read.
    """

    @dataclass
    class Options:
        k: int = field(default=10, metadata={"min": 1})

        def __post_init__(self) -> None:
            if self.k < 1:
                raise ValueError("k must be positive")

    def names(self) -> list[str]:
        return [f"teacher-overlap@{self.options.k}"]

    def search_depth(self) -> int:
        return self.options.k

    def teacher_depth(self) -> int:
        return self.options.k

    def compute(self, view: ValidationView) -> dict[str, float]:
        if view.teacher_top is None:
            raise ValueError("teacher-overlap needs the teacher's ranking of the corpus (teacher_top)")
        k = self.options.k
        rows = view.search(k)
        shares = []
        for i, top in enumerate(view.teacher_top):
            if not top:
                continue
            ranked = set(view.corpus_ids([int(r) for r in rows[i] if r >= 0]))
            shares.append(len(ranked & set(top[:k])) / min(k, len(top)))
        return {self.names()[0]: _mean(shares)}


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0
