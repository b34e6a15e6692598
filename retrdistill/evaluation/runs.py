"""Runs and qrels as plain dicts, and the TREC text formats they are exchanged in.

A run maps query id -> doc id -> score; qrels map query id -> doc id -> graded judgment.

Ranking order, used everywhere in this package (writing, evaluating, fusing): score descending, ties
broken by doc id descending. That is trec_eval's own order (it ignores the rank column and re-sorts),
so a run file written here is ranked identically by trec_eval, pytrec_eval and :func:`evaluate`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from retrdistill.artefacts import atomic_path
from retrdistill.errors import DataError

log = logging.getLogger(__name__)

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]

OnDuplicate = Literal["error", "keep-max"]
_RUN_COLUMNS = "`query_id Q0 doc_id rank score tag`"


@dataclass
class RunFileStats:
    """What :func:`read_trec_run` saw; pass one as ``stats=`` to have it filled in."""

    lines: int = 0  # non-blank lines read
    rows: int = 0  # (query, doc) pairs kept
    queries: int = 0
    duplicates: int = 0  # rows whose (query, doc) pair had been seen before in the file
    duplicate_examples: tuple[tuple[str, str, int], ...] = ()  # up to 5 (query, doc, line)
    tags: tuple[str, ...] = ()


def ranked(docs: Mapping[str, float]) -> list[tuple[str, float]]:
    """``(doc_id, score)`` pairs in ranking order: score descending, then doc id descending (as trec_eval)."""
    return sorted(docs.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)


def rank_scores(docs: Mapping[str, float]) -> dict[str, float]:
    """Replace scores by strictly decreasing ones (n, n-1, ..., 1) that keep :func:`ranked` order.

    Libraries that sort with an unstable sort (ranx) then rank tied documents the way trec_eval does.
    """
    order = ranked(docs)
    n = len(order)
    return {doc: float(n - i) for i, (doc, _) in enumerate(order)}


def truncate(run: Mapping[str, Mapping[str, float]], depth: int) -> Run:
    """The top ``depth`` documents of each query, in ranking order."""
    return {q: dict(ranked(docs)[:depth]) for q, docs in run.items()}


def _check_id(path: Path, kind: str, value: str) -> None:
    if not value or any(c.isspace() for c in value):
        raise DataError(
            path, None, f"{kind} {value!r} is empty or contains whitespace; TREC files are whitespace separated"
        )


def write_trec_run(path: str | Path, run: Mapping[str, Mapping[str, float]], tag: str = "retrdistill") -> int:
    """Write ``run`` atomically as a 6-column TREC run (``qid Q0 docid rank score tag``); returns rows written.

    Queries are written in sorted order; within a query ranks start at 1 in :func:`ranked` order.
    Scores are written with ``repr`` so they read back bit-identical.
    """
    path = Path(path)
    _check_id(path, "tag", tag)
    lines: list[str] = []
    for qid in sorted(run):
        _check_id(path, "query id", qid)
        for rank, (doc, score) in enumerate(ranked(run[qid]), start=1):
            _check_id(path, "doc id", doc)
            score = float(score)
            if not math.isfinite(score):
                raise DataError(path, None, f"query {qid!r}, doc {doc!r}: score {score} is not a finite number")
            lines.append(f"{qid} Q0 {doc} {rank} {score!r} {tag}\n")
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.writelines(lines)
    log.info("wrote %d rows for %d queries to %s", len(lines), len(run), path)
    return len(lines)


def read_trec_run(
    path: str | Path,
    *,
    on_duplicate: OnDuplicate = "error",
    stats: RunFileStats | None = None,
) -> Run:
    """Read a 6-column TREC run (trec_eval, Anserini, pyserini): ``qid Q0 docid rank score tag``.

    Columns are separated by any whitespace; blank lines are skipped; the second column and the rank are
    not used for ranking (scores are, as in trec_eval) but the rank must be an integer and the score a
    finite number. Any other line raises :class:`DataError` naming the file, the line and what was expected.

    A (query, doc) pair appearing twice raises, unless ``on_duplicate="keep-max"``: then the highest score
    is kept, the count is logged as a warning and recorded in ``stats.duplicates``.
    """
    if on_duplicate not in ("error", "keep-max"):
        raise ValueError(f"on_duplicate must be 'error' or 'keep-max', not {on_duplicate!r}")
    path = Path(path)
    run: Run = {}
    first_seen: dict[tuple[str, str], int] = {}
    tags: set[str] = set()
    n_lines = n_dup = 0
    examples: list[tuple[str, str, int]] = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(path, lineno, f"not UTF-8 text ({exc.reason})") from exc
            fields = line.split()
            if not fields:
                continue
            n_lines += 1
            if len(fields) != 6:
                raise DataError(
                    path, lineno, f"expected 6 whitespace-separated columns {_RUN_COLUMNS}, found {len(fields)}"
                )
            qid, _, doc, rank_text, score_text, tag = fields
            try:
                int(rank_text)
            except ValueError:
                raise DataError(path, lineno, f"rank (column 4) must be an integer, found {rank_text!r}") from None
            try:
                score = float(score_text)
            except ValueError:
                raise DataError(path, lineno, f"score (column 5) must be a number, found {score_text!r}") from None
            if not math.isfinite(score):
                raise DataError(path, lineno, f"score (column 5) must be finite, found {score_text!r}")
            tags.add(tag)
            docs = run.setdefault(qid, {})
            if doc in docs:
                if on_duplicate == "error":
                    raise DataError(
                        path,
                        lineno,
                        f"query {qid!r}, doc {doc!r} already appeared on line {first_seen[(qid, doc)]}; "
                        "pass on_duplicate='keep-max' to keep the highest score",
                    )
                n_dup += 1
                if len(examples) < 5:
                    examples.append((qid, doc, lineno))
                docs[doc] = max(docs[doc], score)
            else:
                docs[doc] = score
                first_seen[(qid, doc)] = lineno
    if n_dup:
        log.warning("%s: %d duplicate (query, doc) rows merged, highest score kept", path, n_dup)
    if not run:
        log.warning("%s: no rows", path)
    if stats is not None:
        stats.lines = n_lines
        stats.rows = sum(len(d) for d in run.values())
        stats.queries = len(run)
        stats.duplicates = n_dup
        stats.duplicate_examples = tuple(examples)
        stats.tags = tuple(sorted(tags))
    return run


def read_qrels(path: str | Path) -> Qrels:
    """Read qrels: TREC (``qid iter docid grade``) or BEIR TSV (``qid docid grade``, optional header line).

    Whitespace separated. Grades must be integers. A pair judged twice with different grades raises.
    """
    path = Path(path)
    qrels: Qrels = {}
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                fields = raw.decode("utf-8").split()
            except UnicodeDecodeError as exc:
                raise DataError(path, lineno, f"not UTF-8 text ({exc.reason})") from exc
            if not fields:
                continue
            if len(fields) == 4:
                qid, _, doc, grade_text = fields
            elif len(fields) == 3:
                qid, doc, grade_text = fields
            else:
                raise DataError(
                    path,
                    lineno,
                    f"expected `query_id doc_id grade` (3 columns) or `query_id 0 doc_id grade` (4), "
                    f"found {len(fields)} columns",
                )
            try:
                grade = int(grade_text)
            except ValueError:
                if lineno == 1 and len(fields) == 3:  # BEIR header, e.g. `query-id corpus-id score`
                    continue
                raise DataError(path, lineno, f"grade must be an integer, found {grade_text!r}") from None
            docs = qrels.setdefault(qid, {})
            if doc in docs and docs[doc] != grade:
                raise DataError(path, lineno, f"query {qid!r}, doc {doc!r} judged again with another grade")
            docs[doc] = grade
    return qrels
