"""The sparse inverted index (``indexer: sparse``) end to end, with tiny-bert-mlm as a real SPLADE model.

Passages are cut to 32 tokens throughout (the index and every reference alike): the MLM head scores the whole
vocabulary for each token, so that is what keeps these tests to seconds on 2 CPU cores. The index shares
``small_cache`` with the contract test's sparse case, so the corpus is encoded once per session.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from killing import run_until_marker_then_kill

from retrdistill.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
MODEL = "offline:tiny-bert-mlm"
SEQ = 32


@pytest.fixture(scope="module")
def sparse_index(tmp_path_factory, small_collection, small_cache) -> Path:
    from retrdistill.stages.index import IndexConfig, run_index

    out = tmp_path_factory.mktemp("sparse-index") / "index"
    run_index(IndexConfig(indexer="sparse", max_seq_length=SEQ), small_collection, MODEL, out, cache_dir=small_cache)
    return out


@pytest.fixture(scope="module")
def collection(small_collection, small_cache):
    from retrdistill.data.beir import open_collection

    return open_collection(small_collection, small_cache / "corpora")


@pytest.fixture(scope="module")
def reference_model():
    """tiny-bert-mlm as SPLADE, assembled here from sentence-transformers' own modules (not retrdistill's loader)."""
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sparse_encoder.modules import SpladePooling

    from retrdistill.models import resolve_model

    path = resolve_model(MODEL)
    return SparseEncoder(modules=[Transformer(path, transformer_task="fill-mask", max_seq_length=SEQ),
                                  SpladePooling(pooling_strategy="max")], device="cpu")


def test_index_folder_holds_memory_mapped_csc_postings(sparse_index, collection):
    from retrdistill.artefacts import read_manifest

    info = json.loads((sparse_index / "index.json").read_text())
    assert info["indexer"] == "sparse" and info["model_type"] == "sparse" and info["max_seq_length"] == SEQ
    n = len(collection.corpus)
    assert info["documents"] == n and info["vocab_size"] == 30522
    indptr = np.load(sparse_index / "postings.indptr.npy", mmap_mode="r")
    indices = np.load(sparse_index / "postings.indices.npy", mmap_mode="r")
    data = np.load(sparse_index / "postings.data.npy", mmap_mode="r")
    assert isinstance(indices, np.memmap) and isinstance(data, np.memmap)
    assert indptr.shape == (30523,) and indptr[0] == 0 and indptr[-1] == len(indices) == len(data) == info["postings"]
    assert indices.dtype == np.int32 and data.dtype == np.float32 and (data > 0).all()
    assert 0 <= indices.min() and indices.max() < n
    # within each term, passage rows strictly ascend: a step down happens only where a new term starts
    steps = np.flatnonzero(np.diff(indices.astype(np.int64)) <= 0) + 1
    assert set(steps.tolist()) <= set(indptr[1:-1].tolist())
    assert info["doc_terms"] == pytest.approx(len(data) / n, abs=1e-3) and 5 < info["doc_terms"] < 500
    counts = read_manifest(sparse_index).counts
    assert counts["postings"] == len(data) and counts["index_bytes"] > data.nbytes + indices.nbytes


def test_scores_and_top_k_equal_the_dot_products_of_the_models_own_vectors(sparse_index, collection,
                                                                            reference_model):
    """The inverted index against ``encode_query`` x ``encode_document`` computed directly (torch sparse mm)."""
    import torch

    from retrdistill.retriever import Retriever

    corpus = collection.corpus
    queries = list(collection.queries.values())
    docs = reference_model.encode_document(corpus.texts(0, len(corpus)), batch_size=32, convert_to_sparse_tensor=True)
    q = reference_model.encode_query(queries, convert_to_sparse_tensor=True)
    reference = torch.sparse.mm(q.coalesce(), docs.coalesce().t()).to_dense().numpy()  # (queries, passages)

    retriever = Retriever.load(sparse_index)
    scores, rows = retriever.search_rows(retriever.encode_queries(queries), len(corpus))
    for i in range(len(queries)):
        found = rows[i] >= 0
        overlap = np.flatnonzero(reference[i] > 0)
        assert found.sum() == len(overlap) > 20  # every passage sharing a term, and only those
        assert set(rows[i][found].tolist()) == set(overlap.tolist())
        np.testing.assert_allclose(scores[i][found], reference[i][rows[i][found]], rtol=1e-5, atol=1e-6)
        assert (scores[i][~found] == 0).all()
        # the top 10: the reference's own order, except where two passages tie within float rounding
        want = np.argsort(-reference[i], kind="stable")[:10]
        np.testing.assert_allclose(scores[i][:10], reference[i][want], rtol=1e-5, atol=1e-6)
        gaps = np.abs(np.diff(reference[i][want]))
        if (gaps > 1e-4).all():
            assert rows[i][:10].tolist() == want.tolist()


def test_both_ways_of_summing_postings_give_the_same_rows_and_scores(sparse_index, collection, monkeypatch):
    """A query with many postings sums into a passage-sized array, one with few sorts its postings: forced each
    way for every test query, the touched rows and their float64 sums are identical."""
    import retrdistill.families.sparse.index as sparse
    from retrdistill.retriever import Retriever

    retriever = Retriever.load(sparse_index)
    queries = _csr(retriever.encode_queries(list(collection.queries.values())))
    index = retriever.index
    got = {}
    for ratio in (0, 10**9):  # 0: never the passage array; 1e9: always
        monkeypatch.setattr(sparse, "DENSE_ACCUMULATOR_RATIO", ratio)
        got[ratio] = [index.score(queries.indices[queries.indptr[i]:queries.indptr[i + 1]],
                                  queries.data[queries.indptr[i]:queries.indptr[i + 1]])
                      for i in range(queries.shape[0])]
    assert len(got[0]) >= 5
    for (rows_a, sums_a), (rows_b, sums_b) in zip(got[0], got[10**9]):
        assert len(rows_a) > 0
        np.testing.assert_array_equal(rows_a, rows_b)
        np.testing.assert_array_equal(sums_a, sums_b)


def _csr(queries):
    import scipy.sparse

    return scipy.sparse.csr_matrix(queries)


def test_retriever_loads_a_sparse_index_like_a_dense_one(sparse_index, collection):
    from retrdistill.retriever import Hit, Retriever

    retriever = Retriever.load(sparse_index)
    assert type(retriever.model).__name__ == "SparseEncoder" and retriever.model.max_seq_length == SEQ
    qid, text = next(iter(collection.queries.items()))
    hits = retriever.search(text, k=5)
    assert len(hits) == 5 and all(isinstance(h, Hit) for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True) and hits[-1].score > 0
    row = collection.corpus.row_index()
    assert [h.passage for h in hits] == collection.corpus.texts_at([row[h.doc_id] for h in hits])
    batch = retriever.batch_search(list(collection.queries.values())[:3], k=5)
    # a query encoded in a batch (padded) and alone differ by float rounding only
    assert [h.doc_id for h in batch[0]] == [h.doc_id for h in hits]
    np.testing.assert_allclose([h.score for h in batch[0]], [h.score for h in hits], rtol=1e-5)
    scores, ids = retriever.batch_search_ids([text], k=5)
    assert ids[0] == [h.doc_id for h in hits]


def _sparse_model_folder(tmp_path: Path, reference_model) -> Path:
    folder = tmp_path / "splade"
    reference_model.save(str(folder))
    return folder


def test_a_model_of_the_wrong_family_is_refused_before_any_encoding(tmp_path, small_collection, minilm,
                                                                     reference_model):
    from retrdistill.stages.index import IndexConfig, prepare_index, run_index

    splade = _sparse_model_folder(tmp_path, reference_model)
    cache = tmp_path / "cache"
    with pytest.raises(ConfigError, match=r"indexer 'faiss-flat' needs a dense SentenceTransformer model, but model "
                                          rf"'{splade}' is a sparse SparseEncoder model \(config_sentence_transformers"
                                          r"\.json: model_type SparseEncoder\); use 'sparse' for it"):
        run_index(IndexConfig(indexer="faiss-flat"), small_collection, str(splade), tmp_path / "dense", cache_dir=cache)
    with pytest.raises(ConfigError, match=r"indexer 'sparse' needs a sparse SparseEncoder model, but model "
                                          rf"'{minilm}' is a dense SentenceTransformer model \(modules\.json: "
                                          r"Transformer, Pooling, Normalize\); use 'faiss-flat' for it"):
        prepare_index(IndexConfig(indexer="sparse"), small_collection, minilm, tmp_path / "sparse", cache_dir=cache)
    assert not (cache / "embeddings").exists() and not (cache / "sparse").exists(), "nothing was encoded"
    assert not (tmp_path / "dense").exists() and not (tmp_path / "sparse").exists()
    # a plain masked-LM checkpoint is both: SPLADE for the sparse indexer, mean pooling for a dense one
    from retrdistill import registry
    from retrdistill.indexers.model_check import check_model

    for name in ("sparse", "faiss-flat"):
        check_model(registry.build("indexer", name), MODEL)


def test_eval_rows_report_terms_and_flops_for_sparse_and_bm25(tmp_path, small_collection, small_cache, sparse_index,
                                                              small_index, monkeypatch):
    import retrdistill.systems as systems
    from retrdistill.evaluation.leaderboard import load_leaderboard
    from retrdistill.retriever import Retriever
    from retrdistill.stages.evaluate import EvalConfig, run_eval

    monkeypatch.setattr(systems, "COST_SAMPLE", 24)  # passages timed for passages/s
    cfg = EvalConfig(baseline="BM25", depth=50, systems=[
        {"name": "BM25", "type": "bm25"},
        {"name": "SPLADE index", "type": "index", "options": {"path": str(sparse_index)}},
        {"name": "SPLADE", "type": "sparse", "options": {"model": MODEL, "max_seq_length": SEQ}},
        {"name": "MiniLM", "type": "index", "options": {"path": small_index}},
        {"name": "hybrid", "type": "fusion", "options": {"systems": ["BM25", "SPLADE index"]}},
    ])
    run_eval(cfg, small_collection, tmp_path / "eval", cache_dir=small_cache)
    board = load_leaderboard(tmp_path / "eval" / "leaderboard.json")
    rows = {r.system: r for r in board.rows}
    for name in ("BM25", "SPLADE index", "SPLADE", "hybrid"):
        assert rows[name].flops_per_query > 0, name
    for name in ("BM25", "SPLADE index", "SPLADE"):
        assert 1 <= rows[name].query_terms < rows[name].flops_per_query and rows[name].doc_terms > 1, name
    assert rows["MiniLM"].flops_per_query is None and rows["MiniLM"].query_terms is None
    assert rows["hybrid"].flops_per_query == pytest.approx(rows["BM25"].flops_per_query
                                                           + rows["SPLADE index"].flops_per_query)
    assert rows["SPLADE index"].encode_passages_per_s > 0 and rows["SPLADE index"].ms_per_query > 0
    assert rows["SPLADE index"].parameters > 4_000_000 and rows["SPLADE index"].index_bytes > 0

    # FLOPs/query: the posting-list lengths of each query's terms, recomputed here from the saved index
    retriever = Retriever.load(sparse_index)
    q = retriever.encode_queries(list(collection_queries(small_collection).values()))
    lengths = np.diff(np.load(sparse_index / "postings.indptr.npy"))
    per_query = (q != 0).astype(np.int64) @ lengths  # (queries,): postings of each query's terms
    assert rows["SPLADE index"].flops_per_query == pytest.approx(per_query.mean())
    assert rows["SPLADE index"].query_terms == pytest.approx(q.nnz / q.shape[0])
    # a SparseEncoder evaluated directly is the same system as its saved index
    results = json.loads((tmp_path / "eval" / "results.json").read_text())["systems"]
    assert results["SPLADE"]["per_query"] == results["SPLADE index"]["per_query"]
    assert rows["SPLADE"].flops_per_query == pytest.approx(rows["SPLADE index"].flops_per_query)

    md = (tmp_path / "eval" / "leaderboard.md").read_text()
    assert "FLOPs/query" in md.splitlines()[next(i for i, line in enumerate(md.splitlines()) if "| System" in line)]
    html = (tmp_path / "eval" / "leaderboard.html").read_text()
    assert 'id="plot-ds0-flops"' in html and "against FLOPs per query" in html


def collection_queries(folder: Path) -> dict[str, str]:
    from retrdistill.data.beir import open_collection

    return open_collection(folder).queries


# ------------------------------------------------------------------ leaderboard JSON
def _board_json(version: int, **extra) -> dict:
    row = {"system": "s", "dataset": "d", "metrics": {"ndcg@10": 0.5}, **extra}
    return {"format": "retrdistill-leaderboard", "schema_version": version, "title": "t", "primary_metric": "ndcg@10",
            "baseline": None, "metrics": ["ndcg@10"], "rows": [row]}


def test_leaderboard_round_trips_sparse_cost_and_reads_version_1(tmp_path):
    from retrdistill.errors import DataError
    from retrdistill.evaluation.leaderboard import (SCHEMA_VERSION, Leaderboard, load_leaderboard, render_markdown,
                                                    write_json)

    board = Leaderboard.from_dict(_board_json(2, flops_per_query=12345.0, query_terms=21.5, doc_terms=130.25,
                                              ms_per_query=1.5))
    write_json(board, tmp_path / "b.json")
    again = load_leaderboard(tmp_path / "b.json")
    assert json.loads((tmp_path / "b.json").read_text())["schema_version"] == SCHEMA_VERSION >= 2
    row = again.rows[0]
    assert (row.flops_per_query, row.query_terms, row.doc_terms) == (12345.0, 21.5, 130.25)
    mean = again.mean_rows()[0]
    assert (mean.flops_per_query, mean.query_terms, mean.doc_terms) == (12345.0, 21.5, 130.25)
    table = render_markdown(again)
    assert "| FLOPs/query | terms/query | terms/passage |" in table and "| 12.3k | 21.5 | 130.2 |" in table
    assert Leaderboard.from_dict(_board_json(1, ms_per_query=2.0)).rows[0].flops_per_query is None
    with pytest.raises(DataError, match="flops_per_query"):  # a version-1 file has no such field
        Leaderboard.from_dict(_board_json(1, flops_per_query=1.0))
    with pytest.raises(DataError, match=r"rows\[0\]\.query_terms: expected a non-negative number or null"):
        Leaderboard.from_dict(_board_json(2, query_terms=-1))


# ------------------------------------------------------------------ a killed build


@pytest.mark.slow  # a child imports torch and SPLADE-encodes part of the corpus, then two more builds: ~30-60 s
def test_killed_sparse_index_build_resumes_from_its_shards(tmp_path, small_collection, monkeypatch):
    import retrdistill.encoding.sparse as sparse_mod
    from retrdistill.stages.index import IndexConfig, run_index

    seq, shard, shards_before_kill = 16, 128, 3
    cfg = IndexConfig(indexer="sparse", options={"shard_size": shard}, max_seq_length=seq, batch_size=32)
    work, cache, marker = tmp_path / "run", tmp_path / "cache", tmp_path / "killed-here"
    work.mkdir()
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        import numpy as np
        from retrdistill.stages.index import IndexConfig, run_index

        savez, calls = np.savez, []
        def savez_then_hang(fh, **arrays):
            calls.append(1)
            if len(calls) <= {shards_before_kill}:
                return savez(fh, **arrays)
            fh.write(b"PK half a shard")   # the next shard is half written into its temporary file
            fh.flush()
            Path({str(marker)!r}).touch()
            time.sleep(3600)
        np.savez = savez_then_hang
        cfg = IndexConfig(indexer="sparse", options={{"shard_size": {shard}}}, max_seq_length={seq}, batch_size=32)
        run_index(cfg, {str(small_collection)!r}, {MODEL!r}, {str(work / 'index')!r}, cache_dir={str(cache)!r})
    """)
    run_until_marker_then_kill(script, marker)

    assert {p.name for p in work.iterdir() if not p.name.startswith(".")} == set(), "no index is visible"
    [folder] = list((cache / "sparse").iterdir())
    shards = folder / f"shards-{shard}"
    finished = sorted(p.name for p in shards.iterdir() if not p.name.startswith("."))
    assert finished == [f"{i * shard:012d}.npz" for i in range(shards_before_kill)]
    assert len([p for p in shards.iterdir() if p.name.startswith(".")]) == 1, "the half shard is a temporary"
    assert not (folder / "meta.json").exists()
    mtimes = {name: (shards / name).stat().st_mtime_ns for name in finished}
    (folder / ".postings.tmp").mkdir()  # as a build killed while scattering postings leaves it
    (folder / ".postings.tmp" / "postings.data.npy").write_bytes(b"half")

    encoded: list[int] = []
    real = sparse_mod.encode_sparse

    def counting(model, texts, **kwargs):
        encoded.append(len(texts))
        if shards.exists():  # the shards finished before the kill are the same files: read, never rewritten
            assert {name: (shards / name).stat().st_mtime_ns for name in finished} == mtimes
        return real(model, texts, **kwargs)

    monkeypatch.setattr(sparse_mod, "encode_sparse", counting)
    resumed = run_index(cfg, small_collection, MODEL, work / "index", cache_dir=cache)
    n = resumed.manifest.counts["documents"]
    assert sum(encoded) == n - shards_before_kill * shard
    assert not shards.exists() and not (folder / ".postings.tmp").exists()
    assert {p.name for p in work.iterdir()} == {"index"}, "the dead run's temporary folder is removed"

    encoded.clear()
    reference = run_index(cfg, small_collection, MODEL, tmp_path / "reference" / "index",
                          cache_dir=tmp_path / "reference-cache")
    assert sum(encoded) == n
    for name in ("postings.data.npy", "postings.indices.npy", "postings.indptr.npy", "sparse.json", "docids.txt"):
        assert (work / "index" / name).read_bytes() == (tmp_path / "reference" / "index" / name).read_bytes(), name
    assert resumed.manifest.outputs == reference.manifest.outputs
