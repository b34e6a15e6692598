"""Searching a sharded FAISS flat index against the single index: time per query and equality of the results.

Synthetic unit vectors with exact duplicates (as duplicated passages give) stand in for corpus embeddings; the
corpus is cut at multiples of the encoding block (4096), as sharded index steps cut it, into 1, 2, 4 and 8
shards, searched through :class:`retrdistill.indexers.sharded.ShardedIndexer` (the code ``Retriever`` runs).
Writes ``benchmarks/results/sharded-index-search.json``.

    OMP_NUM_THREADS=1 python benchmarks/sharded_index_search.py --docs 100000 --queries 500 --k 100
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from retrdistill.families.dense.faiss_index import FlatIndexer
from retrdistill.indexers.sharded import ShardedIndex, ShardedIndexer
from retrdistill.shards import Shard

BLOCK = 4096


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "sharded-index-search.json"))
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.docs, args.dim)).astype(np.float32)
    dupes = rng.choice(args.docs, size=args.docs // 50, replace=False)  # 2% of rows copy another row
    vectors[dupes] = vectors[rng.choice(args.docs, size=len(dupes))]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.choice(args.docs, size=args.queries)] + 0.05 * rng.standard_normal(
        (args.queries, args.dim)).astype(np.float32)
    flat = FlatIndexer(FlatIndexer.Options(use_gpu="never"))

    single = flat.build(vectors)
    started = time.perf_counter()
    ref_scores, ref_rows = flat.search(single, queries, args.k)
    single_ms = 1000 * (time.perf_counter() - started) / args.queries
    rows = []
    for count in (1, 2, 4, 8):
        ranges = [Shard(i, count).rows(args.docs, BLOCK) for i in range(count)]
        index = ShardedIndex([flat.build(vectors[r.start:r.stop]) for r in ranges], [r.start for r in ranges],
                             [len(r) for r in ranges])
        started = time.perf_counter()
        scores, found = ShardedIndexer(flat).search(index, queries, args.k)
        ms = 1000 * (time.perf_counter() - started) / args.queries
        rows.append({"shards": count, "ms_per_query": round(ms, 3), "vs_single": round(ms / single_ms, 3),
                     "ids_identical": bool(np.array_equal(found, ref_rows)),
                     "scores_bitwise_equal": bool(np.array_equal(scores, ref_scores)),
                     "max_score_difference": float(np.abs(scores - ref_scores).max())})
        print(rows[-1])
    result = {"docs": args.docs, "dim": args.dim, "queries": args.queries, "k": args.k, "block": BLOCK,
              "duplicated_rows": int(len(dupes)), "single_ms_per_query": round(single_ms, 3), "sharded": rows,
              "threads": "OMP_NUM_THREADS as set by the caller"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
