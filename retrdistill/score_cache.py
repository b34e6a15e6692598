"""On-disk teacher score cache: SQLite keyed on (teacher fingerprint, query id, query text hash, doc id).

The teacher fingerprint covers the model's weights, the settings that change its scores and the corpus (so
passage texts); the query text hash guards against a query id whose text changed. Each batch is committed in
one transaction, so a killed scoring run keeps every finished batch and a re-run scores only what is missing.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


class ScoreCache:
    def __init__(self, path: str | Path, teacher_fingerprint: str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.teacher = teacher_fingerprint
        self.db = sqlite3.connect(str(self.path))
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS scores (teacher TEXT, qid TEXT, qhash TEXT, docid TEXT, score REAL, "
            "PRIMARY KEY (teacher, qid, qhash, docid))"
        )
        self.db.commit()

    def get(self, qid: str, query: str, doc_ids: Iterable[str]) -> dict[str, float]:
        doc_ids = list(doc_ids)
        if not doc_ids:
            return {}
        marks = ",".join("?" * len(doc_ids))
        rows = self.db.execute(
            f"SELECT docid, score FROM scores WHERE teacher=? AND qid=? AND qhash=? AND docid IN ({marks})",
            (self.teacher, qid, text_hash(query), *doc_ids),
        )
        return dict(rows.fetchall())

    def put(self, rows: Iterable[tuple[str, str, str, float]]) -> None:
        """Insert (qid, query text, doc id, score) rows in one transaction."""
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?, ?)",
                [(self.teacher, q, text_hash(t), d, float(s)) for q, t, d, s in rows],
            )

    def close(self) -> None:
        self.db.close()


def score_through_cache(teacher, cache: ScoreCache, queries: dict[str, str],
                        groups: dict[str, list[str]]) -> tuple[dict[str, dict[str, float]], int]:
    """Every (query, doc) score of ``groups`` (query id -> doc ids), from ``cache`` where it holds them and from
    ``teacher.score_groups`` otherwise (then stored, one transaction; a teacher whose scores depend on the whole
    group re-scores every group with a missing pair whole). Returns the scores per query and how many
    pairs the teacher scored."""
    known = {q: cache.get(q, queries[q], docs) for q, docs in groups.items()}
    missing = {q: [d for d in dict.fromkeys(docs) if d not in known[q]] for q, docs in groups.items()}
    missing = {q: docs for q, docs in missing.items() if docs}
    if teacher.scores_whole_groups:  # a listwise score means something only within its whole group
        missing = {q: list(dict.fromkeys(groups[q])) for q in missing}
    if not missing:
        return known, 0
    fresh = teacher.score_groups({q: queries[q] for q in missing}, missing)
    rows = [(q, queries[q], d, float(s)) for q, docs in missing.items() for d, s in zip(docs, fresh[q])]
    cache.put(rows)
    for q, docs in missing.items():
        known[q].update(zip(docs, (float(s) for s in fresh[q])))
    return known, len(rows)


SCORES_FILE = "scores.sqlite"  # the score cache's file name under a cache folder


class CachedScorer:
    """Scores query groups through the score cache file ``path``, each teacher under its own fingerprint.

    A teacher that combines others (an ensemble: :meth:`retrdistill.parts.Teacher.members` is not empty) is
    scored through each member's own cache entries, recursively, and its members' scores are then combined per
    whole group; the combined scores are not cached (a per-query normalisation depends on the whole group), so
    an ensemble over members scored before rescores nothing. ``scored`` / ``from_cache`` count member pairs.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._caches: dict[int, tuple[object, ScoreCache]] = {}
        self.scored = 0
        self.from_cache = 0

    def _cache(self, teacher) -> ScoreCache:
        from retrdistill.artefacts import fingerprint_obj

        if id(teacher) not in self._caches:  # the teacher is held too, so its id is not reused
            self._caches[id(teacher)] = (teacher, ScoreCache(self.path, fingerprint_obj(teacher.fingerprint())))
        return self._caches[id(teacher)][1]

    def scores(self, teacher, queries: dict[str, str], groups: dict[str, list[str]]) -> dict[str, "np.ndarray"]:
        """One score per doc id of each group, in the group's order (float32)."""
        import numpy as np

        members = teacher.members()
        if members:
            return teacher.combine([self.scores(m, queries, groups) for m in members], groups)
        known, scored = score_through_cache(teacher, self._cache(teacher), queries, groups)
        self.scored += scored
        self.from_cache += sum(len(dict.fromkeys(docs)) for docs in groups.values()) - scored
        return {q: np.array([known[q][d] for d in docs], dtype=np.float32) for q, docs in groups.items()}

    def close(self) -> None:
        for _, cache in self._caches.values():
            cache.close()
        self._caches.clear()


def merge_caches(target: str | Path, sources: Iterable[str | Path]) -> int:
    """Copy every score held in ``sources`` (per-shard cache files, each written by one shard only) into the cache
    file ``target``, one transaction per source; scores ``target`` already holds are kept. Returns the rows added."""
    added = 0
    cache = ScoreCache(target, "")
    try:
        for source in sources:
            before = cache.db.total_changes
            cache.db.execute("ATTACH DATABASE ? AS shard", (str(source),))
            try:
                with cache.db:
                    cache.db.execute("INSERT OR IGNORE INTO scores SELECT teacher, qid, qhash, docid, score FROM shard.scores")
            finally:
                cache.db.execute("DETACH DATABASE shard")
            added += cache.db.total_changes - before
    finally:
        cache.close()
    return added
