"""A sharded index: the N index folders of one index step run as ``shard: I/N``, searched as one index.

``retrdistill merge`` of index shards (:mod:`retrdistill.stages.merge`) writes a self-contained folder:

* ``shards/I-of-N/``: shard I's files (hard links to the shard folder's files, copies where links fail), its
  manifest included, so each is still a finished index of its slice of the corpus;
* ``docids.txt``: the shards' doc ids concatenated (corpus row -> doc id, as the unsharded index has it);
* ``index.json``: what the shards share (indexer, options, model, corpus, encoding), the whole corpus's
  ``documents`` and ``shards``: each shard's folder and its corpus rows ``[start, stop)``.

:class:`retrdistill.Retriever` loads such a folder through :class:`ShardedIndexer`: every shard is opened as its
indexer opens it (FAISS: memory-mapped where faiss can map the index type, else read into memory; sparse:
posting arrays memory-mapped), i.e. all shards at once, not one at a time. A search asks every shard for its
top-k, shifts its rows by the shard's first corpus row and keeps the best k by (score descending, row
ascending): the rule each indexer's own search follows (:mod:`retrdistill.families.dense.faiss_index`,
:mod:`retrdistill.families.sparse.index`). Shard I's rows are the unsharded index's rows ``start..stop``, encoded in
the same calls (whole encoding blocks), so for the exact indexes (``faiss-flat``, ``sparse``) the merged top-k
has the unsharded index's ids, in its order, and its scores (sparse: merged on the float64 scores it ranks by;
dense: faiss's float32 inner products, equal up to the BLAS kernel's rounding where a block of rows sits at
another offset). Approximate indexes (IVF, HNSW) can be sharded too, each shard trained on its slice; their
results then differ from one unsharded approximate index, as any two approximate indexes do.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retrdistill.errors import ManifestError

log = logging.getLogger(__name__)
SHARDS_DIR = "shards"
ADDITIVE = ("documents", "postings", "index_bytes")  # counts of a merged index: the shards' sum


@dataclass
class ShardedIndex:
    """Each shard's loaded index and the corpus rows it holds."""

    parts: list[Any]
    starts: list[int]
    sizes: list[int]

    @property
    def num_docs(self) -> int:
        return sum(self.sizes)


class ShardedIndexer:
    """The registered indexer that built the shards, searching all of them as one index; anything else
    (loading the model, encoding queries, ``model_type``, ``exact_index``) is the wrapped indexer's own."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def load(self, folder: Path) -> ShardedIndex:
        folder = Path(folder)
        parts, starts, sizes = [], [], []
        for entry in read_shard_list(folder):
            parts.append(self.inner.load(folder / entry["folder"]))
            starts.append(int(entry["rows"][0]))
            sizes.append(int(entry["rows"][1]) - int(entry["rows"][0]))
        return ShardedIndex(parts, starts, sizes)

    def search(self, index: ShardedIndex, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The top ``k`` over every shard: ``(scores, corpus rows)``, as the unsharded index returns them."""
        k = min(k, index.num_docs)
        all_scores, all_rows = [], []
        for part, start in zip(index.parts, index.starts):
            scores, rows = self.inner.search_for_merge(part, queries, k)  # the scores the order is decided on
            all_scores.append(np.asarray(scores, dtype=np.float64))  # float32 -> float64 is exact
            all_rows.append(np.where(rows >= 0, rows + start, -1))
        scores, rows = np.concatenate(all_scores, axis=1), np.concatenate(all_rows, axis=1)
        # every shard returns min(k, its size) columns, which add up to at least k; a row of -1 keeps the score
        # its shard filled in, so a short list comes out as the unsharded index pads it
        order = np.lexsort((rows, -scores, rows < 0), axis=-1)[:, :k]
        return (np.take_along_axis(scores, order, axis=-1).astype(np.float32),
                np.take_along_axis(rows, order, axis=-1))

    def search_cost(self, index: ShardedIndex, queries) -> dict[str, float]:
        """The wrapped indexer's cost measures: per-query ones (FLOPs) added over the shards, others averaged
        by shard size (terms per passage)."""
        costs = [self.inner.search_cost(part, queries) for part in index.parts]
        if not costs or not costs[0]:
            return {}
        total = max(1, index.num_docs)
        return {key: float(sum(c[key] for c in costs)) if key.endswith("_per_query")
                else float(sum(c[key] * n for c, n in zip(costs, index.sizes)) / total)
                for key in costs[0]}

    def index_bytes(self, folder: Path) -> int:
        return int(sum(self.inner.index_bytes(Path(folder) / e["folder"]) for e in read_shard_list(folder)))


def read_shard_list(folder: Path) -> list[dict[str, Any]]:
    """The ``shards`` entries of a sharded index's ``index.json`` (ManifestError where a shard folder is gone)."""
    folder = Path(folder)
    info = json.loads((folder / "index.json").read_text(encoding="utf-8"))
    entries = info.get("shards") or []
    for entry in entries:
        if not (folder / entry["folder"]).is_dir():
            raise ManifestError(f"{folder}: shard folder {entry['folder']} is missing; the sharded index is "
                                f"incomplete, merge its shards again")
    return entries


# ------------------------------------------------------------------ writing (the merge step)
def merge_index_shards(dirs: list[Path], manifests: list, tmp: Path, out_dir: Path) -> dict[str, Any]:
    """Write the sharded index of the shard folders ``dirs`` (shard order, checked by the merge) into ``tmp``
    (to become ``out_dir``); returns the manifest counts. A gap or overlap in the shards' corpus rows is a
    ManifestError naming the shard."""
    from retrdistill.artefacts import atomic_path, write_json_atomic
    from retrdistill.indexers.references import portable, resolve_reference

    infos = [json.loads((d / "index.json").read_text(encoding="utf-8")) for d in dirs]
    _check_rows(dirs, infos)
    count = len(dirs)
    entries = []
    for i, (folder, manifest, info) in enumerate(zip(dirs, manifests, infos)):
        rel = f"{SHARDS_DIR}/{i}-of-{count}"
        for name in [*manifest.outputs, "manifest.json"]:
            _link(folder / name, tmp / rel / name)
        entries.append({"folder": rel, "rows": info["rows"]})
    with atomic_path(tmp / "docids.txt") as part, open(part, "wb") as out:
        for folder in dirs:
            with open(folder / "docids.txt", "rb") as fh:
                shutil.copyfileobj(fh, out, 1 << 20)
    merged = {k: v for k, v in infos[0].items() if k not in ("shard", "rows", "corpus_documents")}
    for ref in ("model", "corpus"):  # stored relative to shard 0's folder: made relative to the merged one
        merged[ref] = portable(resolve_reference(str(infos[0][ref]), dirs[0]), Path(out_dir))
    merged["documents"] = sum(int(info["documents"]) for info in infos)
    if "postings" in merged:
        merged["postings"] = sum(int(info["postings"]) for info in infos)
        merged["doc_terms"] = round(merged["postings"] / max(1, merged["documents"]), 3)
    merged["shards"] = entries
    write_json_atomic(tmp / "index.json", merged)
    counts = dict(manifests[0].counts)
    for key in ADDITIVE:
        if key in counts:
            counts[key] = sum(int(m.counts.get(key, 0)) for m in manifests)
    log.info("merged %d index shards: %d passages", count, merged["documents"])
    return counts


def _check_rows(dirs: list[Path], infos: list[dict[str, Any]]) -> None:
    expected = 0
    for folder, info in zip(dirs, infos):
        rows = info.get("rows")
        if not rows or int(rows[0]) != expected:
            raise ManifestError(f"{folder}: its corpus rows {rows} do not start where the shard before it ended "
                                f"({expected}); the shards were not cut from one corpus with one shard_size")
        expected = int(rows[1])
    total = int(infos[-1].get("corpus_documents", expected))
    if expected != total:
        raise ManifestError(f"{dirs[-1]}: the shards end at corpus row {expected}, the corpus has {total} passages")


def _link(source: Path, target: Path) -> None:
    """``target`` as a hard link to ``source`` (a copy across filesystems or where links are not allowed)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
