"""Dataset checks to run before scoring. Each finding is counted and listed; nothing is dropped silently.

:func:`check_dataset` runs the checks that its arguments allow and returns one :class:`CheckReport`;
each finding is also logged as a warning. Scoring itself (see :mod:`retrdistill.evaluation.metrics`)
treats these cases the same way whether or not the checks ran; the checks only make them visible.
"""

from __future__ import annotations

import logging
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from retrdistill.evaluation.runs import RunFileStats, read_trec_run

log = logging.getLogger(__name__)
EXAMPLES = 10  # ids shown in summaries


@dataclass
class CheckReport:
    """Counts and ids of what the checks found. Lists are complete and sorted; ``None`` = check not run."""

    n_queries: int = 0  # the query set: ``queries`` if given, else the qrels' queries
    n_judged_pairs: int = 0
    queries_without_judgments: list[str] = field(default_factory=list)  # no judgment >= relevance_level
    missing_corpus_docs: list[tuple[str, str]] | None = None  # (query, doc) judged but absent from the corpus
    unknown_run_queries: list[str] | None = None  # run queries outside the query set
    run_duplicate_rows: int | None = None  # repeated (query, doc) rows in the run file
    run_duplicate_examples: list[tuple[str, str, int]] = field(default_factory=list)  # (query, doc, line)

    @property
    def ok(self) -> bool:
        return not (
            self.queries_without_judgments
            or self.missing_corpus_docs
            or self.unknown_run_queries
            or self.run_duplicate_rows
        )

    def counts(self) -> dict[str, int | None]:
        return {
            "queries": self.n_queries,
            "judged_pairs": self.n_judged_pairs,
            "queries_without_judgments": len(self.queries_without_judgments),
            "missing_corpus_docs": None if self.missing_corpus_docs is None else len(self.missing_corpus_docs),
            "unknown_run_queries": None if self.unknown_run_queries is None else len(self.unknown_run_queries),
            "run_duplicate_rows": self.run_duplicate_rows,
        }

    def summary(self) -> str:
        """One line per check: its count and a few examples."""
        lines = [f"{self.n_queries} queries, {self.n_judged_pairs} judged (query, doc) pairs"]
        lines.append(_line("queries without a relevant judgment", self.queries_without_judgments))
        if self.missing_corpus_docs is not None:
            lines.append(
                _line("judged docs missing from the corpus", [f"{q}/{d}" for q, d in self.missing_corpus_docs])
            )
        if self.unknown_run_queries is not None:
            lines.append(_line("run queries not in the query set", self.unknown_run_queries))
        if self.run_duplicate_rows is not None:
            ex = [f"{q}/{d} (line {n})" for q, d, n in self.run_duplicate_examples]
            lines.append(
                f"duplicate (query, doc) rows in the run file: {self.run_duplicate_rows}"
                + (f", e.g. {', '.join(ex)}" if ex else "")
            )
        return "\n".join(lines)


def _line(what: str, ids: list[str]) -> str:
    shown = ", ".join(ids[:EXAMPLES]) + (", ..." if len(ids) > EXAMPLES else "")
    return f"{what}: {len(ids)}" + (f" ({shown})" if ids else "")


def queries_without_judgments(
    qrels: Mapping[str, Mapping[str, int]], queries: Iterable[str] | None = None, relevance_level: int = 1
) -> list[str]:
    """Queries (``queries``, or the qrels' own) with no judgment of grade >= ``relevance_level``."""
    wanted = set(qrels) if queries is None else set(queries)
    return sorted(q for q in wanted if not any(g >= relevance_level for g in qrels.get(q, {}).values()))


def missing_corpus_docs(qrels: Mapping[str, Mapping[str, int]], corpus_ids: Container[str]) -> list[tuple[str, str]]:
    """(query, doc) pairs whose judged doc is not in ``corpus_ids`` (anything with ``in``)."""
    return sorted((q, d) for q, docs in qrels.items() for d in docs if d not in corpus_ids)


def unknown_run_queries(run: Mapping[str, object], known: Iterable[str]) -> list[str]:
    known = set(known)
    return sorted(q for q in run if q not in known)


def check_dataset(
    qrels: Mapping[str, Mapping[str, int]],
    *,
    queries: Iterable[str] | None = None,
    corpus_ids: Container[str] | None = None,
    run: Mapping[str, Mapping[str, float]] | None = None,
    run_path: str | Path | None = None,
    relevance_level: int = 1,
) -> CheckReport:
    """Run every check its arguments allow. ``run_path`` is read (duplicates merged) when ``run`` is not given."""
    query_set = sorted(set(qrels) if queries is None else set(queries))
    report = CheckReport(n_queries=len(query_set), n_judged_pairs=sum(len(d) for d in qrels.values()))
    report.queries_without_judgments = queries_without_judgments(qrels, query_set, relevance_level)
    if corpus_ids is not None:
        report.missing_corpus_docs = missing_corpus_docs(qrels, corpus_ids)
    if run_path is not None:
        stats = RunFileStats()
        from_file = read_trec_run(run_path, on_duplicate="keep-max", stats=stats)
        report.run_duplicate_rows = stats.duplicates
        report.run_duplicate_examples = list(stats.duplicate_examples)
        run = from_file if run is None else run
    if run is not None:
        report.unknown_run_queries = unknown_run_queries(run, query_set)
    for name, count in report.counts().items():
        if name not in ("queries", "judged_pairs") and count:
            log.warning("dataset check: %s = %d", name, count)
    return report
