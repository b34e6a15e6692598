"""Eval system ``rerank``: the run of a system listed before it, its top ``depth`` re-ranked by a teacher.

    systems:
      - {name: BM25, type: bm25}
      - {name: BM25 + distilled CE, type: rerank,
         options: {system: BM25, teacher: cross-encoder, options: {model: "@ce"}, depth: 100}}

``system`` names an earlier system of the same evaluation (its output reaches :meth:`RerankSystem.run` as
``earlier``); ``teacher`` / ``options`` are any registered teacher and its options (a cross-encoder student by
step reference, a bi-encoder scoring from its cached passage embeddings, a fusion). The re-ranked run is
:func:`retrdistill.rerank.rerank_run`'s; the eval step writes it as its own TREC run.

Cost, as serving the stack would cost on this machine: ``ms_per_query`` is the first stage's plus the
re-ranking's (scoring ``depth`` pairs per query, the re-ranker loaded and warmed up outside the timing);
``parameters`` adds the re-ranker's to the first stage's; ``index_bytes`` and ``encode_passages_per_s`` are the
first stage's (a cross-encoder stores and encodes nothing at indexing time; a bi-encoder re-ranker scores from
passage embeddings encoded beforehand, whose cost is not counted here). ``results.json`` also records
``first_stage_ms_per_query``, ``rerank_ms_per_query``, ``queries_per_s`` (1000 / ``ms_per_query``) and
``rerank_depth``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from retrdistill.errors import ConfigError
from retrdistill.systems import OptionsSystem, SystemOutput

log = logging.getLogger(__name__)


class RerankSystem(OptionsSystem):
    """An earlier system's run re-ranked to ``depth`` by a registered teacher."""

    @dataclass
    class Options:
        system: str = ""  # the earlier system whose run is re-ranked
        teacher: str = "cross-encoder"
        # the teacher's options, e.g. {model: "@ce"}
        options: dict[str, Any] = field(default_factory=dict, metadata={"part": {"kind": "teacher", "name": "teacher"}})
        depth: int = field(default=100, metadata={"min": 1})

        def __post_init__(self) -> None:
            from retrdistill import registry

            if not self.system:
                raise ValueError("'system' (the name of a system listed before this one) is required")
            registry.entry("teacher", self.teacher)
            if self.depth < 1:
                raise ValueError(f"depth must be positive, got {self.depth}")

    example_options: ClassVar[dict[str, Any]] = {"system": "A", "options": {"model": "{tiny_cross_encoder}"}}
    example_variants: ClassVar[dict[str, Any]] = {"system": "B", "teacher": "bi-encoder",
                                                  "options": {"model": "offline:all-MiniLM-L6-v2"}}

    def combines(self) -> list[str]:
        """The re-ranked system."""
        return [self.options.system]

    def run(self, corpus, queries: dict[str, str], k: int, cache_dir: Path, measure_cost: bool,
            earlier: dict[str, SystemOutput] | None = None) -> SystemOutput:
        from retrdistill import registry
        from retrdistill.artefacts import fingerprint_obj
        from retrdistill.evaluation.runs import truncate
        from retrdistill.rerank import rerank_run

        o = self.options
        earlier = earlier or {}
        if o.system not in earlier:
            raise ConfigError(f"eval system 'rerank': {o.system!r} must be evaluated before it; evaluated before: "
                              f"{', '.join(earlier) or 'none'}")
        first = earlier[o.system]
        if k < o.depth:
            log.warning("rerank %s: the evaluation retrieves %d per query, fewer than the re-ranking depth %d: "
                        "only the top %d are re-ranked", o.system, k, o.depth, k)
        short = sum(1 for q in queries if len(first.run.get(q, {})) < min(o.depth, k))
        if short:
            log.warning("rerank %s: %d of %d queries have fewer than %d first-stage passages", o.system, short,
                        len(queries), min(o.depth, k))
        teacher = registry.build("teacher", o.teacher, o.options, corpus=corpus, cache_dir=Path(cache_dir))
        warm = next(((q, docs) for q, docs in first.run.items() if q in queries and docs), None)
        if warm is not None:  # load the model (and any cached passage embeddings) outside the timing
            teacher.score_groups({warm[0]: queries[warm[0]]}, {warm[0]: list(warm[1])[:2]})
        done = rerank_run(teacher.score_groups, queries, first.run, min(o.depth, k))
        first_ms = first.cost.get("ms_per_query")
        cost: dict[str, Any] = {"rerank_ms_per_query": done.ms_per_query, "rerank_depth": min(o.depth, k),
                                "first_stage_ms_per_query": first_ms}
        if first_ms is not None:
            cost["ms_per_query"] = first_ms + done.ms_per_query
            cost["queries_per_s"] = 1000.0 / cost["ms_per_query"] if cost["ms_per_query"] > 0 else None
        model = getattr(teacher, "model", None)
        own = _parameters(model)
        if own is not None or first.cost.get("parameters") is not None:
            cost["parameters"] = (first.cost.get("parameters") or 0) + (own or 0)
        for name in ("index_bytes", "encode_passages_per_s"):
            if first.cost.get(name) is not None:
                cost[name] = first.cost[name]
        log.info("rerank %s with %s: %d pairs, %.1f ms/query re-ranking (+ %s ms/query first stage)", o.system,
                 o.teacher, done.pairs, done.ms_per_query, "?" if first_ms is None else f"{first_ms:.1f}")
        provenance = {f"{o.system}:{key}": value for key, value in first.provenance.items()}
        provenance["reranker"] = fingerprint_obj(teacher.fingerprint())[:16]
        return SystemOutput(truncate(done.run, k), cost, provenance)


def _parameters(model: Any) -> int | None:
    if model is None or not hasattr(model, "parameters"):
        return None
    try:
        from retrdistill.encoding.backends import parameter_count

        return parameter_count(model)
    except ImportError:
        return int(sum(p.numel() for p in model.parameters()))
