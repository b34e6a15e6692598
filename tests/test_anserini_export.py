"""A sparse index exported as Anserini's JsonVectorCollection, and Lucene impact search over it.

The export tests need no Java; the Lucene ones run Anserini's own IndexCollection / SearchCollection from
pyserini's jar and are skipped, with the reason, where pyserini's jar or a Java 21+ runtime is missing (the
``[lucene]`` extra). tiny-bert-mlm is the SPLADE model, passages cut to 32 tokens (as in test_sparse_index.py,
whose cached postings the index here shares through ``small_cache``).

Tie rule for the comparison: the embedded index ranks equal scores by passage row; ``lucene-impact`` indexes
passages under zero-padded row ids and Anserini breaks ties by the id string, which is the same order.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from killing import run_until_marker_then_kill

from retrdistill.errors import ConfigError, DataError
from retrdistill.lucene.runtime import lucene_unavailable

MODEL = "offline:tiny-bert-mlm"
SEQ = 32
SAMPLE_QUERIES = Path(__file__).resolve().parents[1] / "data" / "msmarco-dl-5k" / "queries.jsonl"


needs_lucene = pytest.mark.skipif(lucene_unavailable() is not None, reason=f"Anserini unavailable: {lucene_unavailable()}")


@pytest.fixture(scope="module")
def sparse_index(tmp_path_factory, small_collection, small_cache) -> Path:
    from retrdistill.stages.index import IndexConfig, run_index

    out = tmp_path_factory.mktemp("sparse-index") / "index"
    run_index(IndexConfig(indexer="sparse", max_seq_length=SEQ), small_collection, MODEL, out, cache_dir=small_cache)
    return out


@pytest.fixture(scope="module")
def postings(sparse_index):
    """The index's float weights as a (passages x vocabulary) CSR matrix, read independently of the export."""
    indptr, indices, data = (np.load(sparse_index / f"postings.{n}.npy") for n in ("indptr", "indices", "data"))
    n = json.loads((sparse_index / "index.json").read_text())["documents"]
    return sp.csc_matrix((data, indices, indptr), shape=(n, len(indptr) - 1)).tocsr()


def _read_export(folder: Path) -> list[dict]:
    params = json.loads((folder / "anserini.json").read_text())
    lines = []
    for name in params["files"]:
        lines += [json.loads(line) for line in (folder / "vectors" / name).read_text(encoding="utf-8").splitlines()]
    return lines


def _tokens():
    from transformers import AutoTokenizer

    from retrdistill.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model(MODEL)).convert_ids_to_tokens(list(range(30522)))


# ------------------------------------------------------------------ the export
def test_export_round_trips_every_passage(sparse_index, postings, tmp_path, monkeypatch):
    from retrdistill.artefacts import read_manifest
    from retrdistill.lucene import export as anserini_export

    monkeypatch.setattr(anserini_export, "BLOCK_POSTINGS", 997)  # many doc-major blocks, none aligned to a file
    result = anserini_export.export_anserini(sparse_index, tmp_path / "export", factor=100, docs_per_file=100)
    docs = _read_export(tmp_path / "export")
    doc_ids = (sparse_index / "docids.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert [d["id"] for d in docs] == doc_ids and all(d["contents"] == "" for d in docs)
    tokens = _tokens()
    dropped = 0
    for row, doc in enumerate(docs):
        lo, hi = postings.indptr[row], postings.indptr[row + 1]
        want = {tokens[t]: round(float(w) * 100) for t, w in zip(postings.indices[lo:hi], postings.data[lo:hi])}
        dropped += sum(v == 0 for v in want.values())
        assert doc["vector"] == {t: v for t, v in want.items() if v > 0}, row
        assert all(isinstance(v, int) for v in doc["vector"].values())
    assert dropped > 0  # some weights do round to 0 and are left out
    params = json.loads((tmp_path / "export" / "anserini.json").read_text())
    assert params["factor"] == 100 and params["terms"] == "tokens" and params["documents"] == len(docs)
    assert params["files"] == [f"part-{i:05d}.jsonl" for i in range(-(-len(docs) // 100))]
    assert params["dropped_postings"] == dropped and params["postings"] == postings.nnz - dropped
    assert "-impact -pretokenized" in params["anserini"]["index"]
    manifest = read_manifest(tmp_path / "export")
    assert manifest.kind == "anserini-vectors" and manifest.counts["documents"] == len(docs)
    assert manifest.config["factor"] == 100 and result.skipped is False
    # word pieces go through as they are
    assert any(t.startswith("##") for d in docs for t in d["vector"])
    # a second factor, ids as term names and rows as doc ids
    anserini_export.export_anserini(sparse_index, tmp_path / "ids", factor=10, terms="ids", doc_ids="rows")
    first = _read_export(tmp_path / "ids")[0]
    lo, hi = postings.indptr[0], postings.indptr[1]
    assert first["id"] == "0".zfill(len(str(len(docs) - 1)))
    assert first["vector"] == {str(t): round(float(w) * 10) for t, w in zip(postings.indices[lo:hi],
                                                                            postings.data[lo:hi])
                               if round(float(w) * 10) > 0}


def test_export_from_the_model_equals_export_from_its_index(sparse_index, small_collection, small_cache, tmp_path):
    from retrdistill.lucene.export import export_anserini

    export_anserini(sparse_index, tmp_path / "a")
    export_anserini(MODEL, tmp_path / "b", collection=small_collection, cache_dir=small_cache, max_seq_length=SEQ)
    assert (tmp_path / "a" / "vectors" / "part-00000.jsonl").read_bytes() == \
        (tmp_path / "b" / "vectors" / "part-00000.jsonl").read_bytes()
    assert json.loads((tmp_path / "b" / "anserini.json").read_text())["model"] == MODEL


def test_the_cli_command_exports_and_reports_errors(sparse_index, tmp_path):
    from typer.testing import CliRunner

    from retrdistill.cli.app import app

    runner = CliRunner()
    out = tmp_path / "cli-export"
    done = runner.invoke(app, ["export-anserini", str(sparse_index), str(out), "--factor", "50", "--doc-ids", "rows",
                               "--quiet"])
    assert done.exit_code == 0, done.output
    assert '"documents":' in done.output and json.loads((out / "anserini.json").read_text())["factor"] == 50
    bad = runner.invoke(app, ["export-anserini", str(sparse_index), str(tmp_path / "bad"), "--terms", "pieces"])
    assert bad.exit_code == 2 and bad.output.startswith("error: terms must be one of tokens, ids")
    assert not (tmp_path / "bad").exists()


def test_doc_major_blocks_transpose_any_layout():
    """Random term-major postings (empty terms and passages included) against scipy's transpose."""
    from retrdistill.lucene.export import doc_major_blocks
    from retrdistill.families.sparse.index import SparseIndex

    rng = np.random.default_rng(0)
    dense = rng.random((57, 40)) * (rng.random((57, 40)) < 0.15)
    dense[[3, 20, 56]] = 0  # passages without terms
    dense[:, [0, 7]] = 0  # terms without postings
    csc = sp.csc_matrix(dense.astype(np.float32))
    index = SparseIndex(csc.indptr.astype(np.int64), csc.indices.astype(np.int32), csc.data, 57,
                        {"doc_terms": csc.nnz / 57})
    csr = sp.csr_matrix(dense.astype(np.float32))
    for block in (1, 5, 64, 10_000):
        seen = 0
        for start, stop, indptr, terms, weights in doc_major_blocks(index, block):
            assert start == seen and stop > start
            for i, row in enumerate(range(start, stop)):
                lo, hi = csr.indptr[row], csr.indptr[row + 1]
                assert terms[indptr[i]:indptr[i + 1]].tolist() == csr.indices[lo:hi].tolist()
                assert np.array_equal(weights[indptr[i]:indptr[i + 1]], csr.data[lo:hi])
            seen = stop
        assert seen == 57


def test_bad_requests_fail_clearly(sparse_index, small_collection, small_cache, tmp_path):
    from retrdistill.lucene.export import export_anserini, term_names

    with pytest.raises(ConfigError, match="factor must be a positive number"):
        export_anserini(sparse_index, tmp_path / "x", factor=0)
    with pytest.raises(ConfigError, match="terms must be one of tokens, ids"):
        export_anserini(sparse_index, tmp_path / "x", terms="words")
    with pytest.raises(ConfigError, match="give --collection"):
        export_anserini(MODEL, tmp_path / "x")
    with pytest.raises(ConfigError, match="keeps its own corpus"):
        export_anserini(sparse_index, tmp_path / "x", collection=small_collection, cache_dir=small_cache)
    with pytest.raises(ConfigError, match="not a finished retrdistill index"):
        (tmp_path / "fake").mkdir()
        (tmp_path / "fake" / "index.json").write_text("{}")
        export_anserini(tmp_path / "fake", tmp_path / "x")
    assert not (tmp_path / "x").exists()
    # a token the whitespace analyzer would split: refused where a passage uses it, dropped where none does
    with pytest.raises(ConfigError, match="export with terms: ids"):
        term_names(["a", "new york", "b"], "tokens", np.array([True, True, False]))
    assert term_names(["a", "new york", "b"], "tokens", np.array([True, False, True])) == ["a", None, "b"]
    assert term_names(["a", "new york"], "ids") == ["0", "1"]


def test_a_failed_or_killed_export_leaves_the_last_one_whole(sparse_index, tmp_path):
    import shutil

    from retrdistill.lucene.export import export_anserini

    out = tmp_path / "export"
    export_anserini(sparse_index, out, docs_per_file=100)
    before = {p.name: p.read_bytes() for p in (out / "vectors").iterdir()}
    broken = tmp_path / "broken-index"
    shutil.copytree(sparse_index, broken)
    lines = (broken / "docids.txt").read_text(encoding="utf-8").split("\n")
    (broken / "docids.txt").write_text("\n".join(lines[:10]) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="docids.txt: expected one doc id a line"):
        export_anserini(broken, out, docs_per_file=100, force=True)
    assert {p.name: p.read_bytes() for p in (out / "vectors").iterdir()} == before
    # SIGKILL in the middle of writing (after two doc-major blocks): nothing half-written stays, a rerun finishes
    marker = tmp_path / "killed-here"
    run_until_marker_then_kill(textwrap.dedent(f"""
        import time
        from pathlib import Path
        from retrdistill.lucene import export as ae
        blocks = ae.doc_major_blocks
        def slow(index, size):
            for i, block in enumerate(blocks(index, size)):
                if i == 2:
                    Path({str(marker)!r}).write_text("x")
                    time.sleep(600)
                yield block
        ae.doc_major_blocks = slow
        ae.BLOCK_POSTINGS = 500
        ae.export_anserini({str(sparse_index)!r}, {str(tmp_path / "fresh")!r}, docs_per_file=100)
    """), marker)
    assert not (tmp_path / "fresh").exists()
    export_anserini(sparse_index, tmp_path / "fresh", docs_per_file=100)
    assert {p.name: p.read_bytes() for p in (tmp_path / "fresh" / "vectors").iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# ------------------------------------------------------------------ Lucene impact search
def _embedded_quantised(index, model, texts: list[str], factor: float, query_factor: float, k: int):
    """The embedded inverted index searched with the same quantised weights: ``[[(row, score)]]``."""
    from retrdistill.lucene.export import quantise
    from retrdistill.families.sparse.index import SparseIndex, SparseIndexer

    indexer = SparseIndexer()
    quantised = SparseIndex(index.indptr, index.indices, quantise(index.data, factor).astype(np.float32),
                            index.num_docs, index.params)
    queries = indexer.encode_queries(model, texts, {})
    queries = sp.csr_matrix((quantise(queries.data, query_factor).astype(np.float32), queries.indices,
                             queries.indptr), shape=queries.shape)
    queries.eliminate_zeros()
    scores, rows = indexer.search(quantised, queries, k)
    return [[(int(r), float(s)) for r, s in zip(rr, ss) if r >= 0 and s > 0] for rr, ss in zip(rows, scores)]


@needs_lucene
@pytest.mark.parametrize("terms, query_factor", [("tokens", 100.0), ("ids", 10.0)])
def test_lucene_impact_top10_equals_the_embedded_index_on_the_same_quantised_weights(
        terms, query_factor, sparse_index, small_collection, small_cache, record_property):
    from retrdistill import registry
    from retrdistill.data.beir import open_collection
    from retrdistill.families.sparse.index import SparseIndexer

    corpus = open_collection(small_collection, small_cache / "corpora").corpus
    texts = [json.loads(line)["text"] for line in SAMPLE_QUERIES.read_text(encoding="utf-8").splitlines()]
    system = registry.build("system", "lucene-impact", {"path": str(sparse_index), "terms": terms,
                                                         "query_factor": query_factor})
    source = system.source(corpus, small_cache)
    folder = system.ensure_index(source, small_cache)
    model = SparseIndexer().load_model(source.model_ref, max_seq_length=source.max_seq_length)
    lucene, cost = system.search(source, folder, model, texts, 10, small_cache)
    want = _embedded_quantised(source.index, model, texts, 100.0, query_factor, 10)
    assert lucene == want  # rows, order (ties included) and integer scores
    tied = sum(len({s for _, s in hits}) < len(hits) for hits in want)
    record_property("queries_with_ties", tied)
    record_property("scores_recomputed_above_clamp", system.unclamped)
    assert all(len(h) == 10 for h in want)
    assert cost["query_terms"] > 1 and cost["flops_per_query"] > cost["query_terms"]
    if query_factor == 10.0:
        assert system.unclamped == 0  # every score here is Lucene's own


@needs_lucene
@pytest.mark.slow
def test_lucene_impact_row_beside_the_embedded_sparse_row(small_collection, small_cache, tmp_path):
    from retrdistill.evaluation.leaderboard import load_leaderboard
    from retrdistill.stages.evaluate import EvalConfig, run_eval

    cfg = EvalConfig(systems=[{"name": "SPLADE", "type": "sparse", "options": {"model": MODEL, "max_seq_length": SEQ}},
                              {"name": "SPLADE (Lucene)", "type": "lucene-impact",
                               "options": {"path": MODEL, "max_seq_length": SEQ}}],
                     metrics=["ndcg@10"])
    result = run_eval(cfg, small_collection, tmp_path / "eval", cache_dir=small_cache)
    rows = {r.system: r for r in load_leaderboard(result.out_dir / "leaderboard.json").rows}
    lucene, embedded = rows["SPLADE (Lucene)"], rows["SPLADE"]
    assert lucene.index_bytes > 0 and lucene.ms_per_query > 0
    assert lucene.provenance["lucene"].startswith("anserini-") and lucene.provenance["factor"] == "100/100"
    # the same vectors, quantised to integers: the same quality, terms and FLOPs within rounding
    assert abs(lucene.metrics["ndcg@10"] - embedded.metrics["ndcg@10"]) < 0.05
    assert lucene.query_terms == pytest.approx(embedded.query_terms, rel=0.1)
    assert lucene.doc_terms == pytest.approx(embedded.doc_terms, rel=0.05) and lucene.doc_terms <= embedded.doc_terms
    assert 0 < lucene.flops_per_query <= embedded.flops_per_query
