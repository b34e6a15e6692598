"""Stage ``mine``: candidate negatives per training query, written as ``candidates.jsonl``.

Each line: ``{"qid", "query", "positives": [doc ids], "negatives": [doc ids]}``. Negatives are drawn from the
miner's ranks ``rank_min``..``rank_max`` (1-based, after known positives are removed), either the top ones
(``sampling: top``) or a seeded random sample (``sampling: random``).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrdistill import progress, registry
from retrdistill.artefacts import atomic_path
from retrdistill.data.beir import open_collection
from retrdistill.errors import DataError
from retrdistill.stages.base import StageResult, config_dict, execute, upstream
from retrdistill.stages.queries import read_training_queries

log = logging.getLogger(__name__)


@dataclass
class MineConfig:
    miner: str = "bm25"
    options: dict[str, Any] = field(default_factory=dict)
    depth: int = 100
    negatives: int = 8
    rank_min: int = 1
    rank_max: int = 100
    sampling: str = "random"
    seed: int = 13
    batch_queries: int = 256

    def __post_init__(self) -> None:
        registry.entry("miner", self.miner)
        if self.sampling not in ("random", "top"):
            raise ValueError("sampling must be 'random' or 'top'")
        if not 1 <= self.rank_min <= self.rank_max:
            raise ValueError("need 1 <= rank_min <= rank_max")
        if self.negatives < 1 or self.depth < 1:
            raise ValueError("negatives and depth must be positive")


@dataclass
class CandidateGroup:
    qid: str
    query: str
    positives: list[str]
    negatives: list[str]


def run_mine(cfg: MineConfig, collection_dir: str | Path, queries_dir: str | Path, out_dir: str | Path, *,
             cache_dir: str | Path, force: bool = False) -> StageResult:
    collection = open_collection(collection_dir, Path(cache_dir) / "corpora")
    queries_manifest = upstream(queries_dir, "queries")
    miner = registry.build("miner", cfg.miner, cfg.options, corpus=collection.corpus, cache_dir=Path(cache_dir))
    from retrdistill.artefacts import fingerprint_obj

    inputs = {"queries": queries_manifest.fingerprint, "miner": fingerprint_obj(miner.fingerprint())}

    def body(tmp: Path) -> dict[str, Any]:
        train = read_training_queries(queries_dir)
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
                    fh.write(json.dumps({"qid": qid, "query": train.queries[qid], "positives": positives,
                                         "negatives": negatives}, ensure_ascii=False) + "\n")
                    written += 1
                bar.update(len(batch))
        bar.close()
        if short:
            log.warning("mine: %d of %d queries got fewer than %d negatives", short, written, cfg.negatives)
        return {"queries": written, "queries_with_fewer_negatives": short}

    return execute("mine", out_dir, config_dict(cfg), inputs, body, force=force)


def _pick_negatives(cfg: MineConfig, qid: str, ranked: list[str], positives: set[str]) -> list[str]:
    pool = [d for d in ranked if d not in positives][cfg.rank_min - 1:cfg.rank_max]
    if cfg.sampling == "top" or len(pool) <= cfg.negatives:
        return pool[:cfg.negatives]
    rng = random.Random(f"{cfg.seed}:{qid}")
    return [pool[i] for i in sorted(rng.sample(range(len(pool)), cfg.negatives))]


def read_candidates(folder: str | Path) -> Iterator[CandidateGroup]:
    path = Path(folder) / "candidates.jsonl"
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            try:
                row = json.loads(line)
                yield CandidateGroup(row["qid"], row["query"], row["positives"], row["negatives"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DataError(path, lineno, f"expected a candidates row with qid, query, positives, negatives ({exc})") from None
