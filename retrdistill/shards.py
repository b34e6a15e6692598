"""Shards: one stage split into N pieces that any scheduler can run (a Slurm array, Kubernetes jobs, Ray tasks).

Shard ``I/N`` (0-based ``I``) of a row-parallel stage takes a contiguous range of the stage's input rows (the
candidate groups of a score step, the training queries of a mine step, the passages of an index step): with the
rows cut into blocks of the stage's batch (``batch_queries``; for an index, the indexer's encoding block,
``shard_size`` passages), blocks ``[B*I//N, B*(I+1)//N)`` of the ``B`` blocks. Contiguous ranges rather
than a hash of the id: the shards are balanced to one block, each reads only its slice, and the merge is a
concatenation in shard order, streamed, with no sort and no memory that grows with the data. Whole batches:
every model call of a shard gets exactly the rows it gets in the unsharded run (a batched model's floats depend
on the batch's padding in the last bits), so the merge is byte-identical to the unsharded output. The split
depends only on the input, ``N`` and the batch, never on the machine.

A shard writes the stage's usual artefact (its manifest is the completion marker) with ``shard: I/N`` in the
config; :mod:`retrdistill.stages.merge` combines shards ``0..N-1`` once every one is finished and they share
config and inputs.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from retrdistill.errors import ConfigError

T = TypeVar("T")
_FORM = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")
# the config key under which a shard's step records what its rows depend on (batch sizes, corpus rows): keyed for
# the shard, left out of the merged (unsharded) artefact's key
SHARD_LAYOUT = "shard_layout"
SHARD_HELP = ("Run only shard I/N of the input rows (0-based I, contiguous ranges), e.g. 0/4; merge the N shard "
              "folders with `retrdistill merge` (empty: the whole input).")


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def slug(self) -> str:
        """The shard as a file or step-id suffix: ``shard-I-of-N``."""
        return f"shard-{self.index}-of-{self.count}"

    def rows(self, total: int, unit: int = 1) -> range:
        """The input rows this shard takes out of ``total``, split in whole blocks of ``unit`` rows."""
        blocks = -(-total // max(unit, 1))
        start, stop = blocks * self.index // self.count, blocks * (self.index + 1) // self.count
        return range(min(start * unit, total), min(stop * unit, total))


def parse_shard(text: str | None) -> Shard | None:
    """``"I/N"`` as a :class:`Shard` (None for an empty value); ConfigError naming the expected form otherwise."""
    if text is None or not str(text).strip():
        return None
    m = _FORM.fullmatch(str(text))
    if not m:
        raise ConfigError(f"shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/4")
    index, count = int(m.group(1)), int(m.group(2))
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/4 (I is 0-based)")
    return Shard(index, count)


def shard_rows(shard: Shard | None, total: int, unit: int = 1) -> range:
    """The rows a run takes: all of them without a shard."""
    return range(total) if shard is None else shard.rows(total, unit)


def take_rows(rows: Iterable[T], wanted: range) -> Iterator[T]:
    """The items of ``rows`` (a stream) at the positions in ``wanted`` (a contiguous range)."""
    return itertools.islice(rows, wanted.start, wanted.stop)


def corpus_slice(corpus, rows: range):
    """The passages at ``rows`` (contiguous) of ``corpus`` as a corpus of their own: a zero-copy view of the same
    memory-mapped Arrow table, fingerprinted as that slice (so encoding caches keep the slice apart from the
    whole), row 0 being ``rows.start`` of the whole."""
    import dataclasses

    from retrdistill.artefacts import fingerprint_obj

    if rows.step != 1 or not 0 <= rows.start <= rows.stop <= len(corpus):
        raise ValueError(f"corpus_slice: {rows} is not a contiguous range of the corpus's {len(corpus)} rows")
    if rows.start == 0 and rows.stop == len(corpus):
        return corpus
    fingerprint = fingerprint_obj({"corpus": corpus.fingerprint, "rows": [rows.start, rows.stop]})
    return dataclasses.replace(corpus, fingerprint=fingerprint, dataset=corpus.dataset.select(rows), _rows=None)


def shard_file(path: str | Path, shard: Shard | None) -> Path:
    """A per-shard sibling of a shared file (``scores.sqlite`` -> ``scores.shard-1-of-4.sqlite``), so that no two
    shards ever write one file (SQLite locking is not safe on shared filesystems); ``path`` itself without one."""
    path = Path(path)
    if shard is None:
        return path
    return path.with_name(f"{path.stem}.{shard.slug}{path.suffix}")
