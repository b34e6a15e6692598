"""Artefact kinds: what each step writes, where its parts lie in the folder, and how to read and write it.

Stages import the kind they read, never the stage that wrote it. A pipeline reference ``@id`` resolves to the
kind's main part of step ``id``'s folder; ``@id.FIELD`` to another part (``@student.untrained``). Every
manifest records the kind of its folder (``Manifest.kind``), and a step accepts only the kinds it declares.

================  =====================================================  ==============================
kind              files                                                   parts (``@id.FIELD``)
================  =====================================================  ==============================
queries           ``queries.jsonl`` + ``qrels.tsv`` (positives)           (folder)
candidates        ``candidates.jsonl`` (positives, mined negatives)       (folder)
scores            ``scores.jsonl`` (teacher score of every candidate)      (folder)
student           ``model/`` (trained), ``untrained/`` (when asked)        model, untrained
index             ``index.json`` + the indexer's files                     (folder)
eval              ``runs/``, ``results.json``, ``leaderboard.*``           (folder), leaderboard
texts             generated texts (queries, passages, translations)       (folder)
anserini-vectors  ``vectors/*.jsonl`` + ``anserini.json`` (Lucene impact) (folder)
teacher-choice    ``choice.json`` (signals, estimates, pick, weights)     (folder)
================  =====================================================  ==============================
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from retrdistill.artefacts import atomic_path, upstream
from retrdistill.errors import ConfigError, DataError


@dataclass(frozen=True)
class ArtefactKind:
    name: str
    summary: str
    parts: dict[str, str] = field(default_factory=lambda: {"": ""})  # @id.FIELD -> path inside the folder
    main: str = ""  # the part a bare @id means

    def resolve(self, folder: Path, part: str | None) -> Path:
        """The path that ``@id`` (``part`` None) or ``@id.part`` means inside this kind's ``folder``."""
        name = self.main if part is None else part
        if name not in self.parts:
            named = [p for p in self.parts if p]
            raise ConfigError(f"a {self.name!r} artefact has no part {part!r}; "
                              f"expected {', '.join(named) if named else 'a bare reference (no .part)'}")
        rel = self.parts[name]
        return folder / rel if rel else folder


KINDS: dict[str, ArtefactKind] = {k.name: k for k in [
    ArtefactKind("queries", "training queries and their positives"),
    ArtefactKind("candidates", "mined candidates per training query"),
    ArtefactKind("scores", "teacher scores of every candidate"),
    ArtefactKind("student", "a trained model (and its untrained start)",
                 {"model": "model", "untrained": "untrained"}, main="model"),
    ArtefactKind("index", "a searchable index of a corpus"),
    ArtefactKind("eval", "runs, per-query results and a leaderboard",
                 {"": "", "leaderboard": "leaderboard/leaderboard.json"}),
    ArtefactKind("texts", "generated texts (written queries, passages, translations)"),
    ArtefactKind("anserini-vectors", "a sparse index's passages as Anserini JsonVectorCollection files"),
    ArtefactKind("teacher-choice", "label-free estimates of candidate teachers, a pick or ensemble weights"),
]}


def kind(name: str) -> ArtefactKind:
    if name not in KINDS:
        raise ConfigError(f"unknown artefact kind {name!r}; expected one of: {', '.join(KINDS)}")
    return KINDS[name]


# ------------------------------------------------------------------ queries
@dataclass
class TrainingQueries:
    """What a query source yields and a ``queries`` artefact holds: query texts and their known positives."""

    queries: dict[str, str]  # query id -> text
    positives: dict[str, dict[str, int]]  # query id -> {doc id: grade}; grade >= 1 is a positive


def write_queries(folder: Path, train: TrainingQueries) -> None:
    with atomic_path(folder / "queries.jsonl") as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for qid, text in train.queries.items():
            fh.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    with atomic_path(folder / "qrels.tsv") as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for qid, docs in train.positives.items():
            for doc_id, grade in docs.items():
                fh.write(f"{qid}\t{doc_id}\t{grade}\n")


def read_queries(folder: str | Path) -> TrainingQueries:
    from retrdistill.data.beir import load_qrels, load_queries

    folder = Path(folder)
    queries, _ = load_queries(folder / "queries.jsonl")
    positives, _ = load_qrels(folder / "qrels.tsv", query_ids=queries)
    return TrainingQueries(queries, positives)


# ------------------------------------------------------------------ candidates
# Generated passages (e.g. LLM-written hard negatives) that a candidates artefact carries beside the corpus, one
# ``{"_id", "text"}`` row each, their ids unlike any corpus id. They are for training only: the score, select and
# train steps read them with the corpus and copy the file on; no index or evaluation corpus ever includes them.
EXTRA_PASSAGES = "passages.jsonl"


@dataclass
class CandidateGroup:
    """One training query's candidates. ``ranks``/``miner_scores``: per negative, its 1-based rank in the
    miner's list (known positives removed) and the miner's score; None where the writer did not record them."""

    qid: str
    query: str
    positives: list[str]
    negatives: list[str]
    ranks: list[int] | None = None
    miner_scores: list[float] | None = None


def candidate_row(group: CandidateGroup) -> str:
    row = {"qid": group.qid, "query": group.query, "positives": group.positives, "negatives": group.negatives}
    row.update(_mined(group))
    return json.dumps(row, ensure_ascii=False) + "\n"


def read_candidates(folder: str | Path) -> Iterator[CandidateGroup]:
    yield from _rows(Path(folder) / "candidates.jsonl", "a candidates row with qid, query, positives, negatives",
                     lambda r: CandidateGroup(r["qid"], r["query"], r["positives"], r["negatives"],
                                              *_read_mined(r, len(r["negatives"]))))


def _mined(group) -> dict:
    out = {}
    if group.ranks is not None:
        out["ranks"] = group.ranks
    if group.miner_scores is not None:
        out["miner_scores"] = group.miner_scores
    return out


def _read_mined(row: dict, negatives: int) -> tuple[list[int] | None, list[float] | None]:
    ranks, scores = row.get("ranks"), row.get("miner_scores")
    for name, values in (("ranks", ranks), ("miner_scores", scores)):
        if values is not None and len(values) != negatives:
            raise TypeError(f"{name} has {len(values)} values for {negatives} negatives")
    return ranks, scores


def count_rows(folder: str | Path, name: str) -> int:
    with open(Path(folder) / name, encoding="utf-8") as fh:
        return sum(1 for _ in fh)


# ------------------------------------------------------------------ scores
@dataclass
class ScoredGroup:
    """One query's candidates with the teacher's scores. ``ranks``/``miner_scores`` (per negative, in the order
    of ``docids[positives:]``) come from the candidates when their miner recorded them."""

    qid: str
    query: str
    docids: list[str]  # positives first, then negatives
    scores: list[float]
    positives: int
    ranks: list[int] | None = None
    miner_scores: list[float] | None = None


def scored_row(group: ScoredGroup) -> str:
    row = {"qid": group.qid, "query": group.query, "docids": group.docids, "scores": group.scores,
           "positives": group.positives}
    row.update(_mined(group))
    return json.dumps(row, ensure_ascii=False) + "\n"


def read_scores(folder: str | Path) -> Iterator[ScoredGroup]:
    yield from _rows(Path(folder) / "scores.jsonl", "a scores row with qid, query, docids, scores, positives",
                     lambda r: ScoredGroup(r["qid"], r["query"], r["docids"], r["scores"], r["positives"],
                                           *_read_mined(r, len(r["docids"]) - r["positives"])))


def write_rows(path: Path, rows: Iterable[str]) -> int:
    """Write JSONL rows atomically; returns how many."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(row)
            n += 1
    return n


def _rows(path: Path, expected: str, make) -> Iterator:
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            try:
                yield make(json.loads(line))
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DataError(path, lineno, f"expected {expected} ({exc})") from None


# ------------------------------------------------------------------ student
def student_model(folder: str | Path) -> Path:
    return Path(folder) / "model"


# ------------------------------------------------------------------ teacher-choice
CHOICE_FILE = "choice.json"


def read_choice(folder: str | Path) -> dict:
    """The ``choice.json`` of a finished ``teacher-choice`` artefact (signals, estimates, pick or weights)."""
    upstream(folder, "teacher-choice")
    return json.loads((Path(folder) / CHOICE_FILE).read_text(encoding="utf-8"))
