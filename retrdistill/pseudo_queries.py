"""Sources of training queries: a model-free pseudo-query generator, a collection's own split, or files.

Each source yields a :class:`TrainingQueries` (queries and their positives). The queries stage writes it as a
BEIR-style pair of files (``queries.jsonl``, ``qrels.tsv``). Evaluation queries never become training queries
unless the user explicitly forces it (``allow_eval_queries: true``).
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from retrdistill.data.beir import Collection, Qrels, load_qrels, load_queries
from retrdistill.errors import ConfigError
from retrdistill.kinds import TrainingQueries
from retrdistill.parts import QuerySource

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_WORD = re.compile(r"\S+")
SPANS = ("words", "sentence")


class InverseClozeGenerator(QuerySource):
    """Inverse cloze pseudo-queries: a span of one sentence of a passage is the query, the passage its positive.

    Deterministic for a given seed and corpus. Passages are sampled uniformly without replacement; within a
    passage a sentence with at least ``min_words`` words is chosen, then (``span: words``, the default) a window
    of ``min_words`` to ``max_words`` words of it, like a short keyword query; or (``span: sentence``) one whole
    sentence of ``min_words`` to ``max_words`` words, like a claim or a question's statement (collections whose
    queries are sentences, e.g. scientific claims). A passage with no fitting sentence gives no query.
    """

    @dataclass
    class Options:
        num_queries: int = field(default=2000, metadata={"min": 1})
        min_words: int = field(default=4, metadata={"min": 1})
        max_words: int = field(default=12, metadata={"min": 1})
        seed: int = 13
        span: str = "words"  # or "sentence"

        def __post_init__(self) -> None:
            if self.num_queries < 1:
                raise ValueError("num_queries must be at least 1")
            if not 1 <= self.min_words <= self.max_words:
                raise ValueError("need 1 <= min_words <= max_words")
            if self.span not in SPANS:
                raise ValueError(f"span must be one of {', '.join(SPANS)}, got {self.span!r}")

    deterministic = True  # a shard generates everything (cheap) and keeps its slice
    example_variants: ClassVar[dict[str, Any]] = {"span": "sentence"}

    def fingerprint(self) -> dict[str, Any]:
        options = asdict(self.options)
        if options["span"] == "words":  # the original behaviour keeps its key
            del options["span"]
        return {"source": "inverse-cloze", "options": options}

    def generate(self, collection: Collection) -> TrainingQueries:
        opts = self.options
        corpus = collection.corpus
        rng = random.Random(opts.seed)
        order = list(range(len(corpus)))
        rng.shuffle(order)
        queries: dict[str, str] = {}
        positives: Qrels = {}
        batch = 1024
        for start in range(0, len(order), batch):
            if len(queries) >= opts.num_queries:
                break
            rows = sorted(order[start:start + batch])
            picked = corpus.dataset.select(rows)
            for doc_id, title, text in zip(picked["_id"], picked["title"], picked["text"]):
                query = self._span(text, rng) or self._span(title, rng)
                if query is None:
                    continue
                qid = f"ict-{doc_id}"
                queries[qid] = query
                positives[qid] = {doc_id: 1}
                if len(queries) >= opts.num_queries:
                    break
        return TrainingQueries(queries, positives)

    def _span(self, text: str, rng: random.Random) -> str | None:
        opts = self.options
        sentences = [s for s in _SENTENCE_END.split(text.strip()) if len(_WORD.findall(s)) >= opts.min_words]
        if opts.span == "sentence":
            sentences = [s for s in sentences if len(_WORD.findall(s)) <= opts.max_words]
            return " ".join(_WORD.findall(rng.choice(sentences))).strip(" .,;:!?") if sentences else None
        if not sentences:
            return None
        words = _WORD.findall(rng.choice(sentences))
        length = rng.randint(opts.min_words, min(opts.max_words, len(words)))
        start = rng.randint(0, len(words) - length)
        return " ".join(words[start:start + length]).strip(" .,;:!?")


class SplitQueries(QuerySource):
    """The collection's own training split: ``queries.jsonl`` restricted to the queries judged in ``qrels/<split>.tsv``."""

    @dataclass
    class Options:
        split: str = "train"
        max_queries: int | None = field(default=None, metadata={"min": 1})
        seed: int = 13

    example_variants: ClassVar[dict[str, Any]] = {"split": "test"}
    deterministic = True  # a shard reads everything (cheap) and keeps its slice

    def fingerprint(self) -> dict[str, Any]:
        """The split's files are the collection's, fingerprinted by the queries stage."""
        return {"source": "split", "options": asdict(self.options)}

    def generate(self, collection: Collection) -> TrainingQueries:
        qrels, _ = collection.qrels(self.options.split)
        positives = {q: {d: g for d, g in docs.items() if g > 0} for q, docs in qrels.items()}
        positives = {q: docs for q, docs in positives.items() if docs}
        qids = sorted(positives)
        if self.options.max_queries is not None and len(qids) > self.options.max_queries:
            qids = sorted(random.Random(self.options.seed).sample(qids, self.options.max_queries))
        return TrainingQueries({q: collection.queries[q] for q in qids}, {q: positives[q] for q in qids})


class FileQueries(QuerySource):
    """Training queries from a BEIR-style queries JSONL file and a qrels TSV file given by path."""

    @dataclass
    class Options:
        queries: str = ""
        qrels: str = ""

        def __post_init__(self) -> None:
            if not self.queries or not self.qrels:
                raise ValueError("both 'queries' (a JSONL path) and 'qrels' (a TSV path) are required")

    deterministic = True  # a shard reads everything (cheap) and keeps its slice
    example_options: ClassVar[dict[str, Any]] = {"queries": "{small_collection}/queries.jsonl",
                                                 "qrels": "{small_collection}/qrels/test.tsv"}
    example_variants: ClassVar[dict[str, Any]] = {"queries": "{sample_dir}/queries.jsonl",
                                                  "qrels": "{sample_dir}/qrels/test.tsv"}

    def fingerprint(self) -> dict[str, Any]:
        """The two files by content, not by path."""
        from retrdistill.artefacts import fingerprint_path

        files = {}
        for name, path in (("queries", self.options.queries), ("qrels", self.options.qrels)):
            try:
                files[name] = fingerprint_path(path)
            except FileNotFoundError:
                raise ConfigError(f"query source 'file': {name} file {path!r} does not exist") from None
        return {"source": "file", "options": files}

    def input_files(self) -> list[Path]:
        return [Path(self.options.queries), Path(self.options.qrels)]

    def generate(self, collection: Collection) -> TrainingQueries:
        queries, _ = load_queries(self.options.queries)
        qrels, _ = load_qrels(self.options.qrels, query_ids=queries)
        positives = {q: {d: g for d, g in docs.items() if g > 0} for q, docs in qrels.items()}
        positives = {q: docs for q, docs in positives.items() if docs}
        return TrainingQueries({q: queries[q] for q in sorted(positives)}, positives)


def check_no_eval_leak(train: TrainingQueries, eval_queries: dict[str, str], eval_split: str, *, allowed: bool) -> int:
    """Refuse training queries that are evaluation queries (same id or same text) unless explicitly allowed."""
    eval_texts = {" ".join(t.lower().split()) for t in eval_queries.values()}
    leaked = [q for q, t in train.queries.items() if q in eval_queries or " ".join(t.lower().split()) in eval_texts]
    if leaked and not allowed:
        raise ConfigError(
            f"{len(leaked)} training queries are {eval_split!r} evaluation queries (e.g. {leaked[0]!r}); training "
            "on test queries invalidates the evaluation. Set 'allow_eval_queries: true' in the queries stage to force it."
        )
    return len(leaked)
