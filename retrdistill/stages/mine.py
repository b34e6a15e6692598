"""Stage ``mine``: candidate negatives per training query, written as ``candidates.jsonl``.

Each line: ``{"qid", "query", "positives": [doc ids], "negatives": [doc ids], "ranks": [...],
"miner_scores": [...]}``: per negative, its 1-based rank in the miner's list (known positives removed) and the
miner's score. Negatives come from ranks ``rank_min``..``rank_max``: the top ones (``sampling: top``), a seeded
random sample (``sampling: random``), or every one of them (``sampling: all``, "mine wide": a ``select`` step
after scoring then filters and samples with the teacher's scores in hand).

With ``shard: I/N`` a step mines only a contiguous range of the training queries, in whole ``batch_queries``
blocks (:mod:`retrdistill.shards`); ``retrdistill merge`` concatenates the N shards into the unsharded
``candidates.jsonl``, byte for byte.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrdistill import progress, registry
from retrdistill.artefacts import atomic_path, fingerprint_obj, upstream
from retrdistill.data.beir import open_collection
from retrdistill.kinds import EXTRA_PASSAGES, CandidateGroup, candidate_row, read_queries
from retrdistill.llm.passages import PREFIX as GENERATED_PREFIX, write_passages
from retrdistill.shards import SHARD_HELP, SHARD_LAYOUT, parse_shard, shard_rows
from retrdistill.stages.base import StageResult, StageSpec, StepInput, Work, config_dict, keyed_part_config
from retrdistill.validate import check_ranges

log = logging.getLogger(__name__)


SAMPLINGS = ("random", "top", "all")


@dataclass
class MineConfig:
    miner: str = field(default="bm25", metadata={"help": "Candidate retriever."})
    options: dict[str, Any] = field(default_factory=dict, metadata={"help": "Options of the miner, e.g. -o k1=0.9.",
                                                                    "part": {"kind": "miner", "name": "miner"}})
    depth: int = field(default=100, metadata={"help": "Candidates retrieved per query.", "min": 1})
    negatives: int = field(default=8, metadata={"help": "Negatives kept per query (ignored by sampling: all).",
                                                "min": 1})
    rank_min: int = field(default=1,
                          metadata={"help": "Best rank a negative may have (1-based, known positives removed).",
                                    "min": 1})
    rank_max: int = field(default=100, metadata={"help": "Worst rank a negative may have.", "min": 1})
    sampling: str = field(default="random",
                          metadata={"help": "random (a seeded sample of the ranks in range), top (the best-ranked) "
                                            "or all (every rank in range, for a select step after scoring)."})
    seed: int = field(default=13, metadata={"help": "Seed of the random sampling."})
    batch_queries: int = field(default=256, metadata={"help": "Queries searched per miner call.", "min": 1})
    shard: str = field(default="", metadata={"help": SHARD_HELP.replace("input rows", "training queries"),
                                             "omit_default": True})

    def __post_init__(self) -> None:
        registry.entry("miner", self.miner)
        parse_shard(self.shard)
        check_ranges(self, "mine")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}")
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
        rows = shard_rows(parse_shard(cfg.shard), len(qids), unit=cfg.batch_queries)  # a shard mines its range
        qids = qids[rows.start:rows.stop]
        short = 0
        written = 0
        kept = 0
        picked_generated: set[str] = set()  # written (not found) passages among the picked negatives
        bar = progress.bar(len(qids), f"mine ({cfg.miner})", "q")
        with atomic_path(tmp / "candidates.jsonl") as part, open(part, "w", encoding="utf-8") as fh:
            for start in range(0, len(qids), cfg.batch_queries):
                batch = qids[start:start + cfg.batch_queries]
                hits = miner.search({q: train.queries[q] for q in batch}, cfg.depth)
                for qid in batch:
                    positives = sorted(train.positives[qid])
                    picked = _pick_negatives(cfg, qid, hits.get(qid, []), set(positives))
                    picked_generated.update(d for _, d, _ in picked if d.startswith(GENERATED_PREFIX))
                    short += cfg.sampling != "all" and len(picked) < cfg.negatives
                    fh.write(candidate_row(CandidateGroup(
                        qid, train.queries[qid], positives, [d for _, d, _ in picked],
                        ranks=[r for r, _, _ in picked], miner_scores=[float(s) for _, _, s in picked])))
                    written += 1
                    kept += len(picked)
                bar.update(len(batch))
        bar.close()
        if short:
            log.warning("mine: %d of %d queries got fewer than %d negatives", short, written, cfg.negatives)
        counts = {"queries": written, "queries_with_fewer_negatives": short, "negatives": kept,
                  "negatives_per_query": round(kept / max(written, 1), 2)}
        if miner.stats():
            counts["miner"] = miner.stats()
        generated = miner.generated_passages()
        if generated:  # training-only passages the miner wrote, beside the candidates
            counts["generated_passages"] = write_passages(
                tmp / EXTRA_PASSAGES, {d: t for d, t in generated.items() if d in picked_generated})
        return counts

    config = keyed_part_config(config_dict(cfg), "options")  # the miner's fingerprint keys its options
    config.pop("batch_queries")  # does not change the output, but for a shard's rows (cut in whole batches)
    if cfg.shard:
        config[SHARD_LAYOUT] = {"batch_queries": cfg.batch_queries}
    return Work("mine", "candidates", Path(out_dir), config, inputs, body, settings=config_dict(cfg))


def _pick_negatives(cfg: MineConfig, qid: str, hits: list[tuple[str, float]],
                    positives: set[str]) -> list[tuple[int, str, float]]:
    """(rank, doc id, miner score) of the negatives kept, best-ranked first; rank is 1-based among the miner's
    hits with the known positives removed."""
    ranked = [(rank, d, s) for rank, (d, s) in enumerate(((d, s) for d, s in hits if d not in positives), start=1)]
    pool = ranked[cfg.rank_min - 1:cfg.rank_max]
    if cfg.sampling == "all":
        return pool
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
