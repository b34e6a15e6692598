"""The ``llm`` query source: an LLM writes a query for each of a seeded sample of passages (InPars, Promptagator);
the passage is the query's positive.

Each generation is cleaned (its first line, without quotes or a ``Query:`` label) and kept unless it is empty,
shorter than ``min_words`` or longer than ``max_words`` words, a duplicate of a query already kept, or the text
of one of the collection's own queries (which may be evaluation queries). With ``filter_teacher`` set, a query
is kept only if that teacher ranks its passage in its top ``filter_top_k`` of the whole corpus (InPars-style
consistency filtering). Every reason to drop is counted in the manifest. With a template that fills
``{query_type}`` (the bundled ``query-types``), passages are assigned the types of ``query_types`` in turn.
Generations go through :mod:`retrdistill.llm.cache`, so a re-run or a resumed run generates only what is missing.
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from retrdistill import registry
from retrdistill.data.beir import Collection
from retrdistill.kinds import TrainingQueries
from retrdistill.llm.cache import GenerationCache, generate_cached
from retrdistill.llm.client import GenerationParams
from retrdistill.llm.templates import load_template
from retrdistill.parts import QuerySource

log = logging.getLogger(__name__)
_LABEL = re.compile(r"^\s*(?:\d+[.)]\s*)?(?:(?:search\s+)?query|question|q)\s*[:\-]\s*", re.IGNORECASE)
_WORD = re.compile(r"\S+")
DEFAULT_TYPES = ["short keyword query", "natural-language question", "detailed question with context",
                 "question a student might ask"]


def normalise(text: str) -> str:
    """Lower case, punctuation and repeated spaces removed: the text two duplicates share."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def clean_query(text: str) -> str:
    """The first non-empty line of a completion, without a leading ``Query:`` label or surrounding quotes."""
    line = next((ln for ln in text.strip().splitlines() if ln.strip()), "")
    line = _LABEL.sub("", line.strip()).strip()
    return line.strip("\"'`*“”‘’ ").strip()


class LLMQueries(QuerySource):
    """Context: ``cache_dir`` (the generation cache lives in ``cache_dir/llm-generations``; the filter teacher's
    caches beside it)."""

    @dataclass
    class Options:
        llm: str = "transformers"
        llm_options: dict[str, Any] = field(default_factory=dict, metadata={"part": {"kind": "llm", "name": "llm"}})
        template: str = "inpars"
        num_passages: int = field(default=200, metadata={"min": 1})
        queries_per_passage: int = field(default=1, metadata={"min": 1})
        query_types: list[str] = field(default_factory=lambda: list(DEFAULT_TYPES))
        max_passage_chars: int = field(default=1200, metadata={"min": 1})
        min_passage_words: int = field(default=8, metadata={"min": 0})
        max_new_tokens: int = field(default=32, metadata={"min": 1})
        temperature: float = field(default=0.0, metadata={"min": 0})
        top_p: float = field(default=1.0, metadata={"min": 0, "exclusive_min": True, "max": 1})
        seed: int = 13
        min_words: int = field(default=2, metadata={"min": 1})
        max_words: int = field(default=24, metadata={"min": 1})
        filter_teacher: str | None = None
        filter_teacher_options: dict[str, Any] = field(default_factory=dict, metadata={
            "part": {"kind": "teacher", "name": "filter_teacher"}})
        filter_top_k: int = field(default=10, metadata={"min": 1})

        def __post_init__(self) -> None:
            registry.entry("llm", self.llm)
            if self.filter_teacher is not None:
                registry.entry("teacher", self.filter_teacher)
            if self.num_passages < 1 or self.queries_per_passage < 1 or self.filter_top_k < 1:
                raise ValueError("num_passages, queries_per_passage and filter_top_k must be at least 1")
            if self.queries_per_passage > 1 and self.temperature == 0:
                raise ValueError("queries_per_passage > 1 needs temperature > 0 (greedy decoding writes one query)")
            if not 1 <= self.min_words <= self.max_words:
                raise ValueError("need 1 <= min_words <= max_words")
            if not self.query_types:
                raise ValueError("query_types must not be empty")

    needs = ("cache_dir",)
    example_options: ClassVar[dict[str, Any]] = {"llm_options": {"model": "offline:smollm2-135m-instruct"},
                                                 "temperature": 0.5}  # so that more than one sample is valid
    example_variants: ClassVar[dict[str, Any]] = {
        "llm": "openai", "llm_options": {"model": "offline:gemma-3-270m"}, "template": "query-types",
        "query_types": ["keyword query"], "filter_teacher": "bi-encoder",
        "filter_teacher_options": {"model": "offline:all-MiniLM-L6-v2"},
    }
    cache_dir: Path

    def setup(self) -> None:
        opts = self.options
        self.client = registry.build("llm", opts.llm, opts.llm_options)
        self.template = load_template(opts.template)
        self._counts: dict[str, int] = {}

    def params(self, sample: int) -> GenerationParams:
        o = self.options
        return GenerationParams(max_new_tokens=o.max_new_tokens, temperature=o.temperature, top_p=o.top_p,
                                seed=o.seed + sample, stop=("\n",))

    def fingerprint(self) -> dict[str, Any]:
        from retrdistill.models import models_by_content

        opts = asdict(self.options)
        opts.pop("llm_options")  # the client's fingerprint says what of them matters
        opts["template"] = self.template.digest
        # the filter teacher's model by content: retrained or edited weights change which queries are kept
        opts["filter_teacher_options"] = models_by_content(opts["filter_teacher_options"])
        return {"source": "llm", "llm": self.client.fingerprint(), "options": opts}

    def input_files(self) -> list[Path]:
        """The template file and a local model's folder (the queries step reruns when either changes)."""
        return [self.template.path, *self.client.input_files()]

    def counts(self) -> dict[str, int]:
        return dict(self._counts)

    def generate(self, collection: Collection) -> TrainingQueries:
        train, dropped, counts = self._written_and_kept(self._passages(collection), collection)
        train, dropped["duplicate"] = self._dedup(train)
        if self.options.filter_teacher is not None:
            train, dropped["teacher_filter"] = self._filter(train, collection)
        self._counts = {**counts, "kept": len(train.queries), **{f"dropped_{k}": v for k, v in dropped.items()}}
        log.info("llm queries: %s", self._counts)
        return train

    def shard(self, collection: Collection, shard) -> TrainingQueries:
        """Shard ``I/N``: the queries of its contiguous part of the sampled passages, cut in whole batches of the
        client's ``batch_size`` (so every LLM call gets the prompts it gets unsharded), after the rules that judge
        one query alone; :meth:`combine` applies deduplication and the teacher filter to the whole."""
        passage_of = self._passages(collection)
        ids = list(passage_of)
        rows = shard.rows(len(ids), unit=max(1, self.client.batch_size()))
        mine = {doc_id: passage_of[doc_id] for doc_id in ids[rows.start:rows.stop]}
        train, dropped, counts = self._written_and_kept(mine, collection)
        self._counts = {**counts, "kept": len(train.queries), **{f"dropped_{k}": v for k, v in dropped.items()},
                        "dropped_duplicate": 0}
        return train

    def combine(self, collection: Collection | None, parts: list[TrainingQueries]) -> TrainingQueries:
        """The shards' queries in the unsharded order (sample by sample, passages in shard order), deduplicated
        and filtered as :meth:`generate` does; ``counts`` then holds what these whole-set rules dropped."""
        samples = self.options.queries_per_passage

        def sample_of(qid: str) -> int:
            return int(qid.rsplit("-", 1)[1]) if samples > 1 else 0

        queries, positives = {}, {}
        for sample in range(samples):
            for part in parts:
                for qid, text in part.queries.items():
                    if sample_of(qid) == sample:
                        queries[qid], positives[qid] = text, part.positives[qid]
        train, duplicates = self._dedup(TrainingQueries(queries, positives))
        self._counts = {"dropped_duplicate": duplicates}
        if self.options.filter_teacher is not None:
            if collection is None:
                from retrdistill.errors import ConfigError

                raise ConfigError("merging llm query shards with a filter_teacher needs the collection (the teacher "
                                  "filters against its corpus): merge them in a pipeline (shards: N) or pass "
                                  "collection_dir to run_merge")
            train, self._counts["dropped_teacher_filter"] = self._filter(train, collection)
        self._counts["kept"] = len(train.queries)
        return train

    def _passages(self, collection: Collection) -> dict[str, dict[str, str]]:
        """The sampled passages, in sample order, each with the values its prompt is filled with."""
        opts = self.options
        corpus = collection.corpus
        rng = random.Random(opts.seed)
        # a few more passages than asked, in sample order, so passages too short to ask about can be skipped
        rows = rng.sample(range(len(corpus)), min(len(corpus), opts.num_passages * 2))
        passage_of: dict[str, dict[str, str]] = {}
        types = "query_type" in self.template.fields
        for start in range(0, len(rows), 1024):
            if len(passage_of) >= opts.num_passages:
                break
            chunk = rows[start:start + 1024]
            for doc_id, text in zip(corpus.ids_at(chunk), corpus.texts_at(chunk)):
                if len(_WORD.findall(text)) < opts.min_passage_words:
                    continue
                values = {"passage": text[:opts.max_passage_chars]}
                if types:
                    values["query_type"] = opts.query_types[len(passage_of) % len(opts.query_types)]
                passage_of[doc_id] = values
                if len(passage_of) >= opts.num_passages:
                    break
        return passage_of

    def _written_and_kept(self, passage_of: dict[str, dict[str, str]],
                          collection: Collection) -> tuple[TrainingQueries, dict[str, int], dict[str, int]]:
        """Queries written for ``passage_of`` and kept by the rules judging one query alone; what each rule
        dropped; the generation counts."""
        written, generated, reused = self._write(passage_of)
        train, dropped = self._keep(written, collection)
        return train, dropped, {"passages": len(passage_of), "generated": generated,
                                "generations_from_cache": reused, "written": len(written)}

    def _write(self, passage_of: dict[str, dict[str, str]]) -> tuple[list[tuple[str, str, str]], int, int]:
        """(query id, doc id, completion) per passage and sample, sample by sample; new and cached counts."""
        opts = self.options
        cache = GenerationCache(self.cache_dir / "llm-generations")
        written: list[tuple[str, str, str]] = []
        generated = reused = 0
        for sample in range(opts.queries_per_passage):
            items = [(doc_id, values) for doc_id, values in passage_of.items()]
            out = generate_cached(self.client, self.template, items, self.params(sample), cache,
                                  desc=f"llm queries ({sample + 1}/{opts.queries_per_passage})")
            generated += out.generated
            reused += out.from_cache
            suffix = f"-{sample}" if opts.queries_per_passage > 1 else ""
            written += [(f"llm-{doc_id}{suffix}", doc_id, out.texts[doc_id]) for doc_id in passage_of]
        return written, generated, reused

    def _keep(self, written: list[tuple[str, str, str]], collection: Collection) -> tuple[TrainingQueries, dict]:
        """The cleaned completions that pass the rules judging one query alone (empty, length, a collection
        query); what each rule dropped."""
        opts = self.options
        taken = {normalise(t) for t in collection.queries.values()}
        dropped = {"empty": 0, "too_short": 0, "too_long": 0, "collection_query": 0}
        queries, positives = {}, {}
        for qid, doc_id, completion in written:
            query = clean_query(completion)
            words = len(_WORD.findall(query))
            key = normalise(query)
            reason = ("empty" if not key else "too_short" if words < opts.min_words
                      else "too_long" if words > opts.max_words else "collection_query" if key in taken else None)
            if reason:
                dropped[reason] += 1
                continue
            queries[qid] = query
            positives[qid] = {doc_id: 1}
        return TrainingQueries(queries, positives), dropped

    @staticmethod
    def _dedup(train: TrainingQueries) -> tuple[TrainingQueries, int]:
        """The first query of each normalised text kept, later duplicates dropped; how many were dropped."""
        seen: set[str] = set()
        keep = []
        for qid, query in train.queries.items():
            key = normalise(query)
            if key not in seen:
                seen.add(key)
                keep.append(qid)
        return (TrainingQueries({q: train.queries[q] for q in keep}, {q: train.positives[q] for q in keep}),
                len(train.queries) - len(keep))

    def _filter(self, train: TrainingQueries, collection: Collection) -> tuple[TrainingQueries, int]:
        """Keep the queries whose passage the filter teacher ranks in its top ``filter_top_k``."""
        teacher = registry.build("teacher", self.options.filter_teacher, self.options.filter_teacher_options,
                                 corpus=collection.corpus, cache_dir=self.cache_dir)
        run = teacher.retrieve(train.queries, self.options.filter_top_k)
        keep = [q for q in train.queries if any(d in run.get(q, {}) for d in train.positives[q])]
        return (TrainingQueries({q: train.queries[q] for q in keep}, {q: train.positives[q] for q in keep}),
                len(train.queries) - len(keep))
