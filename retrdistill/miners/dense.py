"""Dense mining: any sentence-transformers model, corpus embeddings cached, searched exactly with FAISS."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from retrdistill.data.beir import Corpus
from retrdistill.encoding.corpus import EncodeSettings, corpus_embeddings, load_encoder
from retrdistill.encoding.engine import encode_texts
from retrdistill.encoding.prompts import prompted
from retrdistill.families.dense.faiss_index import FlatIndexer
from retrdistill.models import model_fingerprint
from retrdistill.parts import Hits, Miner


class DenseMiner(Miner):
    """Context: ``corpus`` (searched) and ``cache_dir`` (its embeddings are cached under ``embeddings/``)."""

    @dataclass
    class Options:
        model: str = "offline:all-MiniLM-L6-v2"
        batch_size: int = field(default=64, metadata={"min": 1})
        max_seq_length: int | None = field(default=None, metadata={"min": 1})
        backend: str = "torch"  # retrdistill.encoding.backends: a CPU fast path for encoding

        def __post_init__(self) -> None:
            from retrdistill.encoding.backends import BACKENDS

            if self.backend not in BACKENDS:
                raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")

    output_neutral: ClassVar[tuple[str, ...]] = ("batch_size",)
    example_variants: ClassVar[dict[str, Any]] = {"backend": "onnx-int8"}
    corpus: Corpus
    cache_dir: Path

    def setup(self) -> None:
        self.settings = EncodeSettings(batch_size=self.options.batch_size, max_seq_length=self.options.max_seq_length,
                                       backend=self.options.backend)
        self._loaded = None  # (model, index, normalized), built on the first search
        self._indexer = FlatIndexer()

    def fingerprint(self) -> dict:
        """The backend counts only where it changes the embeddings (int8, bf16), not for the fp32 ones."""
        from retrdistill.encoding.backends import keyed_options

        return {"miner": "dense",
                "options": {**keyed_options(self.output_options()), "model": model_fingerprint(self.options.model)},
                "corpus": self.corpus.fingerprint}

    def _load(self):
        if self._loaded is None:
            model = load_encoder(self.options.model, self.settings)
            store = corpus_embeddings(self.options.model, self.corpus, self.cache_dir, self.settings, model=model)
            index = self._indexer.to_device(self._indexer.build(store.embeddings))
            self._loaded = (model, index, store.normalized)
        return self._loaded

    def search(self, queries: dict[str, str], depth: int) -> Hits:
        model, index, normalized = self._load()
        qids = list(queries)
        q_emb = encode_texts(model, prompted(model, [queries[q] for q in qids], "query"),
                             batch_size=self.options.batch_size, normalize=normalized)
        scores, rows = self._indexer.search(index, q_emb, depth)
        return dict(zip(qids, self.corpus.hits(scores, rows)))
