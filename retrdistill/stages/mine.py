"""Stage ``mine``: candidate negatives per training query, written as ``candidates.jsonl``.

Each line: ``{"qid", "query", "positives": [doc ids], "negatives": [doc ids]}``. Negatives are drawn from the
miner's ranks ``rank_min``..``rank_max`` (1-based, after known positives are removed), either the top ones
(``sampling: top``) or a seeded random sample (``sampling: random``).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrdistill import progress, registry
from retrdistill.artefacts import atomic_path, fingerprint_obj
from retrdistill.data.beir import open_collection
from retrdistill.kinds import CandidateGroup, candidate_row, read_queries
from retrdistill.stages.base import StageResult, StageSpec, StepInput, Work, config_dict, upstream

log = logging.getLogger(__name__)


@dataclass
class MineConfig:
    miner: str = field(default="bm25", metadata={"help": "Candidate retriever."})
    options: dict[str, Any] = field(default_factory=dict, metadata={"help": "Options of the miner, e.g. -o k1=0.9."})
    depth: int = field(default=100, metadata={"help": "Candidates retrieved per query."})
    negatives: int = field(default=8, metadata={"help": "Negatives kept per query."})
    rank_min: int = field(default=1,
                          metadata={"help": "Best rank a negative may have (1-based, known positives removed)."})
    rank_max: int = field(default=100, metadata={"help": "Worst rank a negative may have."})
    sampling: str = field(default="random",
                          metadata={"help": "random (a seeded sample of the ranks in range) or top (the best-ranked)."})
    seed: int = field(default=13, metadata={"help": "Seed of the random sampling."})
    batch_queries: int = field(default=256, metadata={"help": "Queries searched per miner call."})

    def __post_init__(self) -> None:
        registry.entry("miner", self.miner)
        if self.sampling not in ("random", "top"):
            raise ValueError("sampling must be 'random' or 'top'")
        if not 1 <= self.rank_min <= self.rank_max:
            raise ValueError("need 1 <= rank_min <= rank_max")
        if self.negatives < 1 or self.depth < 1:
            raise ValueError("negatives and depth must be positive")


def run_mine(cfg: MineConfig, collection_dir: str | Path, queries_dir: str | Path, out_dir: str | Path, *,
             cache_dir: str | Path, force: bool = False) -> StageResult:
    return prepare_mine(cfg, collection_dir, queries_dir, out_dir, cache_dir=cache_dir).run(force=force)


def prepare_mine(cfg: MineConfig, collection_dir: str | Path, queries_dir: str | Path, out_dir: str | Path, *,
                 cache_dir: str | Path) -> Work:
    collection = open_collection(collection_dir, Path(cache_dir) / "corpora")
    queries_manifest = upstream(queries_dir, "queries")
    miner = registry.build("miner", cfg.miner, cfg.options, corpus=collection.corpus, cache_dir=Path(cache_dir))
    inputs = {"queries": queries_manifest.fingerprint, "miner": fingerprint_obj(miner.fingerprint())}

    def body(tmp: Path) -> dict[str, Any]:
        train = read_queries(queries_dir)
        qids = list(train.queries)
        short = 0
        written = 0
        bar = progress.bar(len(qids), f"mine ({cfg.miner})", "q")
        with atomic_path(tmp / "candidates.jsonl") as part, open(part, "w", encoding="utf-8") as fh:
            for start in range(0, len(qids), cfg.batch_queries):
                batch = qids[start:start + cfg.batch_queries]
                hits = miner.search({q: train.queries[q] for q in batch}, cfg.depth)
                for qid in batch:
                    positives = sorted(train.positives[qid])
                    negatives = _pick_negatives(cfg, qid, [d for d, _ in hits.get(qid, [])], set(positives))
                    short += len(negatives) < cfg.negatives
                    fh.write(candidate_row(CandidateGroup(qid, train.queries[qid], positives, negatives)))
                    written += 1
                bar.update(len(batch))
        bar.close()
        if short:
            log.warning("mine: %d of %d queries got fewer than %d negatives", short, written, cfg.negatives)
        return {"queries": written, "queries_with_fewer_negatives": short}

    return Work("mine", "candidates", Path(out_dir), config_dict(cfg), inputs, body)


def _pick_negatives(cfg: MineConfig, qid: str, ranked: list[str], positives: set[str]) -> list[str]:
    pool = [d for d in ranked if d not in positives][cfg.rank_min - 1:cfg.rank_max]
    if cfg.sampling == "top" or len(pool) <= cfg.negatives:
        return pool[:cfg.negatives]
    rng = random.Random(f"{cfg.seed}:{qid}")
    return [pool[i] for i in sorted(rng.sample(range(len(pool)), cfg.negatives))]


STAGE = StageSpec(
    name="mine", config=MineConfig, output="candidates",
    inputs={"queries": StepInput(("queries",), "the training queries to mine for")},
    prepare=lambda cfg, refs, ctx: prepare_mine(cfg, ctx.collection, refs["queries"], ctx.out_dir,
                                                cache_dir=ctx.cache_dir),
    summary="candidate negatives per training query from a registered miner",
)
