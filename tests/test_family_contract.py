"""A model family is one package plus registry lines: the built-in families recognise their own models, and a
family written here in a temporary package (sign-bit codes of a SentenceTransformer, packed on disk, searched by
Hamming similarity) trains, validates, indexes and is evaluated through a pipeline without a line of the library
knowing it."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from retrdistill import families, registry
from retrdistill.artefacts import read_manifest
from retrdistill.errors import ConfigError
from retrdistill.pipeline import load_pipeline, run_pipeline

TINY = "offline:tiny-bert-mlm"

PACKAGE = '''
"""Binary codes: a SentenceTransformer's embeddings kept as their signs (one bit per dimension), stored packed
and searched by Hamming similarity (the inner product of the +-1 codes)."""

import json
import os
from pathlib import Path

import numpy as np

from retrdistill import families
from retrdistill.errors import ConfigError
from retrdistill.parts import BuiltIndex, Family, Indexer
from retrdistill.families.dense.student import DenseStudent

MARKER = "binary_codes.json"


class BinaryFamily(Family):
    description = "a SentenceTransformer read as sign-bit codes"

    def detect(self, folder):
        return f"{MARKER}: bits" if (Path(folder) / MARKER).is_file() else None

    def load(self, ref, *, max_seq_length=None, device=None):
        return families.get("dense").load(ref, max_seq_length=max_seq_length, device=device)

    def encode(self, model, texts, *, role, batch_size=64, on_progress=None):
        embeddings = model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True)
        if on_progress is not None:
            on_progress(len(texts))
        return np.where(embeddings > 0, 1.0, -1.0).astype(np.float32)

    def scores(self, queries, passages):
        return np.asarray(queries, dtype=np.float32) @ np.asarray(passages, dtype=np.float32).T

    def top_k(self, queries, passages, k):
        scores = self.scores(queries, passages)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        top = np.take_along_axis(scores, order, axis=1)
        pad = k - order.shape[1]
        return (np.pad(top, ((0, 0), (0, pad))).astype(np.float32),
                np.pad(order, ((0, 0), (0, pad)), constant_values=-1).astype(np.int64))


class BinaryStudent(DenseStudent):
    family = "binary"

    def fingerprint(self):
        return {**super().fingerprint(), "student": "binary"}

    def save(self, model, folder):
        super().save(model, folder)
        (Path(folder) / MARKER).write_text(json.dumps({"bits": model.get_embedding_dimension()}))


class BinaryIndexer(Indexer):
    model_type = "binary"
    index_file = "codes.npz"

    def load_model(self, model_ref, *, max_seq_length=None, device=None, backend="torch"):
        if backend != "torch":
            raise ConfigError(f"backend {backend!r}: binary codes encode on torch only")
        return families.get("binary").load(model_ref, max_seq_length=max_seq_length, device=device)

    def index_corpus(self, model, corpus, folder, *, model_ref, cache_dir, batch_size=64, max_seq_length=None):
        built = self.exact_index(model, corpus, model_ref=model_ref, cache_dir=cache_dir)
        self.save(built.index, folder)
        return built

    def exact_index(self, model, corpus, *, model_ref, cache_dir, max_seq_length=None):
        codes = families.get("binary").encode(model, corpus.texts(0, len(corpus)), role="document")
        return BuiltIndex(codes, {"bits": int(codes.shape[1])})

    def encode_queries(self, model, texts, info):
        return families.get("binary").encode(model, texts, role="query")

    def encode_passages(self, model, texts, info):
        return families.get("binary").encode(model, texts, role="document")

    def save(self, index, folder):
        part = Path(folder) / "codes.part.npz"
        np.savez(part, packed=np.packbits(index > 0, axis=1), bits=index.shape[1])
        os.replace(part, Path(folder) / self.index_file)

    def load(self, folder):
        saved = np.load(Path(folder) / self.index_file)
        bits = np.unpackbits(saved["packed"], axis=1)[:, :int(saved["bits"])]
        return np.where(bits > 0, 1.0, -1.0).astype(np.float32)

    def search(self, index, queries, k):
        return families.get("binary").top_k(queries, index, k)
'''


@pytest.fixture
def binary_family(tmp_path, monkeypatch):
    """The throw-away family's package on the path, and its three registry lines (undone afterwards)."""
    for kind in list(registry.REGISTRY):
        monkeypatch.setitem(registry.REGISTRY, kind, dict(registry.REGISTRY[kind]))
    package = tmp_path / "site" / "binary_codes_family"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(PACKAGE), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    registry.add("family", "binary", "binary_codes_family:BinaryFamily", "sign-bit codes, Hamming search")
    registry.add("student", "binary", "binary_codes_family:BinaryStudent", "a SentenceTransformer kept as sign bits")
    registry.add("indexer", "binary-codes", "binary_codes_family:BinaryIndexer", "packed sign bits, exact Hamming")
    yield package
    sys.modules.pop("binary_codes_family", None)


def test_each_built_in_family_recognises_its_own_models(minilm, tiny_sparse_encoder, tiny_cross_encoder):
    assert families.detect(minilm).kind == "dense"
    assert families.detect(tiny_sparse_encoder).kind == "sparse"
    assert families.detect(tiny_cross_encoder).kind == "cross-encoder"
    plain = families.detect(TINY)
    assert plain.kind == "masked-lm" and "ForMaskedLM" in plain.evidence
    families.check_model(TINY, "sparse", "test")  # a masked LM loads as SPLADE
    with pytest.raises(ConfigError, match="needs a sparse SparseEncoder model, but model .* is a dense Sentence"):
        families.check_model(minilm, "sparse", "teacher 'sparse'")
    with pytest.raises(ConfigError, match="unknown model family 'colbert'; expected one of: dense, sparse, "):
        families.check_model(minilm, "colbert", "indexer 'x'")
    with pytest.raises(ConfigError, match="has no text encoding to search"):
        families.get("cross-encoder").encode(None, ["a"], role="query")


def test_dense_and_sparse_families_score_and_search_alike():
    import scipy.sparse as sp

    queries = np.asarray([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]], np.float32)
    passages = np.asarray([[0.0, 1.0, 1.0], [3.0, 0.0, 0.0], [0.0, 0.0, 0.5], [0.0, 2.0, 0.0]], np.float32)
    dense, sparse = families.get("dense"), families.get("sparse")
    expected = queries @ passages.T
    assert np.allclose(dense.scores(queries, passages), expected)
    assert np.allclose(sparse.scores(sp.csr_matrix(queries), sp.csr_matrix(passages)), expected)
    for family, q, p in ((dense, queries, passages), (sparse, sp.csr_matrix(queries), sp.csr_matrix(passages))):
        scores, rows = family.top_k(q, p, 2)
        assert rows.tolist() == [[1, 0], [3, 0]] and np.allclose(scores, [[3.0, 2.0], [2.0, 1.0]])


def test_a_family_in_one_package_trains_validates_indexes_and_is_evaluated(binary_family, small_collection,
                                                                            tmp_path):
    text = f"""
name: binary
collection: {small_collection}
workdir: {tmp_path / "work"}
cache_dir: {tmp_path / "cache"}
steps:
  - {{id: q, stage: queries, options: {{num_queries: 16, seed: 13}}}}
  - {{id: c, stage: mine, queries: "@q", miner: bm25, depth: 20, negatives: 3, rank_max: 20}}
  - {{id: s, stage: score, candidates: "@c", teacher: bi-encoder, options: {{model: "{TINY}", max_seq_length: 48}}}}
  - id: t
    stage: train
    scores: "@s"
    student: binary
    options: {{model: "{TINY}", max_seq_length: 48}}
    negatives_per_query: 2
    max_steps: 2
    batch_size: 4
    seed: 13
    validation: {{fraction: 0.3, seed: 2, every: 1, metrics: [pseudo-positive, teacher-agreement]}}
  - {{id: idx, stage: index, model: "@t", indexer: binary-codes, max_seq_length: 48}}
  - id: board
    stage: eval
    metrics: [ndcg@10]
    measure_cost: false
    systems:
      - {{name: binary student, type: index, options: {{path: "@idx"}}}}
"""
    path = tmp_path / "pipeline.yaml"
    path.write_text(text, encoding="utf-8")
    runs = run_pipeline(load_pipeline(path))
    assert [r.id for r in runs] == ["q", "c", "s", "t", "idx", "board"]
    work = tmp_path / "work"

    student = work / "t" / "model"
    found = families.detect(str(student))
    assert found.kind == "binary" and "binary_codes.json" in found.evidence  # asked before the dense family
    validation = read_manifest(work / "t").counts["validation"]
    curve = validation["curve"]
    assert [p["step"] for p in curve] == [1, 2] and all(0.0 <= p["metrics"]["pseudo-mrr@10"] <= 1.0 for p in curve)

    info = json.loads((work / "idx" / "index.json").read_text())
    assert info["indexer"] == "binary-codes" and info["model_type"] == "binary"
    saved = np.load(work / "idx" / "codes.npz")
    assert saved["packed"].dtype == np.uint8 and saved["packed"].shape[1] * 8 >= int(saved["bits"]) == info["bits"]

    board = json.loads((work / "board" / "leaderboard.json").read_text())
    row = next(r for r in board["rows"] if r["system"] == "binary student")
    assert 0.0 < row["metrics"]["ndcg@10"] <= 1.0

    # the family's search is Hamming similarity over the saved codes: each passage's own code scores all its bits
    from retrdistill.retriever import Retriever

    retriever = Retriever.load(work / "idx")
    codes = retriever.index
    assert set(np.unique(codes)) <= {-1.0, 1.0}
    scores, rows = retriever.indexer.search(codes, codes[:5], 1)
    assert np.allclose(scores[:, 0], codes.shape[1])

    # a dense indexer refuses the binary student, naming the indexer that takes it
    from retrdistill.indexers.model_check import check_model

    with pytest.raises(ConfigError, match="needs a dense SentenceTransformer model, but model .* is a SentenceTransformer "
                                          "read as sign-bit codes .*use 'binary-codes'"):
        check_model(registry.build("indexer", "faiss-flat"), str(student))
