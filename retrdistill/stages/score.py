"""Stage ``score``: a teacher scores every (query, positive, negatives) group; ``scores.jsonl`` out.

Each line: ``{"qid", "query", "docids": [positives..., negatives...], "scores": [...], "positives": n}``.
Scores go through the on-disk cache first (``cache_dir/scores.sqlite``), so a re-run or a resumed run
scores only the pairs that are missing; the counts in the manifest say how many were scored and reused.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrdistill import progress, registry
from retrdistill.artefacts import atomic_path, fingerprint_obj
from retrdistill.data.beir import open_collection
from retrdistill.errors import DataError
from retrdistill.stages.base import StageResult, config_dict, execute, upstream
from retrdistill.stages.mine import read_candidates
from retrdistill.teachers.cache import ScoreCache

log = logging.getLogger(__name__)


@dataclass
class ScoreConfig:
    teacher: str = "bi-encoder"
    options: dict[str, Any] = field(default_factory=dict)
    batch_queries: int = 64

    def __post_init__(self) -> None:
        registry.entry("teacher", self.teacher)


@dataclass
class ScoredGroup:
    qid: str
    query: str
    docids: list[str]
    scores: list[float]
    positives: int


def build_teacher(cfg: ScoreConfig, collection_dir: str | Path, cache_dir: str | Path):
    collection = open_collection(collection_dir, Path(cache_dir) / "corpora")
    return registry.build("teacher", cfg.teacher, cfg.options, corpus=collection.corpus, cache_dir=Path(cache_dir))


def run_score(cfg: ScoreConfig, collection_dir: str | Path, candidates_dir: str | Path, out_dir: str | Path, *,
              cache_dir: str | Path, force: bool = False) -> StageResult:
    teacher = build_teacher(cfg, collection_dir, cache_dir)
    teacher_fp = fingerprint_obj(teacher.fingerprint())
    inputs = {"candidates": upstream(candidates_dir, "mine").fingerprint, "teacher": teacher_fp}
    config = config_dict(cfg)
    config.pop("batch_queries")  # does not change the output

    def body(tmp: Path) -> dict[str, Any]:
        cache = ScoreCache(Path(cache_dir) / "scores.sqlite", teacher_fp)
        scored = reused = groups = 0
        batch: list = []
        total = sum(1 for _ in open(Path(candidates_dir) / "candidates.jsonl", encoding="utf-8"))
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
                    fh.write(json.dumps({"qid": g.qid, "query": g.query, "docids": docids,
                                         "scores": [known[g.qid][d] for d in docids], "positives": len(g.positives)},
                                        ensure_ascii=False) + "\n")
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

    return execute("score", out_dir, config, inputs, body, force=force)


def read_scores(folder: str | Path):
    path = Path(folder) / "scores.jsonl"
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            try:
                row = json.loads(line)
                yield ScoredGroup(row["qid"], row["query"], row["docids"], row["scores"], row["positives"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DataError(path, lineno, f"expected a scores row with qid, query, docids, scores, positives ({exc})") from None
