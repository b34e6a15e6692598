"""Shared fixtures: the bundled sample, a small real sub-collection of it, and offline models.

Slow end-to-end tests (``@pytest.mark.slow``) run in CI (``CI=true``) or with ``--runslow``; a plain local
``python -m pytest`` skips them, ``-m slow --runslow`` runs only them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "msmarco-dl-5k"


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow") or os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        return
    skip = pytest.mark.skip(reason="slow end-to-end test: runs in CI; locally use --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLE


@pytest.fixture(scope="session")
def small_collection(tmp_path_factory) -> Path:
    """A real BEIR folder cut from the sample: every passage judged for 6 test queries plus 400 others."""
    out = tmp_path_factory.mktemp("small-collection")
    qrels_rows = [line.split("\t") for line in (SAMPLE / "qrels" / "test.tsv").read_text().splitlines()]
    keep_q = sorted({r[0] for r in qrels_rows})[:6]
    judged = {r[1] for r in qrels_rows if r[0] in keep_q}
    # not splitlines(): passage texts contain U+0085 and U+2028, which it treats as line ends
    lines = (SAMPLE / "corpus.jsonl").read_text(encoding="utf-8").rstrip("\n").split("\n")
    kept, others = [], 0
    for line in lines:
        doc = json.loads(line)
        if doc["_id"] in judged:
            kept.append(line)
        elif others < 400:
            kept.append(line)
            others += 1
    (out / "corpus.jsonl").write_text("\n".join(kept) + "\n", encoding="utf-8")
    queries = [q for q in (SAMPLE / "queries.jsonl").read_text().splitlines() if json.loads(q)["_id"] in keep_q]
    (out / "queries.jsonl").write_text("\n".join(queries) + "\n", encoding="utf-8")
    (out / "qrels").mkdir()
    (out / "qrels" / "test.tsv").write_text(
        "".join("\t".join(r) + "\n" for r in qrels_rows if r[0] in keep_q), encoding="utf-8")
    return out


@pytest.fixture(scope="session")
def minilm() -> str:
    from retrdistill.models import resolve_model

    return resolve_model("offline:all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def tiny_cross_encoder(tmp_path_factory, minilm) -> str:
    """A real cross-encoder checkpoint: all-MiniLM-L6-v2's encoder with a freshly initialised 1-logit head.

    No relevance-trained cross-encoder is available offline; this exercises the real CrossEncoder code path
    (save, load by path, predict) with real weights in the encoder.
    """
    import torch
    from sentence_transformers import CrossEncoder

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("cross-encoder") / "model"
    CrossEncoder(minilm, num_labels=1, max_length=128).save(str(path))
    return str(path)


@pytest.fixture(scope="session")
def tiny_sparse_encoder(tmp_path_factory) -> str:
    """A saved ``SparseEncoder`` folder: tiny-bert-mlm as SPLADE (fill-mask transformer + max pooling), saved
    by sentence-transformers, so another sparse model than the masked-LM checkpoint it came from."""
    from sentence_transformers import SparseEncoder

    from retrdistill.models import resolve_model

    path = tmp_path_factory.mktemp("sparse-encoder") / "model"
    SparseEncoder(resolve_model("offline:tiny-bert-mlm")).save(str(path))
    return str(path)


@pytest.fixture(scope="session")
def small_cache(tmp_path_factory) -> Path:
    """One cache folder (corpora, embeddings, BM25) for the session's fixtures built on ``small_collection``."""
    return tmp_path_factory.mktemp("small-cache")


def _small_index(tmp_path_factory, small_collection, small_cache, minilm, indexer: str) -> str:
    from retrdistill.stages.index import IndexConfig, run_index

    out = tmp_path_factory.mktemp(f"index-{indexer}") / "index"
    run_index(IndexConfig(indexer=indexer), small_collection, minilm, out, cache_dir=small_cache)
    return str(out)


@pytest.fixture(scope="session")
def small_index(tmp_path_factory, small_collection, small_cache, minilm) -> str:
    """A finished flat index folder of ``small_collection`` encoded by all-MiniLM-L6-v2 (the index stage's)."""
    return _small_index(tmp_path_factory, small_collection, small_cache, minilm, "faiss-flat")


@pytest.fixture(scope="session")
def small_hnsw_index(tmp_path_factory, small_collection, small_cache, minilm, small_index) -> str:
    """The same embeddings as ``small_index`` (cached), indexed by HNSW: another finished index folder."""
    return _small_index(tmp_path_factory, small_collection, small_cache, minilm, "faiss-hnsw")


@pytest.fixture(scope="session")
def small_runs(tmp_path_factory, small_collection) -> Path:
    """Two different TREC run files over ``small_collection``'s test queries: ``a.trec`` ranks each query's
    judged passages by grade, ``b.trec`` in reverse."""
    out = tmp_path_factory.mktemp("runs")
    judged: dict[str, list[tuple[int, str]]] = {}
    for line in (small_collection / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines():
        qid, doc, grade = line.split("\t")[:3]
        if grade.isdigit():
            judged.setdefault(qid, []).append((int(grade), doc))
    for name, reverse in (("a.trec", True), ("b.trec", False)):
        rows = []
        for qid, docs in sorted(judged.items()):
            ranked = sorted(docs, reverse=reverse)
            rows += [f"{qid} Q0 {doc} {rank} {len(ranked) - rank} {name[0]}\n" for rank, (_, doc) in enumerate(ranked, 1)]
        (out / name).write_text("".join(rows), encoding="utf-8")
    return out


def _teacher_choice(tmp_path_factory, small_collection, small_cache, select: str) -> str:
    from retrdistill.stages.queries import QueriesConfig, run_queries
    from retrdistill.stages.rate_teachers import RateTeachersConfig, run_rate_teachers

    root = tmp_path_factory.mktemp(f"teacher-choice-{select}")
    run_queries(QueriesConfig(options={"num_queries": 8, "seed": 29}), small_collection, root / "probe",
                cache_dir=small_cache)
    candidates = [{"name": "bm25", "teacher": "bm25"},
                  {"name": "tiny", "teacher": "bi-encoder",
                   "options": {"model": "offline:tiny-bert-mlm", "max_seq_length": 48}}]
    run_rate_teachers(RateTeachersConfig(candidates=candidates, select=select, min_weight=0.0), small_collection,
                      root / "probe", root / "rate", cache_dir=small_cache)
    return str(root / "rate")


@pytest.fixture(scope="session")
def small_teacher_choice(tmp_path_factory, small_collection, small_cache) -> str:
    """A finished rate-teachers folder (BM25 and the tiny BERT rated on 8 probes of ``small_collection``) whose
    choice is a weighted ensemble of both."""
    return _teacher_choice(tmp_path_factory, small_collection, small_cache, "weights")


@pytest.fixture(scope="session")
def small_teacher_pick(tmp_path_factory, small_collection, small_cache) -> str:
    """The same rating with ``select: pick``: the choice is one teacher."""
    return _teacher_choice(tmp_path_factory, small_collection, small_cache, "pick")


@pytest.fixture(autouse=True)
def _library_bars_restored():
    """A CLI command run in-process with ``--quiet`` silences every library's progress bars for the rest of the
    process (right for a command line); a test suite runs many commands in one process, so each test starts
    with the bars as they were."""
    from retrdistill import progress

    was = progress.enabled()
    yield
    progress.silence_libraries(False)
    progress.enable(was)
