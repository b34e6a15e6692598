"""Passage id -> corpus row without a dict of every id: a sorted table of 64-bit id hashes, memory-mapped.

A Python dict of 1M ids costs about 100 MB of anonymous memory and grows with the corpus; this table is 16
bytes a passage in a ``.npy`` file beside the corpus's Arrow cache, read through the page cache. A lookup hashes
the id (blake2b, 8 bytes), binary-searches the table and confirms the id in the Arrow column, so hash
collisions cannot return a wrong row. It reads like a read-only mapping: ``lookup[doc_id]``, ``doc_id in
lookup``, ``lookup.get(doc_id)``, ``len(lookup)``; ``rows_of(ids)`` looks many up at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from retrdistill.artefacts import atomic_path


def id_hash(doc_id: str) -> int:
    """The signed 64-bit blake2b hash of an id (also used for the corpus's duplicate-id check)."""
    return int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest(), "little", signed=True)


class RowMapping:
    """The read-only mapping methods of a ``doc id -> row`` lookup, from its ``get``."""

    def get(self, doc_id: str, default: int | None = None) -> int | None:
        raise NotImplementedError

    def __getitem__(self, doc_id: str) -> int:
        row = self.get(doc_id)
        if row is None:
            raise KeyError(doc_id)
        return row

    def __contains__(self, doc_id: object) -> bool:
        return isinstance(doc_id, str) and self.get(doc_id) is not None


class RowLookup(RowMapping):
    """Read-only ``doc id -> row`` over a corpus's Arrow ``_id`` column (see the module docstring)."""

    def __init__(self, table: np.ndarray, ids) -> None:
        self._hashes = table[:, 0]
        self._rows = table[:, 1]
        self._ids = ids  # the Arrow ChunkedArray of ids, memory-mapped

    @classmethod
    def open(cls, ids, cache_path: Path | None, batch: int = 65_536) -> "RowLookup":
        """The lookup for the Arrow column ``ids``, built once into ``cache_path`` (None: in memory only)."""
        if cache_path is not None and cache_path.is_file():
            return cls(np.load(cache_path, mmap_mode="r"), ids)
        n = len(ids)
        hashes = np.empty(n, dtype=np.int64)
        for start in range(0, n, batch):
            chunk = ids.slice(start, batch).to_pylist()
            hashes[start:start + len(chunk)] = [id_hash(d) for d in chunk]
        order = np.argsort(hashes, kind="stable")
        table = np.empty((n, 2), dtype=np.int64)
        table[:, 0] = hashes[order]
        table[:, 1] = order
        del hashes, order
        if cache_path is None:
            return cls(table, ids)
        with atomic_path(cache_path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, table)
        del table
        return cls(np.load(cache_path, mmap_mode="r"), ids)

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, doc_id: str, default: int | None = None) -> int | None:
        h = id_hash(doc_id)
        i = int(np.searchsorted(self._hashes, h, side="left"))
        while i < len(self._hashes) and self._hashes[i] == h:
            row = int(self._rows[i])
            if self._ids[row].as_py() == doc_id:
                return row
            i += 1
        return default

    def __iter__(self) -> Iterator[str]:
        for chunk in self._ids.chunks:
            yield from chunk.to_pylist()

    def rows_of(self, doc_ids: Iterable[str]) -> np.ndarray:
        """Rows of many ids (int64); a missing id raises KeyError naming it."""
        return np.fromiter((self[d] for d in doc_ids), dtype=np.int64)
