"""Anserini export and Lucene impact search against the embedded sparse index, on the sample.

    nice -n 10 python benchmarks/anserini_impact.py            # ~4 min on 2 shared cores (most of it encoding)

The sample (``data/msmarco-dl-5k``: 5,000 passages, 50 test queries with qrels) is encoded by tiny-bert-mlm as
SPLADE (passages cut to 32 tokens) into a sparse index (``indexer: sparse``). Then:

* the index is exported (``export_anserini``, factor 100): seconds, peak RSS, bytes written;
* the ``lucene-impact`` system indexes it with Anserini (``-impact -pretokenized``) and searches the test
  queries at query factors 100 and 10; its top-10 is compared, rows, order and scores, with the embedded
  index searched on the same quantised weights (ties by passage row on both sides);
* the eval stage puts the embedded sparse index (float weights) and both Lucene rows on one leaderboard
  (nDCG@10, ms/query with one JVM start, index bytes, FLOPs/query).

The JSON goes atomically to ``benchmarks/results/anserini-impact.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

MODEL = "offline:tiny-bert-mlm"
SEQ = 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collection", type=Path, default=ROOT / "data" / "msmarco-dl-5k")
    parser.add_argument("--work", type=Path, default=Path("/tmp/retrdistill-anserini-bench"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "anserini-impact.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from test_anserini_export import _embedded_quantised

    from retrdistill import registry
    from retrdistill.artefacts import write_json_atomic
    from retrdistill.data.beir import open_collection
    from retrdistill.evaluation.leaderboard import load_leaderboard
    from retrdistill.lucene.export import export_anserini
    from retrdistill.families.sparse.index import SparseIndexer
    from retrdistill.lucene.runtime import anserini_jar
    from retrdistill.stages.evaluate import EvalConfig, run_eval
    from retrdistill.stages.index import IndexConfig, run_index

    cache, index_dir = args.work / "cache", args.work / "index"
    started = time.perf_counter()
    run_index(IndexConfig(indexer="sparse", max_seq_length=SEQ), args.collection, MODEL, index_dir, cache_dir=cache)
    index_seconds = time.perf_counter() - started
    export = export_anserini(index_dir, args.work / "export", factor=100, force=True)
    vectors = sum(p.stat().st_size for p in (args.work / "export" / "vectors").iterdir())

    collection = open_collection(args.collection, cache / "corpora")
    qrels_queries = {line.split("\t")[0] for line in (args.collection / "qrels" / "test.tsv").read_text().splitlines()}
    queries = {q: t for q, t in collection.queries.items() if q in qrels_queries}
    texts = list(queries.values())
    agreement = {}
    for query_factor in (100.0, 10.0):
        system = registry.build("system", "lucene-impact", {"path": str(index_dir), "query_factor": query_factor})
        source = system.source(collection.corpus, cache)
        folder = system.ensure_index(source, cache)
        model = SparseIndexer().load_model(source.model_ref, max_seq_length=source.max_seq_length)
        t0 = time.perf_counter()
        lucene, cost = system.search(source, folder, model, texts, 10, cache)
        seconds = time.perf_counter() - t0
        want = _embedded_quantised(source.index, model, texts, 100.0, query_factor, 10)
        done = json.loads((folder / "done.json").read_text())
        agreement[f"query_factor_{query_factor:g}"] = {
            "queries": len(texts), "top10_identical": sum(a == b for a, b in zip(lucene, want)),
            "queries_with_tied_scores": sum(len({s for _, s in h}) < len(h) for h in want),
            "scores_recomputed_above_clamp": system.unclamped, "search_seconds_with_jvm": round(seconds, 2),
            "lucene_index_seconds": done["seconds"], **cost}

    cfg = EvalConfig(systems=[
        {"name": "SPLADE embedded (float)", "type": "sparse", "options": {"model": MODEL, "max_seq_length": SEQ}},
        {"name": "SPLADE Lucene 100/100", "type": "lucene-impact", "options": {"path": str(index_dir)}},
        {"name": "SPLADE Lucene 100/10", "type": "lucene-impact",
         "options": {"path": str(index_dir), "query_factor": 10.0}}], metrics=["ndcg@10", "recall@100"])
    result = run_eval(cfg, args.collection, args.work / "eval", cache_dir=cache, force=True)
    rows = [{"system": r.system, **r.metrics, "ms_per_query": r.ms_per_query, "index_bytes": r.index_bytes,
             "query_terms": r.query_terms, "doc_terms": r.doc_terms, "flops_per_query": r.flops_per_query}
            for r in load_leaderboard(result.out_dir / "leaderboard.json").rows]
    report = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "collection": str(args.collection.relative_to(ROOT)) if args.collection.is_relative_to(ROOT) else
        str(args.collection), "model": MODEL, "max_seq_length": SEQ, "anserini": anserini_jar().name,
        "sparse_index_seconds": round(index_seconds, 1),
        "export": {**export.manifest.counts, "seconds": export.manifest.seconds,
                   "peak_rss_mb": export.manifest.memory.get("peak_rss_mb"), "vector_bytes": vectors},
        "agreement_with_embedded_quantised": agreement, "leaderboard": rows}
    write_json_atomic(args.out, report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
