"""Sharded indexes: index steps run as ``shard: I/N``, merged into one folder that ``Retriever.load`` searches as
the unsharded index: the same ids in the same order, the same scores. FAISS flat (all-MiniLM-L6-v2) and the
sparse inverted index (tiny-bert-mlm as SPLADE) on the small real collection, passages cut to 32 tokens to keep
encoding fast; encoding blocks of 64 passages, so the 956 passages split into 15 blocks over 3 shards. Also: exact
score ties across shards (real faiss, duplicated vectors), and the refusals.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from retrdistill.artefacts import read_manifest
from retrdistill.errors import ConfigError, ManifestError

SEQ = 32
BLOCK = 64
SHARDS = 3


def _index(collection, model, out, cache, indexer: str, shard: str = "", **options):
    from retrdistill.stages.index import IndexConfig, run_index

    cfg = IndexConfig(indexer=indexer, options={"shard_size": BLOCK, **options}, max_seq_length=SEQ, shard=shard)
    return run_index(cfg, collection, model, out, cache_dir=cache)


def _build(tmp_path_factory, small_collection, model: str, indexer: str, **options):
    """The unsharded index, its SHARDS shard folders (each its own cache, as separate jobs would have) and
    their merge."""
    from retrdistill.stages.merge import run_merge

    work = tmp_path_factory.mktemp(f"sharded-{indexer}")
    single = _index(small_collection, model, work / "single", work / "cache", indexer, **options)
    dirs = [work / f"shard.{i}" for i in range(SHARDS)]
    for i, folder in enumerate(dirs):
        _index(small_collection, model, folder, work / f"cache.{i}", indexer, f"{i}/{SHARDS}", **options)
    merged = run_merge(list(reversed(dirs)), work / "merged")  # any order: merged in shard order
    return {"work": work, "single": single, "merged": merged, "dirs": dirs}


@pytest.fixture(scope="module")
def dense(tmp_path_factory, small_collection, minilm):
    return _build(tmp_path_factory, small_collection, minilm, "faiss-flat", use_gpu="never")


@pytest.fixture(scope="module")
def sparse(tmp_path_factory, small_collection):
    return _build(tmp_path_factory, small_collection, "offline:tiny-bert-mlm", "sparse")


@pytest.fixture(scope="module")
def queries(small_collection) -> list[str]:
    """The collection's 6 test queries and 34 more: the opening words of every 13th passage."""
    rows = [json.loads(line) for line in (small_collection / "queries.jsonl").read_text().splitlines()]
    docs = (small_collection / "corpus.jsonl").read_text(encoding="utf-8").rstrip("\n").split("\n")[::13][:34]
    return [r["text"] for r in rows] + [" ".join(json.loads(d)["text"].split()[:6]) for d in docs]


def _same_top_k(built, queries, k: int) -> dict:
    from retrdistill import Retriever

    single, merged = Retriever.load(built["single"].out_dir), Retriever.load(built["merged"].out_dir)
    encoded = single.encode_queries(queries)
    s_scores, s_rows = single.search_rows(encoded, k)
    m_scores, m_rows = merged.search_rows(encoded, k)
    assert s_rows.shape == m_rows.shape == (len(queries), min(k, len(single.doc_ids)))
    np.testing.assert_array_equal(m_rows, s_rows)  # ids identical, in the same order
    np.testing.assert_allclose(m_scores, s_scores, rtol=0, atol=1e-6)
    assert merged.batch_search_ids(queries[:5], k)[1] == single.batch_search_ids(queries[:5], k)[1]
    assert merged.doc_ids == single.doc_ids
    return {"bitwise": bool(np.array_equal(m_scores, s_scores)), "single": single, "merged": merged}


@pytest.mark.parametrize("k", [10, 200])
def test_a_sharded_flat_index_returns_the_single_indexs_top_k(dense, queries, k):
    same = _same_top_k(dense, queries, k)
    # each passage is encoded in the same call as unsharded (whole blocks), so the vectors are the same bits
    assert same["bitwise"]
    hits = same["merged"].search(queries[0], k=3)
    assert [h.doc_id for h in hits] == [h.doc_id for h in same["single"].search(queries[0], k=3)]
    assert all(h.text for h in hits)


@pytest.mark.parametrize("k", [10, 200])
def test_a_sharded_sparse_index_returns_the_single_indexs_top_k(sparse, queries, k):
    assert _same_top_k(sparse, queries, k)["bitwise"]


def test_the_merged_folder_is_the_unsharded_artefact_and_self_contained(dense, sparse):
    for built in (dense, sparse):
        single, merged = built["single"], built["merged"]
        assert (merged.manifest.kind, merged.manifest.stage, merged.manifest.key) == \
            ("index", "index", single.manifest.key)
        assert (merged.out_dir / "docids.txt").read_bytes() == (single.out_dir / "docids.txt").read_bytes()
        info = json.loads((merged.out_dir / "index.json").read_text())
        single_info = json.loads((single.out_dir / "index.json").read_text())
        assert info["documents"] == single_info["documents"] == merged.manifest.counts["documents"]
        assert [e["folder"] for e in info["shards"]] == [f"shards/{i}-of-{SHARDS}" for i in range(SHARDS)]
        starts = [e["rows"][0] for e in info["shards"]]
        assert starts[0] == 0 and all(s % BLOCK == 0 for s in starts)
        assert [e["rows"][1] for e in info["shards"]][-1] == info["documents"]
        for key in ("postings", "vocab_size", "dim", "normalized"):
            assert info.get(key) == single_info.get(key), key
        for entry in info["shards"]:  # each shard inside is a finished index of its slice
            assert read_manifest(merged.out_dir / entry["folder"]).config["shard"]
    # the folder moves as a whole: nothing points back at the shard folders
    moved = dense["work"] / "moved"
    dense["merged"].out_dir.rename(moved)
    try:
        from retrdistill import Retriever

        assert Retriever.load(moved).batch_search_ids(["what is a synapse"], 5)[1] == \
            Retriever.load(dense["single"].out_dir).batch_search_ids(["what is a synapse"], 5)[1]
    finally:
        moved.rename(dense["merged"].out_dir)


def test_exact_score_ties_across_shards_break_by_corpus_row_as_in_the_single_index():
    """Duplicated vectors (as duplicated passages give): faiss alone returns a tie group in heap order and keeps
    an arbitrary part of it at the k-th place; both searches here give the rows in order."""
    from retrdistill.families.dense.faiss_index import FlatIndexer
    from retrdistill.indexers.sharded import ShardedIndex, ShardedIndexer

    rng = np.random.default_rng(0)
    vectors = np.concatenate([rng.standard_normal((100, 8))] * 6).astype(np.float32)  # row r ties r+100, r+200..
    queries = rng.standard_normal((30, 8)).astype(np.float32)
    flat = FlatIndexer(FlatIndexer.Options(use_gpu="never"))
    cuts = [0, 128, 384, 600]
    sharded = ShardedIndex([flat.build(vectors[a:b]) for a, b in zip(cuts, cuts[1:])], cuts[:-1],
                           [b - a for a, b in zip(cuts, cuts[1:])])
    for k in (1, 4, 9, 25):
        scores, rows = flat.search(flat.build(vectors), queries, k)
        m_scores, m_rows = ShardedIndexer(flat).search(sharded, queries, k)
        np.testing.assert_array_equal(m_rows, rows)
        np.testing.assert_array_equal(m_scores, scores)
        for srow, rrow in zip(scores, rows):  # best first, a tie group by row, and the lowest rows of a group
            assert all((a > b) or (a == b and i < j) for a, b, i, j in zip(srow, srow[1:], rrow, rrow[1:]))
            last = rrow[srow == srow[-1]]  # the tie group at the k-th place: its lowest rows are kept
            assert last.tolist() == (last[0] % 100 + 100 * np.arange(len(last))).tolist()
        assert np.all(rows[:, 0] < 100)


# ------------------------------------------------------------------ refusals
def test_merging_missing_foreign_or_overlapping_index_shards_is_refused(dense, sparse, small_collection, minilm,
                                                                          tmp_path):
    from retrdistill.stages.merge import run_merge

    dirs = dense["dirs"]
    with pytest.raises(ManifestError, match=r"shard\(s\) 1/3 of index missing or unfinished"):
        run_merge([dirs[0], dirs[2]], tmp_path / "m1")
    with pytest.raises(ManifestError, match=r"foreign shard .* config differs in indexer"):
        run_merge([dirs[0], sparse["dirs"][1], dirs[2]], tmp_path / "m2")
    other = _index(small_collection, minilm, tmp_path / "half", tmp_path / "cache", "faiss-flat", "1/2",
                   use_gpu="never")
    with pytest.raises(ManifestError, match=r"foreign shard .* shard 1/2 of 2, expected one of 3"):
        run_merge([dirs[0], other.out_dir, dirs[2]], tmp_path / "m3")
    with pytest.raises(ManifestError, match="not a shard"):
        run_merge([dense["single"].out_dir], tmp_path / "m4")
    with pytest.raises(ManifestError, match="not a shard"):  # a merged index is not merged again
        run_merge([dense["merged"].out_dir], tmp_path / "m5")
    assert not (tmp_path / "m1").exists() and not (tmp_path / "m3").exists()


def test_more_shards_than_encoding_blocks_is_a_config_error(small_collection, minilm, tmp_path):
    with pytest.raises(ConfigError, match=r"index shard 0/20: no passages to index: .* 15 encoding block\(s\) "
                                          r"of shard_size 64, fewer than 20 shards"):
        _index(small_collection, minilm, tmp_path / "x", tmp_path / "cache", "faiss-flat", "0/20")
    assert not (tmp_path / "x").exists()


def test_a_sharded_index_with_a_shard_folder_gone_is_refused_on_load(dense, tmp_path):
    import shutil

    from retrdistill import Retriever

    copy = tmp_path / "copy"
    shutil.copytree(dense["merged"].out_dir, copy)
    shutil.rmtree(copy / "shards" / f"1-of-{SHARDS}")
    with pytest.raises(ManifestError, match=f"shard folder shards/1-of-{SHARDS} is missing"):
        Retriever.load(copy)


# ------------------------------------------------------------------ pipelines and evaluation
@pytest.mark.slow  # encodes the corpus twice with MiniLM (a 2-shard pipeline step, then unsharded): ~40 s
def test_a_pipeline_index_step_with_shards_evaluates_as_the_unsharded_index(small_collection, minilm, dense,
                                                                             tmp_path):
    import textwrap

    from retrdistill import registry
    from retrdistill.data.beir import open_collection
    from retrdistill.pipeline import load_pipeline, plan_pipeline, run_pipeline

    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: sharded-index
        collection: {small_collection}
        workdir: {tmp_path / "runs"}
        cache_dir: {tmp_path / "cache"}
        steps:
          - id: idx
            stage: index
            model: {minilm}
            options: {{shard_size: {BLOCK}, use_gpu: never}}
            max_seq_length: {SEQ}
            shards: 2
        """))
    run_pipeline(load_pipeline(path))
    merged = tmp_path / "runs" / "idx"
    assert read_manifest(merged).key == dense["single"].manifest.key
    assert all(p.state == "current" for p in plan_pipeline(load_pipeline(path)))
    # the leaderboard's index system: the same run and the sharded index's size on disk
    collection = open_collection(small_collection, tmp_path / "cache" / "corpora")
    rows = [json.loads(x) for x in (small_collection / "queries.jsonl").read_text().splitlines()]
    queries = {r["_id"]: r["text"] for r in rows}
    outputs = [registry.build("system", "index", {"path": str(folder)}).run(
        collection.corpus, queries, 20, tmp_path / "cache", False) for folder in (merged, dense["single"].out_dir)]
    assert outputs[0].run == outputs[1].run
    sizes = [o.cost["index_bytes"] for o in outputs]  # the shards' files, each with its own small header
    assert 0 < sizes[1] <= sizes[0] < 1.01 * sizes[1]
