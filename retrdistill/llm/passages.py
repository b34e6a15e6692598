"""Generated passages beside the corpus: ``passages.jsonl`` (:data:`retrdistill.kinds.EXTRA_PASSAGES`) in a
candidates or scores artefact, one ``{"_id", "text"}`` row each, and the overlay corpus that reads them.

A generated passage's id is ``gen-`` and the hash of its text (:func:`generated_id`), checked when read, so an id
always means one text: the teacher's score cache, keyed on doc ids, cannot serve a stale score for it, and the
overlay keeps the corpus's fingerprint. Generated passages are for training only. :class:`OverlayCorpus` finds
them by id (``row_index``, ``texts_at``, ``ids_at``: rows from ``len(corpus)`` on) while everything that reads
the *whole* corpus (``len``, ``iter_batches``, ``texts``, ``dataset``, ``fingerprint``) sees the corpus alone,
so no embedding cache, index or evaluation ever includes them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrdistill.artefacts import atomic_path
from retrdistill.data.row_lookup import RowMapping
from retrdistill.errors import DataError
from retrdistill.kinds import EXTRA_PASSAGES

PREFIX = "gen-"


def generated_id(text: str) -> str:
    return PREFIX + hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def write_passages(path: str | Path, passages: dict[str, str]) -> int:
    """Write ``id -> text`` rows atomically (ids as :func:`generated_id` makes them); returns how many."""
    with atomic_path(Path(path)) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for doc_id, text in passages.items():
            if doc_id != generated_id(text):
                raise ValueError(f"generated passage id {doc_id!r} is not generated_id(text)")
            fh.write(json.dumps({"_id": doc_id, "text": text}, ensure_ascii=False) + "\n")
    return len(passages)


def read_passages(path: str | Path) -> dict[str, str]:
    path = Path(path)
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            try:
                row = json.loads(line)
                doc_id, text = row["_id"], row["text"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DataError(path, lineno, f"expected a generated passage {{\"_id\", \"text\"}} ({exc})") from None
            if not isinstance(text, str) or doc_id != generated_id(text):
                raise DataError(path, lineno, f"generated passage id {doc_id!r} is not 'gen-' + the sha256 of its "
                                              f"text ({generated_id(str(text))!r}); an id must name one text")
            out[doc_id] = text
    return out


def passages_file(folder: str | Path) -> Path | None:
    """The generated passages of a candidates or scores artefact, None when it carries none."""
    path = Path(folder) / EXTRA_PASSAGES
    return path if path.is_file() else None


def with_generated(corpus: Any, folder: str | Path | None) -> Any:
    """``corpus`` overlaid with the generated passages of artefact ``folder``, or ``corpus`` itself when there
    are none; a generated id that is also a corpus id is a DataError."""
    path = passages_file(folder) if folder is not None else None
    if path is None:
        return corpus
    return OverlayCorpus(corpus, read_passages(path), path)


class OverlayCorpus:
    """A corpus plus generated passages found by id (see the module docstring); otherwise the corpus itself."""

    def __init__(self, corpus: Any, passages: dict[str, str], source: Path | None = None) -> None:
        self.base = corpus
        self.source = source
        self.generated_ids = list(passages)
        self.generated_texts = list(passages.values())
        self._rows: _OverlayRows | None = None
        clash = next((d for d in passages if corpus.row_index().get(d) is not None), None)
        if clash is not None:
            raise DataError(source or "generated passages", None, f"generated passage id {clash!r} is a corpus id")

    def __len__(self) -> int:
        return len(self.base)

    def __getattr__(self, name: str) -> Any:  # fingerprint, path, dataset, texts, iter_batches, hits, ...
        return getattr(self.base, name)

    def is_generated(self, row: int) -> bool:
        return row >= len(self.base)

    def row_index(self) -> "_OverlayRows":
        if self._rows is None:
            self._rows = _OverlayRows(self.base.row_index(), self.generated_ids, len(self.base))
        return self._rows

    def texts_at(self, rows: Sequence[int]) -> list[str]:
        return self._at(rows, self.base.texts_at, self.generated_texts)

    def ids_at(self, rows: Sequence[int]) -> list[str]:
        return self._at(rows, self.base.ids_at, self.generated_ids)

    def _at(self, rows: Sequence[int], from_base, generated: list[str]) -> list[str]:
        n = len(self.base)
        rows = [int(r) for r in rows]
        inside = [r for r in rows if r < n]
        found = dict(zip(inside, from_base(inside))) if inside else {}
        return [found[r] if r < n else generated[r - n] for r in rows]


class _OverlayRows(RowMapping):
    """doc id -> row over the corpus's lookup, generated ids after the corpus's rows."""

    def __init__(self, base, generated_ids: list[str], first: int) -> None:
        self.base = base
        self.extra = {d: first + i for i, d in enumerate(generated_ids)}

    def __len__(self) -> int:
        return len(self.base) + len(self.extra)

    def get(self, doc_id: str, default: int | None = None) -> int | None:
        row = self.extra.get(doc_id)
        return row if row is not None else self.base.get(doc_id, default)

    def __iter__(self) -> Iterator[str]:
        yield from self.base
        yield from self.extra

    def rows_of(self, doc_ids: Iterable[str]) -> np.ndarray:
        return np.fromiter((self[d] for d in doc_ids), dtype=np.int64)


def stored_or_encoded(store: np.ndarray, rows: Sequence[int], corpus: Any, encode) -> np.ndarray:
    """Embeddings of ``rows``: corpus rows read from ``store`` (the corpus's cached embeddings), generated rows
    (``>= len(store)``, in an :class:`OverlayCorpus`) encoded now with ``encode(texts) -> array``."""
    rows = np.asarray(rows, dtype=np.int64)
    outside = rows >= store.shape[0]
    if not outside.any():
        return store[rows]
    out = np.empty((len(rows), store.shape[1]), dtype=np.float32)
    if (~outside).any():
        out[~outside] = store[rows[~outside]]
    out[outside] = encode(corpus.texts_at(rows[outside].tolist()))
    return out
