"""Dense mining: any sentence-transformers model, corpus embeddings cached, searched exactly with FAISS."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from retrdistill.data.beir import Corpus
from retrdistill.encoding.corpus import EncodeSettings, corpus_embeddings, load_encoder
from retrdistill.encoding.engine import encode_texts
from retrdistill.indexers.faiss_index import FlatIndexer, search
from retrdistill.models import model_fingerprint

Hits = dict[str, list[tuple[str, float]]]


class DenseMiner:
    @dataclass
    class Options:
        model: str = "offline:all-MiniLM-L6-v2"
        batch_size: int = 64
        max_seq_length: int | None = None

    def __init__(self, options: Options, corpus: Corpus, cache_dir: Path) -> None:
        self.options = options
        self.corpus = corpus
        self.cache_dir = Path(cache_dir)
        self.settings = EncodeSettings(batch_size=options.batch_size, max_seq_length=options.max_seq_length)
        self._loaded = None  # (model, index, normalized, doc ids), built on the first search

    @classmethod
    def from_options(cls, options: Options, *, corpus: Corpus, cache_dir: Path, **_: object) -> "DenseMiner":
        return cls(options, corpus, cache_dir)

    def fingerprint(self) -> dict:
        return {"miner": "dense", "options": {**asdict(self.options), "model": model_fingerprint(self.options.model)},
                "corpus": self.corpus.fingerprint}

    def _load(self):
        if self._loaded is None:
            model = load_encoder(self.options.model, self.settings)
            store = corpus_embeddings(self.options.model, self.corpus, self.cache_dir, self.settings, model=model)
            indexer = FlatIndexer(FlatIndexer.Options())
            index = indexer.to_device(indexer.build(store.embeddings))
            self._loaded = (model, index, store.normalized)
        return self._loaded

    def search(self, queries: dict[str, str], depth: int) -> Hits:
        model, index, normalized = self._load()
        qids = list(queries)
        q_emb = encode_texts(model, [queries[q] for q in qids], batch_size=self.options.batch_size, normalize=normalized)
        scores, rows = search(index, q_emb, depth)
        return dict(zip(qids, self.corpus.hits(scores, rows)))
