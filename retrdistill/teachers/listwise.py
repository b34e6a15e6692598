"""A listwise LLM teacher (``llm-listwise``): RankGPT-style sliding-window permutations turned into scores.

Each query's group is ranked by a registered LLM client (``llm``, ``llm_options``: the local ``transformers`` one
or ``openai`` over HTTP) with a prompt template (by default the bundled ``rank-listwise``: the query and a
window of passages numbered ``[1]``..``[m]``, answered as ``[2] > [1] > [3] ...``). Windows of ``window``
passages slide from the end of the group to its start by ``stride`` (one pass, as RankGPT does, so the best
passages rise to the front); each window's answer reorders that window. The group starts in the order the
candidates list it (the pseudo-positive first, then the negatives by mining rank).

Answers are parsed leniently (:func:`parse_permutation`): the numbers in order of appearance, prose around them
ignored; a repeated number counts once, a number outside the window is dropped, and numbers left out keep their
relative order after the named ones. Each kind of repair is counted (``stats()``: ``repeated``, ``invented``,
``missing``, ``unparsed`` for an answer with no number at all, which keeps the window as it was).

The final rank ``r`` (1 = best) of each passage becomes its score: ``reciprocal-rank``: ``1 / r``;
``negative-rank``: ``-r`` (for a listwise KL loss the temperature then sets how peaked the target is). Both
keep the order only; the teacher's score of a pair depends on the whole group, so the score cache re-ranks a
group whole when any of its pairs is missing (``scores_whole_groups``), and every window's answer is cached by
the generation cache (keyed on the client, template, generation parameters and the window's texts), so a re-run
asks the model nothing.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from retrdistill import registry
from retrdistill.data.beir import Corpus
from retrdistill.parts import Run, Teacher
from retrdistill.teachers.first_stage import rerank_first_stage

log = logging.getLogger(__name__)
SCORES = ("reciprocal-rank", "negative-rank")
_NUMBER = re.compile(r"\d+")


@dataclass
class Parsed:
    """A window's answer as a permutation: ``order`` (0-based window positions, best first, every position
    once) and what was repaired to get it."""

    order: list[int]
    repeated: int = 0
    invented: int = 0
    missing: int = 0
    unparsed: bool = False


def parse_permutation(text: str, size: int) -> Parsed:
    """The ranking of a window of ``size`` passages (numbered from 1) that ``text`` names, best first."""
    seen: list[int] = []
    repeated = invented = 0
    numbers = [int(n) for n in _NUMBER.findall(text)]
    for number in numbers:
        if not 1 <= number <= size:
            invented += 1
        elif number - 1 in seen:
            repeated += 1
        else:
            seen.append(number - 1)
    rest = [i for i in range(size) if i not in seen]
    return Parsed(seen + rest, repeated, invented, len(rest) if seen else 0, unparsed=not seen)


def windows(size: int, window: int, stride: int) -> list[tuple[int, int]]:
    """``(start, end)`` of each window of one pass over ``size`` passages, from the end to the start."""
    if size <= window:
        return [(0, size)]
    out, start = [], size - window
    while True:
        out.append((start, start + window))
        if start == 0:
            return out
        start = max(0, start - stride)


class ListwiseLLMTeacher(Teacher):
    """Context: ``corpus`` (the passages ranked) and ``cache_dir`` (the generation cache, and BM25 for
    :meth:`retrieve`)."""

    @dataclass
    class Options:
        llm: str = "transformers"
        llm_options: dict[str, Any] = field(default_factory=dict, metadata={"part": {"kind": "llm", "name": "llm"}})
        template: str = "rank-listwise"  # a bundled template name or a template file's path
        window: int = field(default=10, metadata={"min": 2})
        stride: int = field(default=5, metadata={"min": 1})
        max_passage_words: int = field(default=80, metadata={"min": 1})
        max_new_tokens: int = field(default=80, metadata={"min": 1})
        score: str = "reciprocal-rank"
        rerank_depth: int = field(default=20, metadata={"min": 1})

        def __post_init__(self) -> None:
            if self.stride >= self.window:
                raise ValueError(f"stride ({self.stride}) must be smaller than window ({self.window})")
            if self.score not in SCORES:
                raise ValueError(f"score must be one of {', '.join(SCORES)}, got {self.score!r}")
            registry.entry("llm", self.llm)

    output_neutral: ClassVar[tuple[str, ...]] = ("rerank_depth",)
    scores_whole_groups: ClassVar[bool] = True
    example_options: ClassVar[dict[str, Any]] = {"llm_options": {"model": "offline:smollm2-135m-instruct"},
                                                 "window": 3, "stride": 2, "max_new_tokens": 16}
    example_variants: ClassVar[dict[str, Any]] = {"llm": "openai", "score": "negative-rank",
                                                  "llm_options": {"model": "offline:gemma-3-270m"},
                                                  "template": "rank-listwise-brief", "stride": 1}
    corpus: Corpus
    cache_dir: Path

    def setup(self) -> None:
        from retrdistill.llm.templates import load_template

        self.client = registry.build("llm", self.options.llm, self.options.llm_options)
        self.template = load_template(self.options.template)
        missing = {"query", "passages"} - self.template.fields
        if missing:
            from retrdistill.errors import ConfigError

            raise ConfigError(f"teacher 'llm-listwise': template {self.template.path} has no "
                              f"{' or '.join('{' + m + '}' for m in sorted(missing))}; a listwise prompt fills "
                              f"{{query}}, {{passages}} and optionally {{count}}")
        self._row: dict[str, int] | None = None
        self.counts = {"windows": 0, "repeated": 0, "invented": 0, "missing": 0, "unparsed": 0}

    def fingerprint(self) -> dict:
        opts = {k: v for k, v in self.output_options().items() if k not in ("llm", "llm_options", "template")}
        return {"teacher": "llm-listwise", "llm": self.client.fingerprint(), "template": self.template.digest,
                "options": opts, "corpus": self.corpus.fingerprint}

    def stats(self) -> dict[str, Any]:
        return dict(self.counts)

    def _cut(self, text: str) -> str:
        words = text.split()
        return text if len(words) <= self.options.max_passage_words else " ".join(words[:self.options.max_passage_words])

    def score_groups(self, queries: dict[str, str], groups: dict[str, list[str]]) -> dict[str, np.ndarray]:
        from retrdistill.llm.cache import GenerationCache, generate_cached
        from retrdistill.llm.client import GenerationParams

        if self._row is None:
            self._row = self.corpus.row_index()
        o = self.options
        order = {q: list(dict.fromkeys(docs)) for q, docs in groups.items()}
        texts = {q: dict(zip(docs, (self._cut(t) for t in self.corpus.texts_at([self._row[d] for d in docs]))))
                 for q, docs in order.items()}
        plans = {q: windows(len(docs), o.window, o.stride) for q, docs in order.items()}
        cache = GenerationCache(self.cache_dir / "llm-generations")
        params = GenerationParams(max_new_tokens=o.max_new_tokens, temperature=0.0)
        for step in range(max((len(p) for p in plans.values()), default=0)):
            items, spans = [], {}
            for q, plan in plans.items():
                if step < len(plan):
                    start, end = plan[step]
                    shown = order[q][start:end]
                    spans[q] = (start, end)
                    passages = "\n".join(f"[{i}] {texts[q][d]}" for i, d in enumerate(shown, 1))
                    items.append((q, {"query": queries[q], "passages": passages, "count": str(len(shown))}))
            answers = generate_cached(self.client, self.template, items, params, cache,
                                      desc=f"llm listwise (window {step + 1})").texts
            for q, (start, end) in spans.items():
                parsed = parse_permutation(answers[q], end - start)
                shown = order[q][start:end]
                order[q][start:end] = [shown[i] for i in parsed.order]
                self.counts["windows"] += 1
                for name in ("repeated", "invented", "missing"):
                    self.counts[name] += getattr(parsed, name)
                self.counts["unparsed"] += parsed.unparsed
        out = {}
        for q, docs in groups.items():
            rank = {d: r for r, d in enumerate(order[q], 1)}
            values = [1.0 / rank[d] if o.score == "reciprocal-rank" else -float(rank[d]) for d in docs]
            out[q] = np.asarray(values, dtype=np.float32)
        return out

    def retrieve(self, queries: dict[str, str], k: int, *, first_stage: Run | None = None, **_: object) -> Run:
        """BM25's top ``rerank_depth`` (or ``first_stage``'s) re-ranked by the listwise ranking."""
        return rerank_first_stage(self, queries, self.options.rerank_depth, first_stage)
