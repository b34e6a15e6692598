"""Stage ``score``: a teacher scores every (query, positive, negatives) group; ``scores.jsonl`` out.

Each line: ``{"qid", "query", "docids": [positives..., negatives...], "scores": [...], "positives": n}``.
Scores go through the on-disk cache first (``cache_dir/scores.sqlite``), so a re-run or a resumed run
scores only the pairs that are missing; the counts in the manifest say how many were scored and reused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrdistill import progress, registry
from retrdistill.artefacts import atomic_path, fingerprint_obj
from retrdistill.data.beir import open_collection
from retrdistill.kinds import ScoredGroup, count_rows, read_candidates, scored_row
from retrdistill.stages.base import StageResult, StageSpec, StepInput, Work, config_dict, upstream
from retrdistill.teachers.cache import ScoreCache

log = logging.getLogger(__name__)


@dataclass
class ScoreConfig:
    teacher: str = field(default="bi-encoder", metadata={"help": "Teacher kind."})
    options: dict[str, Any] = field(default_factory=dict,
                                    metadata={"help": "Teacher options, e.g. -o model=offline:all-MiniLM-L6-v2."})
    batch_queries: int = field(default=64,
                               metadata={"help": "Query groups scored per teacher call (does not change the scores)."})

    def __post_init__(self) -> None:
        registry.entry("teacher", self.teacher)


def build_teacher(cfg: ScoreConfig, collection_dir: str | Path, cache_dir: str | Path):
    collection = open_collection(collection_dir, Path(cache_dir) / "corpora")
    return registry.build("teacher", cfg.teacher, cfg.options, corpus=collection.corpus, cache_dir=Path(cache_dir))


def run_score(cfg: ScoreConfig, collection_dir: str | Path, candidates_dir: str | Path, out_dir: str | Path, *,
              cache_dir: str | Path, force: bool = False) -> StageResult:
    return prepare_score(cfg, collection_dir, candidates_dir, out_dir, cache_dir=cache_dir).run(force=force)


def prepare_score(cfg: ScoreConfig, collection_dir: str | Path, candidates_dir: str | Path, out_dir: str | Path, *,
                  cache_dir: str | Path) -> Work:
    teacher = build_teacher(cfg, collection_dir, cache_dir)
    teacher_fp = fingerprint_obj(teacher.fingerprint())
    inputs = {"candidates": upstream(candidates_dir, "candidates").fingerprint, "teacher": teacher_fp}
    config = config_dict(cfg)
    config.pop("batch_queries")  # does not change the output

    def body(tmp: Path) -> dict[str, Any]:
        cache = ScoreCache(Path(cache_dir) / "scores.sqlite", teacher_fp)
        scored = reused = groups = 0
        batch: list = []
        total = count_rows(candidates_dir, "candidates.jsonl")
        bar = progress.bar(total, f"score ({cfg.teacher})", "q")
        with atomic_path(tmp / "scores.jsonl") as part, open(part, "w", encoding="utf-8") as fh:
            def flush() -> None:
                nonlocal scored, reused, groups
                known = {g.qid: cache.get(g.qid, g.query, g.positives + g.negatives) for g in batch}
                missing = {g.qid: [d for d in g.positives + g.negatives if d not in known[g.qid]] for g in batch}
                missing = {q: docs for q, docs in missing.items() if docs}
                if missing:
                    texts = {g.qid: g.query for g in batch}
                    fresh = teacher.score_groups(texts, missing)
                    rows = [(q, texts[q], d, float(s)) for q, docs in missing.items() for d, s in zip(docs, fresh[q])]
                    cache.put(rows)
                    scored += len(rows)
                    for q, docs in missing.items():
                        known[q].update(cache.get(q, texts[q], docs))
                for g in batch:
                    docids = g.positives + g.negatives
                    reused += sum(1 for d in docids if d not in missing.get(g.qid, ()))
                    fh.write(scored_row(ScoredGroup(g.qid, g.query, docids, [known[g.qid][d] for d in docids],
                                                    len(g.positives))))
                groups += len(batch)
                bar.update(len(batch))
                batch.clear()

            for group in read_candidates(candidates_dir):
                batch.append(group)
                if len(batch) >= cfg.batch_queries:
                    flush()
            if batch:
                flush()
        bar.close()
        cache.close()
        return {"groups": groups, "pairs_scored": scored, "pairs_from_cache": reused}

    return Work("score", "scores", Path(out_dir), config, inputs, body)


STAGE = StageSpec(
    name="score", config=ScoreConfig, output="scores",
    inputs={"candidates": StepInput(("candidates",), "the mined candidates to score")},
    prepare=lambda cfg, refs, ctx: prepare_score(cfg, ctx.collection, refs["candidates"], ctx.out_dir,
                                                 cache_dir=ctx.cache_dir),
    summary="a registered teacher scores every candidate (cached)",
)
