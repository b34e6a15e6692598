"""A sparse teacher: dot products of a SPLADE-style model's query and passage term vectors.

Any ``SparseEncoder`` folder, or a masked-LM checkpoint read as SPLADE (``Transformer(fill-mask)`` +
``SpladePooling("max")``, as :func:`retrdistill.encoding.sparse.load_sparse_encoder` builds it). Its usual use
is as an ensemble member beside a dense teacher: a lexical-expansion model and a bi-encoder disagree in useful
ways, and their per-query normalised mean (a hybrid teacher) is the standard way to combine them.

Each :meth:`score_groups` call encodes the call's distinct passages once (``encode_document``) and its queries
(``encode_query``), and scores each group by sparse dot products. As a retriever it searches the corpus's cached
postings exactly (:class:`retrdistill.families.sparse.index.SparseIndexer`), as the ``sparse`` eval system does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from retrdistill.data.beir import Corpus
from retrdistill.models import model_fingerprint
from retrdistill.parts import Run, Teacher


class SparseTeacher(Teacher):
    """Context: ``corpus`` (scored and searched) and ``cache_dir`` (its postings are cached there)."""

    @dataclass
    class Options:
        model: str = "offline:tiny-bert-mlm"
        batch_size: int = field(default=32, metadata={"min": 1})
        max_seq_length: int | None = field(default=None, metadata={"min": 1})  # None: the model's own
        # keep only the top terms of every query and passage vector
        max_active_dims: int | None = field(default=None, metadata={"min": 1})

        def __post_init__(self) -> None:
            if self.batch_size < 1:
                raise ValueError(f"batch_size must be a positive integer, got {self.batch_size}")
            if self.max_active_dims is not None and self.max_active_dims < 1:
                raise ValueError(f"max_active_dims must be a positive integer or null, got {self.max_active_dims}")

    output_neutral: ClassVar[tuple[str, ...]] = ("batch_size",)
    example_options: ClassVar[dict[str, Any]] = {"model": "offline:tiny-bert-mlm", "max_seq_length": 32}
    example_variants: ClassVar[dict[str, Any]] = {"model": "{tiny_sparse_encoder}", "max_active_dims": 64}
    corpus: Corpus
    cache_dir: Path

    def setup(self) -> None:
        from retrdistill import families
        from retrdistill.families.sparse.index import SparseIndexer

        # a dense model named here fails before anything runs, pointing at the dense teacher
        families.check_model(self.options.model, "sparse", "teacher 'sparse'", ["bi-encoder"])
        self._indexer = SparseIndexer(SparseIndexer.Options(max_active_dims=self.options.max_active_dims))
        self._model = None
        self._row: dict[str, int] | None = None

    def fingerprint(self) -> dict:
        return {"teacher": "sparse", "model": model_fingerprint(self.options.model), "options": self.output_options(),
                "corpus": self.corpus.fingerprint}

    @property
    def model(self):
        if self._model is None:
            self._model = self._indexer.load_model(self.options.model, max_seq_length=self.options.max_seq_length)
        return self._model

    def _encode(self, texts: list[str], role: str):
        from retrdistill.encoding.sparse import encode_sparse

        return encode_sparse(self.model, texts, role=role, batch_size=self.options.batch_size,
                             max_active_dims=self.options.max_active_dims)

    def score_groups(self, queries: dict[str, str], groups: dict[str, list[str]]) -> dict[str, np.ndarray]:
        if self._row is None:
            self._row = self.corpus.row_index()
        qids = list(groups)
        docs = list(dict.fromkeys(d for qid in qids for d in groups[qid]))  # each distinct passage encoded once
        position = {d: i for i, d in enumerate(docs)}
        passages = self._encode(self.corpus.texts_at([self._row[d] for d in docs]), "document")
        query_vectors = self._encode([queries[q] for q in qids], "query")
        out = {}
        for i, qid in enumerate(qids):
            picked = passages[[position[d] for d in groups[qid]]]
            out[qid] = np.asarray((picked @ query_vectors[i].T).todense(), dtype=np.float32).ravel()
        return out

    def retrieve(self, queries: dict[str, str], k: int, **_: object) -> Run:
        """The top ``k`` passages per query by exact search of the corpus's cached postings."""
        built = self._indexer.exact_index(self.model, self.corpus, model_ref=self.options.model,
                                          cache_dir=self.cache_dir, max_seq_length=self.options.max_seq_length)
        qids = list(queries)
        scores, rows = self._indexer.search(built.index, self._encode([queries[q] for q in qids], "query"), k)
        return {q: dict(hits) for q, hits in zip(qids, self.corpus.hits(scores, rows))}
