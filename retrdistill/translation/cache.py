"""On-disk translation cache: SQLite keyed on (translator fingerprint, source text hash).

The translator fingerprint covers the language pair, the model by content and every setting that changes the
output, so two translators never share an entry. :func:`translate_cached` translates only the texts the cache
lacks, each distinct text once, in batches committed one transaction each: a killed run keeps every finished
batch, and its re-run translates only what is missing. ``counts`` say how many came from the cache.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class TranslationCache:
    def __init__(self, path: str | Path, translator_fingerprint: str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.translator = translator_fingerprint
        self.db = sqlite3.connect(str(self.path), timeout=60)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS translations (translator TEXT, source_hash TEXT, "
                        "translation TEXT, PRIMARY KEY (translator, source_hash))")
        self.db.commit()

    def get_many(self, texts: Iterable[str]) -> dict[str, str]:
        """source text -> translation, for the texts the cache holds."""
        by_hash = {text_hash(t): t for t in texts}
        found: dict[str, str] = {}
        hashes = list(by_hash)
        for start in range(0, len(hashes), 500):
            chunk = hashes[start:start + 500]
            rows = self.db.execute(
                f"SELECT source_hash, translation FROM translations WHERE translator=? AND source_hash IN "
                f"({','.join('?' * len(chunk))})", (self.translator, *chunk))
            found.update({by_hash[h]: out for h, out in rows.fetchall()})
        return found

    def put(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Store (source text, translation) pairs in one transaction."""
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO translations VALUES (?, ?, ?)",
                                [(self.translator, text_hash(s), t) for s, t in pairs])

    def __len__(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM translations WHERE translator=?",
                                   (self.translator,)).fetchone()[0])

    def close(self) -> None:
        self.db.close()


@dataclass
class Translated:
    """What :func:`translate_cached` returns: source text -> translation for every input, and the counts
    (``texts`` distinct, ``translated`` now, ``from_cache``) and ``seconds`` spent translating."""

    texts: dict[str, str]
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def translate_cached(translator, cache: TranslationCache, texts: Iterable[str], *, batch_size: int = 64,
                     on_batch: Callable[[int], None] | None = None) -> Translated:
    """Every distinct text of ``texts`` translated by ``translator`` (a :class:`retrdistill.parts.Translator`),
    reading and filling ``cache``; ``on_batch(n)`` after each batch of ``n`` (progress, tests)."""
    distinct = list(dict.fromkeys(texts))
    known = cache.get_many(distinct)
    missing = [t for t in distinct if t not in known]
    if on_batch is not None and known:
        on_batch(len(known))
    started = time.perf_counter()
    for start in range(0, len(missing), batch_size):
        batch = missing[start:start + batch_size]
        out = translator.translate(batch)
        if len(out) != len(batch):
            raise RuntimeError(f"translator returned {len(out)} texts for {len(batch)}")
        cache.put(zip(batch, out))
        known.update(zip(batch, out))
        if on_batch is not None:
            on_batch(len(batch))
    seconds = time.perf_counter() - started
    if missing:
        log.info("translated %d texts in %.1fs (%d from the cache)", len(missing), seconds, len(distinct) - len(missing))
    return Translated({t: known[t] for t in distinct},
                      {"texts": len(distinct), "translated": len(missing), "from_cache": len(distinct) - len(missing)},
                      seconds)
