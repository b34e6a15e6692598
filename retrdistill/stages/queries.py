"""Stage ``queries``: training queries and their positives, written as ``queries.jsonl`` + ``qrels.tsv``.

With ``shard: I/N`` the step writes the source's part ``I`` (:meth:`retrdistill.parts.QuerySource.shard`: the
``llm`` source generates for its contiguous part of the sampled passages, in whole generation batches; a cheap
deterministic source generates everything and keeps its contiguous range of queries; any other refuses), and
``retrdistill merge`` combines the N parts through the source's ``combine`` into the unsharded artefact.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrdistill import registry
from retrdistill.data.beir import Collection, open_collection
from retrdistill.pseudo_queries import check_no_eval_leak
from retrdistill.kinds import write_queries
from retrdistill.shards import SHARD_HELP, parse_shard
from retrdistill.artefacts import fingerprint_obj
from retrdistill.stages.base import StageResult, StageSpec, Work, config_dict, file_input, keyed_part_config

log = logging.getLogger(__name__)


@dataclass
class QueriesConfig:
    source: str = field(default="inverse-cloze", metadata={"help": "Where training queries come from."})
    options: dict[str, Any] = field(default_factory=dict,
                                    metadata={"help": "Options of the query source, e.g. -o num_queries=2000.",
                                              "part": {"kind": "query_generator", "name": "source"}})
    eval_split: str = field(default="test",  # its queries are never training queries...
                            metadata={"help": "Split whose queries are never training queries."})
    allow_eval_queries: bool = field(default=False,  # ...unless forced
                                     metadata={"help": "Train on the evaluation split's queries anyway "
                                                       "(invalidates the evaluation)."})
    shard: str = field(default="", metadata={"help": SHARD_HELP, "omit_default": True})

    def __post_init__(self) -> None:
        registry.entry("query_generator", self.source)
        parse_shard(self.shard)


def run_queries(cfg: QueriesConfig, collection_dir: str | Path, out_dir: str | Path, *, cache_dir: str | Path,
                force: bool = False) -> StageResult:
    return prepare_queries(cfg, collection_dir, out_dir, cache_dir=cache_dir).run(force=force)


def prepare_queries(cfg: QueriesConfig, collection_dir: str | Path, out_dir: str | Path, *,
                    cache_dir: str | Path) -> Work:
    collection = open_collection(collection_dir, Path(cache_dir) / "corpora")
    generator = registry.build("query_generator", cfg.source, cfg.options, cache_dir=Path(cache_dir))
    inputs = {"corpus": collection.corpus.fingerprint}
    if (collection.root / "queries.jsonl").is_file():  # a corpus-only folder has none: label-free queries
        inputs["queries"] = file_input(collection.root / "queries.jsonl")
    for split in collection.splits():
        inputs[f"qrels/{split}"] = file_input(collection.qrels_path(split))
    for i, extra in enumerate(generator.input_files()):
        inputs[f"file{i}"] = file_input(extra)
    inputs["source"] = fingerprint_obj(generator.fingerprint())  # models by content, every output option

    def body(tmp: Path) -> dict[str, Any]:
        shard = parse_shard(cfg.shard)
        train = generator.generate(collection) if shard is None else generator.shard(collection, shard)
        leaked = check_no_eval_leak(train, eval_queries(collection, cfg.eval_split), cfg.eval_split,
                                    allowed=cfg.allow_eval_queries)
        write_queries(tmp, train)
        return {"queries": len(train.queries), "positives": sum(len(p) for p in train.positives.values()),
                "eval_queries_used": leaked, **generator.counts()}

    return Work("queries", "queries", Path(out_dir), keyed_part_config(config_dict(cfg), "options"), inputs, body,
                settings=config_dict(cfg))


def eval_queries(collection: Collection, split: str) -> dict[str, str]:
    if split not in collection.splits():
        return {}
    qrels, _ = collection.qrels(split)
    return {q: collection.queries[q] for q in qrels if q in collection.queries}


__all__ = ["QueriesConfig", "eval_queries", "prepare_queries", "run_queries"]


STAGE = StageSpec(
    name="queries", config=QueriesConfig, output="queries", inputs={},
    prepare=lambda cfg, refs, ctx: prepare_queries(cfg, ctx.collection, ctx.out_dir, cache_dir=ctx.cache_dir),
    summary="training queries and their positives (a generator, a train split or files)",
)
