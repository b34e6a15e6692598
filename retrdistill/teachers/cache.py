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
