"""The ``llm-negatives`` miner: an LLM writes, for each training query, passages that look relevant to it but do
not answer it ("Don't Retrieve, Generate"), ahead of another miner's negatives (``combine``, BM25 by default).

Written passages get ids of their text's hash (:func:`retrdistill.llm.passages.generated_id`); the mine stage
stores them as the candidates' ``passages.jsonl``, and only training reads them (never an index or an
evaluation). In each query's ranked list the written ones come first (given the combined miner's best score),
then the combined miner's hits, so ``sampling: top`` keeps every written negative plus the best mined ones.
A completion shorter than ``min_words`` words, or one repeating the query's whole text, is dropped.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from retrdistill import registry
from retrdistill.llm.cache import GenerationCache, generate_cached
from retrdistill.llm.client import GenerationParams
from retrdistill.llm.passages import generated_id
from retrdistill.llm.queries import normalise
from retrdistill.llm.templates import load_template
from retrdistill.parts import Hits, Miner

log = logging.getLogger(__name__)
_LABEL = re.compile(r"^\s*(?:passage|answer)\s*:\s*", re.IGNORECASE)


def clean_passage(text: str) -> str:
    """A completion as a passage: a leading ``Passage:`` label removed, whitespace collapsed."""
    return " ".join(_LABEL.sub("", text.strip()).split()).strip("\"'` ")


class LLMNegatives(Miner):
    """Context: ``corpus`` (searched by the combined miner; generated ids are checked against it) and
    ``cache_dir`` (the generation cache, ``cache_dir/llm-generations``)."""

    @dataclass
    class Options:
        llm: str = "transformers"
        llm_options: dict[str, Any] = field(default_factory=dict, metadata={"part": {"kind": "llm", "name": "llm"}})
        template: str = "negative"
        negatives_per_query: int = field(default=1, metadata={"min": 1})
        max_new_tokens: int = field(default=96, metadata={"min": 1})
        temperature: float = field(default=0.0, metadata={"min": 0})
        top_p: float = field(default=1.0, metadata={"min": 0, "exclusive_min": True, "max": 1})
        seed: int = 13
        min_words: int = field(default=8, metadata={"min": 1})
        combine: str | None = "bm25"
        combine_options: dict[str, Any] = field(default_factory=dict, metadata={
            "part": {"kind": "miner", "name": "combine"}})

        def __post_init__(self) -> None:
            registry.entry("llm", self.llm)
            if self.combine is not None:
                registry.entry("miner", self.combine)
                if self.combine == "llm-negatives":
                    raise ValueError("combine must name another miner")
            if self.negatives_per_query < 1 or self.min_words < 1:
                raise ValueError("negatives_per_query and min_words must be at least 1")
            if self.negatives_per_query > 1 and self.temperature == 0:
                raise ValueError("negatives_per_query > 1 needs temperature > 0 (greedy decoding writes one)")

    example_options: ClassVar[dict[str, Any]] = {"llm_options": {"model": "offline:smollm2-135m-instruct"},
                                                 "temperature": 0.5}  # so that more than one sample is valid
    example_variants: ClassVar[dict[str, Any]] = {
        "llm": "openai", "llm_options": {"model": "offline:gemma-3-270m"}, "template": "inpars",
        "combine": None, "combine_options": {"k1": 0.9},
    }

    def setup(self) -> None:
        opts = self.options
        self.client = registry.build("llm", opts.llm, opts.llm_options)
        self.template = load_template(opts.template)
        self.inner = (registry.build("miner", opts.combine, opts.combine_options, corpus=self.corpus,
                                     cache_dir=self.cache_dir) if opts.combine is not None else None)
        self._passages: dict[str, str] = {}
        self.written = self.dropped = self.generated = self.from_cache = 0

    def fingerprint(self) -> dict[str, Any]:
        opts = asdict(self.options)
        for name in ("llm_options", "combine_options", "combine"):
            opts.pop(name)
        opts["template"] = self.template.digest
        return {"miner": "llm-negatives", "llm": self.client.fingerprint(), "options": opts,
                "combine": self.inner.fingerprint() if self.inner is not None else None}

    def params(self, sample: int) -> GenerationParams:
        o = self.options
        return GenerationParams(max_new_tokens=o.max_new_tokens, temperature=o.temperature, top_p=o.top_p,
                                seed=o.seed + sample)

    def generated_passages(self) -> dict[str, str]:
        return dict(self._passages)

    def stats(self) -> dict[str, Any]:
        return {"passages_written": self.written, "passages_dropped": self.dropped,
                "generated": self.generated, "generations_from_cache": self.from_cache,
                **({"combined": self.inner.stats()} if self.inner is not None and self.inner.stats() else {})}

    def write(self, queries: dict[str, str]) -> dict[str, list[str]]:
        """The ids of the passages written for each query (generated, or read from the generation cache)."""
        cache = GenerationCache(self.cache_dir / "llm-generations")
        rows = self.corpus.row_index()
        written: dict[str, list[str]] = {q: [] for q in queries}
        for sample in range(self.options.negatives_per_query):
            out = generate_cached(self.client, self.template, [(q, {"query": t}) for q, t in queries.items()],
                                  self.params(sample), cache, desc="llm negatives")
            self.generated += out.generated
            self.from_cache += out.from_cache
            for qid, completion in out.texts.items():
                text = clean_passage(completion)
                if len(text.split()) < self.options.min_words or normalise(text) == normalise(queries[qid]):
                    self.dropped += 1
                    continue
                doc_id = generated_id(text)
                if doc_id in written[qid]:
                    self.dropped += 1
                    continue
                if rows.get(doc_id) is not None:
                    raise ValueError(f"generated passage id {doc_id} is a corpus id")
                self._passages[doc_id] = text
                written[qid].append(doc_id)
                self.written += 1
        if self.dropped:
            log.info("llm negatives: kept %d written passages, dropped %d (too short, repeating the query or "
                     "duplicates)", self.written, self.dropped)
        return written

    def search(self, queries: dict[str, str], depth: int) -> Hits:
        written = self.write(queries)
        mined = self.inner.search(queries, depth) if self.inner is not None else {}
        hits: Hits = {}
        for qid in queries:
            found = mined.get(qid, [])
            top = found[0][1] if found else 0.0
            hits[qid] = [(d, float(top)) for d in written[qid]] + list(found)
        return hits
