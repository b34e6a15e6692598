"""Stage ``score``: a teacher scores every (query, positive, negatives) group; ``scores.jsonl`` out.

Each line: ``{"qid", "query", "docids": [positives..., negatives...], "scores": [...], "positives": n}``.
Scores go through the on-disk cache first (``cache_dir/scores.sqlite``), so a re-run or a resumed run
scores only the pairs that are missing; the counts in the manifest say how many were scored and reused.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrdistill import progress, registry
from retrdistill.artefacts import atomic_path, fingerprint_obj, upstream
from retrdistill.data.beir import open_collection
from retrdistill.kinds import EXTRA_PASSAGES, ScoredGroup, count_rows, read_candidates, scored_row
from retrdistill.llm.passages import passages_file, with_generated
from retrdistill.shards import SHARD_HELP, SHARD_LAYOUT, parse_shard, shard_file, shard_rows, take_rows
from retrdistill.stages.base import StageResult, StageSpec, StepInput, Work, config_dict, keyed_part_config
from retrdistill.score_cache import CachedScorer, ScoreCache, score_through_cache
from retrdistill.validate import check_ranges

log = logging.getLogger(__name__)


@dataclass
class ScoreConfig:
    teacher: str = field(default="bi-encoder", metadata={"help": "Teacher kind."})
    options: dict[str, Any] = field(default_factory=dict,
                                    metadata={"help": "Teacher options, e.g. -o model=offline:all-MiniLM-L6-v2.",
                                              "part": {"kind": "teacher", "name": "teacher"}})
    batch_queries: int = field(default=64,
                               metadata={"help": "Query groups scored per teacher call (does not change the scores).",
                                         "min": 1})
    shard: str = field(default="", metadata={"help": SHARD_HELP, "omit_default": True})

    def __post_init__(self) -> None:
        registry.entry("teacher", self.teacher)
        parse_shard(self.shard)
        check_ranges(self, "score")


def build_teacher(cfg: ScoreConfig, collection_dir: str | Path, cache_dir: str | Path,
                  candidates_dir: str | Path | None = None):
    """The teacher over the collection's corpus, overlaid with the generated passages the candidates carry."""
    collection = open_collection(collection_dir, Path(cache_dir) / "corpora")
    corpus = with_generated(collection.corpus, candidates_dir)
    return registry.build("teacher", cfg.teacher, cfg.options, corpus=corpus, cache_dir=Path(cache_dir))


def run_score(cfg: ScoreConfig, collection_dir: str | Path, candidates_dir: str | Path, out_dir: str | Path, *,
              cache_dir: str | Path, force: bool = False) -> StageResult:
    return prepare_score(cfg, collection_dir, candidates_dir, out_dir, cache_dir=cache_dir).run(force=force)


def prepare_score(cfg: ScoreConfig, collection_dir: str | Path, candidates_dir: str | Path, out_dir: str | Path, *,
                  cache_dir: str | Path) -> Work:
    teacher = build_teacher(cfg, collection_dir, cache_dir, candidates_dir)
    teacher_fp = fingerprint_obj(teacher.fingerprint())
    inputs = {"candidates": upstream(candidates_dir, "candidates").fingerprint, "teacher": teacher_fp}
    config = keyed_part_config(config_dict(cfg), "options")  # the teacher's fingerprint keys its options
    config.pop("batch_queries")  # does not change the output, but for a shard's rows (cut in whole batches)
    if cfg.shard:
        config[SHARD_LAYOUT] = {"batch_queries": cfg.batch_queries}

    def body(tmp: Path) -> dict[str, Any]:
        shard = parse_shard(cfg.shard)  # a shard scores its rows only, into its own cache file
        cache = ScoreCache(shard_file(Path(cache_dir) / "scores.sqlite", shard), teacher_fp)
        # an ensemble: each member through its own cache entries, combined per whole group (not cached itself)
        combined = CachedScorer(cache.path) if teacher.members() else None
        scored = reused = groups = 0
        batch: list = []
        rows = shard_rows(shard, count_rows(candidates_dir, "candidates.jsonl"), unit=cfg.batch_queries)
        bar = progress.bar(len(rows), f"score ({cfg.teacher})", "q")
        with atomic_path(tmp / "scores.jsonl") as part, open(part, "w", encoding="utf-8") as fh:
            def flush() -> None:
                nonlocal scored, reused, groups
                if combined is not None:
                    whole = {g.qid: g.positives + g.negatives for g in batch}
                    fresh = combined.scores(teacher, {g.qid: g.query for g in batch}, whole)
                    for g in batch:
                        fh.write(scored_row(ScoredGroup(g.qid, g.query, whole[g.qid], fresh[g.qid].tolist(),
                                                        len(g.positives), g.ranks, g.miner_scores)))
                    groups += len(batch)
                    bar.update(len(batch))
                    batch.clear()
                    return
                whole = {g.qid: g.positives + g.negatives for g in batch}
                known, fresh = score_through_cache(teacher, cache, {g.qid: g.query for g in batch}, whole)
                scored += fresh
                reused += sum(map(len, whole.values())) - fresh
                for g in batch:
                    docids = whole[g.qid]
                    fh.write(scored_row(ScoredGroup(g.qid, g.query, docids, [known[g.qid][d] for d in docids],
                                                    len(g.positives), g.ranks, g.miner_scores)))
                groups += len(batch)
                bar.update(len(batch))
                batch.clear()

            for group in take_rows(read_candidates(candidates_dir), rows):
                batch.append(group)
                if len(batch) >= cfg.batch_queries:
                    flush()
            if batch:
                flush()
        bar.close()
        cache.close()
        if combined is not None:
            scored, reused = combined.scored, combined.from_cache
            combined.close()
        generated = passages_file(candidates_dir)
        if generated is not None:  # generated passages travel on with the scores, for training
            with atomic_path(tmp / EXTRA_PASSAGES) as part:
                shutil.copyfile(generated, part)
        counts = {"groups": groups, "pairs_scored": scored, "pairs_from_cache": reused}
        stats = teacher.stats()
        if stats:
            counts["teacher"] = stats
        return counts

    return Work("score", "scores", Path(out_dir), config, inputs, body, settings=config_dict(cfg))


STAGE = StageSpec(
    name="score", config=ScoreConfig, output="scores",
    inputs={"candidates": StepInput(("candidates",), "the mined candidates to score")},
    prepare=lambda cfg, refs, ctx: prepare_score(cfg, ctx.collection, refs["candidates"], ctx.out_dir,
                                                 cache_dir=ctx.cache_dir),
    summary="a registered teacher scores every candidate (cached)",
)
