"""Lucene BM25 (Anserini, from pyserini's jar) against the embedded bm25s on the sample: their top-k overlap.

Skipped, with the reason, where pyserini's jar or a Java 21+ runtime is missing (the ``[lucene]`` extra).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from retrdistill.lucene.runtime import lucene_unavailable


pytestmark = pytest.mark.skipif(lucene_unavailable() is not None, reason=f"Lucene BM25 unavailable: {lucene_unavailable()}")


@pytest.fixture(scope="module")
def sample(sample_dir, tmp_path_factory):
    from retrdistill.data.beir import load_corpus

    cache = tmp_path_factory.mktemp("lucene-cache")
    corpus = load_corpus(sample_dir / "corpus.jsonl", cache / "corpora")
    queries = {json.loads(line)["_id"]: json.loads(line)["text"]
               for line in (sample_dir / "queries.jsonl").read_text().splitlines()}
    return corpus, queries, cache


def _overlap(a, b, k: int) -> float:
    return float(np.mean([len({d for d, _ in a[q][:k]} & {d for d, _ in b[q][:k]}) / k for q in a]))


def test_lucene_bm25_agrees_with_bm25s_on_the_sample(sample, record_property):
    from retrdistill.miners.bm25 import BM25Miner
    from retrdistill.lucene.bm25 import LuceneBM25Miner

    corpus, queries, cache = sample
    lucene = LuceneBM25Miner(LuceneBM25Miner.Options(k1=1.5, b=0.75), corpus=corpus, cache_dir=cache)
    hits = lucene.search(queries, 100)
    assert set(hits) == set(queries) and all(len(h) == 100 for h in hits.values())
    ids = set(corpus.id_list())
    assert all(d in ids for h in hits.values() for d, _ in h)
    assert all(s1 >= s2 for h in hits.values() for (_, s1), (_, s2) in zip(h, h[1:]))
    bm25s = BM25Miner(BM25Miner.Options(k1=1.5, b=0.75), corpus=corpus, cache_dir=cache).search(queries, 100)
    at10, at100 = _overlap(hits, bm25s, 10), _overlap(hits, bm25s, 100)
    top1 = float(np.mean([hits[q][0][0] == bm25s[q][0][0] for q in queries]))
    record_property("overlap@10", at10)
    record_property("overlap@100", at100)
    record_property("top1_agreement", top1)
    # same formula, different analyzers (Lucene's Porter stemmer and stopword list vs Snowball's and bm25s's list)
    assert at10 >= 0.8 and at100 >= 0.8, (at10, at100, top1)
    # the index is built once: a second miner (other k1 / b are search-time) reuses it
    built = (lucene.index_dir / "done.json").stat().st_mtime_ns
    other = LuceneBM25Miner(LuceneBM25Miner.Options(), corpus=corpus, cache_dir=cache)
    assert other.index_dir == lucene.index_dir
    other.search(dict(list(queries.items())[:3]), 5)
    assert (lucene.index_dir / "done.json").stat().st_mtime_ns == built


def test_lucene_system_on_the_leaderboard(small_collection, tmp_path):
    from retrdistill.evaluation.leaderboard import load_leaderboard
    from retrdistill.stages.evaluate import EvalConfig, run_eval

    cfg = EvalConfig(systems=[{"name": "bm25s", "type": "bm25"}, {"name": "Lucene", "type": "lucene-bm25"}],
                     metrics=["ndcg@10", "recall@100"])
    result = run_eval(cfg, small_collection, tmp_path / "eval", cache_dir=tmp_path / "cache")
    rows = {r.system: r for r in load_leaderboard(result.out_dir / "leaderboard.json").rows}
    assert rows["Lucene"].index_bytes > 0 and rows["Lucene"].ms_per_query > 0
    assert abs(rows["Lucene"].metrics["ndcg@10"] - rows["bm25s"].metrics["ndcg@10"]) < 0.15
    assert (result.out_dir / "runs" / "Lucene.trec").is_file()


def test_odd_ids_and_texts_survive(tmp_path):
    from retrdistill.data.beir import load_corpus
    from retrdistill.lucene.bm25 import LuceneBM25Miner

    docs = [{"_id": "doc#1/a", "title": "", "text": "the synapse passes a signal between neurons"},
            {"_id": "Q0", "title": "Heart", "text": "the heart\u2028pumps blood\tthrough the body"},
            {"_id": "3", "title": "", "text": "unrelated words about trains and stations"}]
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    corpus = load_corpus(tmp_path / "corpus.jsonl", tmp_path / "corpora")
    miner = LuceneBM25Miner(corpus=corpus, cache_dir=tmp_path / "cache")
    hits = miner.search({"a/b": "what does a synapse do", "q2": "heart\tblood\npump", "q3": ""}, 2)
    assert hits["a/b"][0][0] == "doc#1/a"
    assert hits["q2"][0][0] == "Q0"
    assert set(hits) == {"a/b", "q2", "q3"} and hits["q3"] == []
