"""The compiled encoding backends where the product encodes: the index step, the eval systems, ``Retriever.load``.

Real ONNX exports of all-MiniLM-L6-v2 (max length 64) on a small sub-collection of the sample; the compiled
models are cached in one folder for the module, so each backend is built once and reused by every test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from retrdistill.encoding.backends import available_backends

pytestmark = pytest.mark.skipif(not available_backends()["onnx-int8"],
                                reason="onnxruntime / onnx not installed (pip install -e '.[fast]')")
MAX_LEN = 64


@pytest.fixture(scope="module")
def compiled_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("compiled")


@pytest.fixture(autouse=True)
def _compiled_here(compiled_cache, monkeypatch):
    monkeypatch.setenv("RETRDISTILL_COMPILED", str(compiled_cache))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def small_collection(tmp_path_factory, sample_dir) -> Path:
    """A smaller cut than conftest's: every passage judged for 2 test queries plus 60 others (~250 passages)."""
    out = tmp_path_factory.mktemp("slice")
    qrels = [line.split("\t") for line in (sample_dir / "qrels" / "test.tsv").read_text().splitlines()]
    keep = sorted({r[0] for r in qrels})[:2]
    judged = {r[1] for r in qrels if r[0] in keep}
    lines = (sample_dir / "corpus.jsonl").read_text(encoding="utf-8").rstrip("\n").split("\n")
    others = [line for line in lines if json.loads(line)["_id"] not in judged][:60]
    kept = [line for line in lines if json.loads(line)["_id"] in judged] + others
    (out / "corpus.jsonl").write_text("\n".join(kept) + "\n", encoding="utf-8")
    queries = [q for q in (sample_dir / "queries.jsonl").read_text().splitlines() if json.loads(q)["_id"] in keep]
    (out / "queries.jsonl").write_text("\n".join(queries) + "\n", encoding="utf-8")
    (out / "qrels").mkdir()
    (out / "qrels" / "test.tsv").write_text("".join("\t".join(r) + "\n" for r in qrels if r[0] in keep),
                                            encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def indexes(tmp_path_factory, small_collection, cache, minilm, compiled_cache) -> dict[str, Path]:
    """The small collection indexed by MiniLM with torch and with onnx-int8."""
    import os

    from retrdistill.stages.index import IndexConfig, run_index

    os.environ["RETRDISTILL_COMPILED"] = str(compiled_cache)  # module scope: monkeypatch is per test
    out = {}
    for backend in ("torch", "onnx-int8"):
        folder = tmp_path_factory.mktemp(f"index-{backend}") / "index"
        run_index(IndexConfig(max_seq_length=MAX_LEN, backend=backend), small_collection, minilm, folder,
                  cache_dir=cache)
        out[backend] = folder
    return out


def _queries(collection: Path) -> dict[str, str]:
    rows = [json.loads(line) for line in (collection / "queries.jsonl").read_text().splitlines()]
    return {r["_id"]: r["text"] for r in rows}


def test_output_key_says_which_backends_change_output():
    from retrdistill.encoding.backends import keyed_options, output_key
    from retrdistill.errors import ConfigError

    assert output_key("torch") is None and output_key("onnx") is None
    int8 = output_key("onnx-int8")
    assert int8["backend"] == "onnx-int8" and int8["onnxruntime"]
    assert keyed_options({"model": "m", "backend": "onnx"}) == {"model": "m"}
    assert keyed_options({"model": "m", "backend": "onnx-int8"})["backend"] == int8
    with pytest.raises(ConfigError, match="unknown backend"):
        output_key("tensorrt")


def test_fingerprints_change_only_where_output_changes(small_collection, cache, minilm, tiny_cross_encoder):
    from retrdistill import registry
    from retrdistill.data.beir import load_corpus
    from retrdistill.encoding.corpus import EncodeSettings, embeddings_key

    corpus = load_corpus(small_collection / "corpus.jsonl", cache / "corpora")

    def system(backend):
        return registry.build("system", "dense", {"model": minilm, "backend": backend}).input_fingerprint()

    def teacher(name, model, backend):
        return registry.build("teacher", name, {"model": model, "backend": backend}, corpus=corpus,
                              cache_dir=cache).fingerprint()

    def emb(backend):
        return embeddings_key(minilm, corpus, EncodeSettings(max_seq_length=MAX_LEN, backend=backend))

    for fingerprint in (system, lambda b: teacher("bi-encoder", minilm, b),
                        lambda b: teacher("cross-encoder", tiny_cross_encoder, b), emb):
        assert fingerprint("torch") == fingerprint("onnx")
        assert fingerprint("torch") != fingerprint("onnx-int8")
    if available_backends()["openvino"]:
        assert system("openvino") == system("torch")
    with pytest.raises(Exception, match="backend must be one of"):
        registry.build("system", "dense", {"model": minilm, "backend": "gpu-magic"})


def test_the_dense_miner_mines_the_same_hits_on_the_fp32_fast_path(small_collection, cache, minilm, tmp_path):
    """A dense miner on onnx keeps torch's fingerprint and shares its cached corpus embeddings, and mines the
    same passages in the same order; onnx-int8 changes the fingerprint."""
    from retrdistill import registry
    from retrdistill.data.beir import load_corpus

    corpus = load_corpus(small_collection / "corpus.jsonl", cache / "corpora")
    queries = _queries(small_collection)

    def miner(backend, where):
        return registry.build("miner", "dense", {"model": minilm, "max_seq_length": MAX_LEN, "backend": backend},
                              corpus=corpus, cache_dir=where)

    torch_miner, onnx_miner = miner("torch", tmp_path / "torch"), miner("onnx", tmp_path / "onnx")
    assert torch_miner.fingerprint() == onnx_miner.fingerprint() != miner("onnx-int8", cache).fingerprint()
    expected, got = torch_miner.search(queries, 20), onnx_miner.search(queries, 20)
    for q in queries:
        assert [h[0] for h in got[q]] == [h[0] for h in expected[q]]
        np.testing.assert_allclose([h[1] for h in got[q]], [h[1] for h in expected[q]], atol=1e-4)
    embeddings = sorted(p.name for p in (tmp_path / "torch" / "embeddings").iterdir())
    assert embeddings == sorted(p.name for p in (tmp_path / "onnx" / "embeddings").iterdir())  # one cache key


def test_index_step_records_its_backend_and_retriever_follows_it(indexes, small_collection, minilm, cache):
    from retrdistill import Retriever
    from retrdistill.artefacts import read_manifest
    from retrdistill.stages.index import IndexConfig, prepare_index

    torch_m, int8_m = read_manifest(indexes["torch"]), read_manifest(indexes["onnx-int8"])
    assert "backend" not in torch_m.config and int8_m.config["backend"]["backend"] == "onnx-int8"
    assert int8_m.counts["backend"]["backend"] == "onnx-int8" and int8_m.counts["backend"]["variant"] == "int8"
    assert torch_m.counts["backend"] == {"backend": "torch"}
    info = json.loads((indexes["onnx-int8"] / "index.json").read_text())
    assert info["backend"] == "onnx-int8"
    # fp32 ONNX builds the index torch builds: same key, so the finished torch index is current for it
    onnx_work = prepare_index(IndexConfig(max_seq_length=MAX_LEN, backend="onnx"), small_collection, minilm,
                              indexes["torch"], cache_dir=cache)
    assert onnx_work.key == torch_m.key and onnx_work.status()[0] == "current"

    queries = _queries(small_collection)
    texts = list(queries.values())
    fast = Retriever.load(indexes["onnx-int8"])
    assert fast.backend == "onnx-int8"
    assert fast.info["max_seq_length"] == MAX_LEN
    exact = Retriever.load(indexes["torch"])
    assert exact.backend == "torch"
    mixed = Retriever.load(indexes["torch"], backend="onnx")
    assert mixed.backend == "onnx"
    # fp32 ONNX queries against the torch index: torch's results
    s_exact, ids_exact = exact.batch_search_ids(texts, 10)
    s_mixed, ids_mixed = mixed.batch_search_ids(texts, 10)
    assert ids_mixed == ids_exact and np.abs(s_mixed - s_exact).max() < 1e-4
    # int8: close to torch, not equal
    s_fast, ids_fast = fast.batch_search_ids(texts, 10)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids_fast, ids_exact)])
    assert overlap >= 0.7, overlap
    assert 0 < np.abs(s_fast - s_exact).max() < 0.1
    hits = fast.search(texts[0], k=3)
    assert len(hits) == 3 and hits[0].text


def test_compiled_models_are_built_once(indexes, minilm, compiled_cache):
    from retrdistill.encoding.backends import backend_info, load_encoder, parameter_count

    def files() -> dict[str, float]:
        return {str(p.relative_to(compiled_cache)): p.stat().st_mtime_ns
                for p in compiled_cache.rglob("*") if p.is_file()}

    before = files()
    assert any(name.endswith("model-int8.onnx") for name in before), before
    model = load_encoder(minilm, "onnx-int8", max_seq_length=MAX_LEN)
    assert files() == before  # the export and its int8 build are read, not rebuilt
    again = load_encoder(minilm, "onnx-int8", max_seq_length=2 * MAX_LEN)  # the graph's axes are dynamic
    assert files() == before and again.max_seq_length == 2 * MAX_LEN
    assert backend_info(model)["compiled_key"] == backend_info(again)["compiled_key"]
    assert parameter_count(model) == parameter_count(load_encoder(minilm, "torch")) > 20_000_000
    if available_backends()["openvino"]:
        load_encoder(minilm, "openvino", max_seq_length=MAX_LEN)
        blobs = files()
        assert any("/openvino-f32/" in name for name in blobs)  # OpenVINO's compiled blob, cached beside the export
        load_encoder(minilm, "openvino", max_seq_length=MAX_LEN)
        assert files() == blobs


def test_eval_systems_on_backends(indexes, small_collection, cache, minilm, tmp_path):
    from retrdistill.evaluation.leaderboard import load_leaderboard
    from retrdistill.stages.evaluate import EvalConfig, run_eval

    systems = [
        {"name": "dense-torch", "type": "dense", "options": {"model": minilm, "max_seq_length": MAX_LEN}},
        {"name": "dense-onnx", "type": "dense", "options": {"model": minilm, "max_seq_length": MAX_LEN,
                                                            "backend": "onnx"}},
        {"name": "index-int8", "type": "index", "options": {"path": str(indexes["onnx-int8"])}},
        {"name": "teacher-int8", "type": "teacher",
         "options": {"options": {"model": minilm, "max_seq_length": MAX_LEN, "backend": "onnx-int8"}}},
    ]
    cfg = EvalConfig(systems=systems, metrics=["ndcg@10", "recall@100"], measure_cost=False)
    result = run_eval(cfg, small_collection, tmp_path / "eval", cache_dir=cache)
    board = load_leaderboard(result.out_dir / "leaderboard.json")
    rows = {r.system: r for r in board.rows}
    assert {name: rows[name].backend for name in rows} == {
        "dense-torch": "torch", "dense-onnx": "onnx", "index-int8": "onnx-int8", "teacher-int8": "onnx-int8"}
    assert abs(rows["dense-onnx"].metrics["ndcg@10"] - rows["dense-torch"].metrics["ndcg@10"]) < 1e-6
    # the int8 teacher encodes the corpus as the int8 index did: one cached embedding set, the same run
    assert abs(rows["teacher-int8"].metrics["ndcg@10"] - rows["index-int8"].metrics["ndcg@10"]) < 1e-4
    assert rows["index-int8"].parameters == rows["dense-torch"].parameters
    markdown = (result.out_dir / "leaderboard.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| System"))
    assert "| backend |" in header and "| onnx-int8 |" in markdown
    assert "onnx-int8" in (result.out_dir / "leaderboard.html").read_text()


def test_sparse_indexer_refuses_compiled_backends():
    from retrdistill import registry
    from retrdistill.errors import ConfigError

    indexer = registry.build("indexer", "sparse", {})
    with pytest.raises(ConfigError, match="torch only"):
        indexer.load_model("offline:tiny-bert-mlm", backend="onnx")


def test_leaderboard_backend_column_and_older_versions(tmp_path):
    from retrdistill.errors import DataError
    from retrdistill.evaluation.leaderboard import Leaderboard, load_leaderboard, render_markdown, write_json

    def board(version: int, **extra) -> dict:
        row = {"system": "s", "dataset": "d", "metrics": {"ndcg@10": 0.5}, **extra}
        return {"format": "retrdistill-leaderboard", "schema_version": version, "title": "t",
                "primary_metric": "ndcg@10", "baseline": None, "metrics": ["ndcg@10"], "rows": [row]}

    write_json(Leaderboard.from_dict(board(3, backend="onnx-int8", ms_per_query=1.5)), tmp_path / "b.json")
    again = load_leaderboard(tmp_path / "b.json")
    assert again.rows[0].backend == again.mean_rows()[0].backend == "onnx-int8"
    assert "| backend | ms/query |" in render_markdown(again) and "| onnx-int8 | 1.50 |" in render_markdown(again)
    assert Leaderboard.from_dict(board(2, ms_per_query=1.0)).rows[0].backend is None
    with pytest.raises(DataError, match="backend"):  # a version-2 file has no such field
        Leaderboard.from_dict(board(2, backend="onnx"))
    with pytest.raises(DataError, match="a backend name or null"):
        Leaderboard.from_dict(board(3, backend=3))
