"""A bi-encoder teacher: SentenceTransformer similarity of query and passage embeddings.

With ``encode_corpus`` (default) the corpus is encoded once into the shared embedding cache, which then serves
scoring, mining with the same model and the teacher's own leaderboard row. Without it, only candidate passages
are encoded (for corpora too large to encode with a slow teacher).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from retrdistill.data.beir import Corpus
from retrdistill.encoding.corpus import EncodeSettings, corpus_embeddings, load_encoder, should_normalize
from retrdistill.encoding.engine import encode_texts
from retrdistill.encoding.prompts import prompted
from retrdistill.llm.passages import stored_or_encoded
from retrdistill.models import model_fingerprint
from retrdistill.parts import Run, Teacher


class BiEncoderTeacher(Teacher):
    """Context: ``corpus`` (scored and searched) and ``cache_dir`` (its embeddings are cached there)."""

    @dataclass
    class Options:
        model: str = "offline:all-mpnet-base-v2"
        batch_size: int = field(default=32, metadata={"min": 1})
        max_seq_length: int | None = field(default=None, metadata={"min": 1})
        encode_corpus: bool = True
        backend: str = "torch"  # retrdistill.encoding.backends: a CPU fast path for encoding

        def __post_init__(self) -> None:
            from retrdistill.encoding.backends import BACKENDS

            if self.backend not in BACKENDS:
                raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")

    output_neutral: ClassVar[tuple[str, ...]] = ("batch_size", "encode_corpus")
    example_options: ClassVar[dict[str, Any]] = {"model": "offline:all-MiniLM-L6-v2"}
    example_variants: ClassVar[dict[str, Any]] = {"backend": "onnx-int8"}
    corpus: Corpus
    cache_dir: Path

    def setup(self) -> None:
        self.settings = EncodeSettings(batch_size=self.options.batch_size, max_seq_length=self.options.max_seq_length,
                                       shard_size=1024, backend=self.options.backend)
        self._model = None
        self._row: dict[str, int] | None = None

    def fingerprint(self) -> dict:
        """The backend counts only where it changes the embeddings (int8, bf16)."""
        from retrdistill.encoding.backends import keyed_options

        opts = keyed_options(self.output_options())
        return {"teacher": "bi-encoder", "model": model_fingerprint(self.options.model), "options": opts,
                "corpus": self.corpus.fingerprint}

    @property
    def model(self):
        if self._model is None:
            self._model = load_encoder(self.options.model, self.settings)
        return self._model

    def corpus_embeddings(self):
        return corpus_embeddings(self.options.model, self.corpus, self.cache_dir, self.settings, model=self.model)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return encode_texts(self.model, prompted(self.model, texts, "query"), batch_size=self.options.batch_size,
                            normalize=should_normalize(self.model))

    def _encode_passages(self, texts: list[str]) -> np.ndarray:
        return encode_texts(self.model, prompted(self.model, texts, "document"), batch_size=self.options.batch_size,
                            normalize=should_normalize(self.model))

    def score_groups(self, queries: dict[str, str], groups: dict[str, list[str]]) -> dict[str, np.ndarray]:
        qids = list(groups)
        q_emb = self.encode_queries([queries[q] for q in qids])
        if self.options.encode_corpus:
            store = self.corpus_embeddings().embeddings
            if self._row is None:
                self._row = self.corpus.row_index()
            return {  # generated passages (training-only, beyond the stored corpus) are encoded here
                qid: stored_or_encoded(store, [self._row[d] for d in groups[qid]], self.corpus,
                                       self._encode_passages) @ q_emb[i]
                for i, qid in enumerate(qids)
            }
        row = self._row if self._row is not None else self.corpus.row_index()
        self._row = row
        out = {}
        for i, qid in enumerate(qids):
            texts = prompted(self.model, self.corpus.texts_at([row[d] for d in groups[qid]]), "document")
            d_emb = encode_texts(self.model, texts, batch_size=self.options.batch_size, normalize=should_normalize(self.model))
            out[qid] = d_emb @ q_emb[i]
        return out

    def retrieve(self, queries: dict[str, str], k: int, **_: object) -> Run:
        """The top ``k`` passages per query by exact inner-product search of the cached corpus embeddings."""
        from retrdistill.families.dense.faiss_index import FlatIndexer

        store = self.corpus_embeddings()
        indexer = FlatIndexer()
        index = indexer.to_device(indexer.build(store.embeddings))
        qids = list(queries)
        scores, rows = indexer.search(index, self.encode_queries([queries[q] for q in qids]), k)
        return {q: dict(hits) for q, hits in zip(qids, self.corpus.hits(scores, rows))}
