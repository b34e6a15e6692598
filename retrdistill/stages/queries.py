"""Stage ``queries``: training queries and their positives, written as ``queries.jsonl`` + ``qrels.tsv``."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrdistill import registry
from retrdistill.artefacts import atomic_path, fingerprint_obj
from retrdistill.data.beir import Collection, open_collection
from retrdistill.data.pseudo_queries import TrainingQueries, check_no_eval_leak
from retrdistill.stages.base import StageResult, config_dict, execute, file_input

log = logging.getLogger(__name__)


@dataclass
class QueriesConfig:
    source: str = "inverse-cloze"
    options: dict[str, Any] = field(default_factory=dict)
    eval_split: str = "test"  # its queries are never training queries...
    allow_eval_queries: bool = False  # ...unless forced

    def __post_init__(self) -> None:
        registry.entry("query_generator", self.source)


def run_queries(cfg: QueriesConfig, collection_dir: str | Path, out_dir: str | Path, *, cache_dir: str | Path,
                force: bool = False) -> StageResult:
    collection = open_collection(collection_dir, Path(cache_dir) / "corpora")
    generator = registry.build("query_generator", cfg.source, cfg.options)
    inputs = {"corpus": collection.corpus.fingerprint, "queries": file_input(collection.root / "queries.jsonl")}
    for split in collection.splits():
        inputs[f"qrels/{split}"] = file_input(collection.qrels_path(split))
    for i, extra in enumerate(getattr(generator, "input_files", lambda: [])()):
        inputs[f"file{i}"] = file_input(extra)

    def body(tmp: Path) -> dict[str, Any]:
        train = generator.generate(collection)
        leaked = check_no_eval_leak(train, _eval_queries(collection, cfg.eval_split), cfg.eval_split,
                                    allowed=cfg.allow_eval_queries)
        write_training_queries(tmp, train)
        return {"queries": len(train.queries), "positives": sum(len(p) for p in train.positives.values()),
                "eval_queries_used": leaked}

    return execute("queries", out_dir, config_dict(cfg), inputs, body, force=force)


def _eval_queries(collection: Collection, split: str) -> dict[str, str]:
    if split not in collection.splits():
        return {}
    qrels, _ = collection.qrels(split)
    return {q: collection.queries[q] for q in qrels if q in collection.queries}


def write_training_queries(folder: Path, train: TrainingQueries) -> None:
    with atomic_path(folder / "queries.jsonl") as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for qid, text in train.queries.items():
            fh.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    with atomic_path(folder / "qrels.tsv") as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for qid, docs in train.positives.items():
            for doc_id, grade in docs.items():
                fh.write(f"{qid}\t{doc_id}\t{grade}\n")


def read_training_queries(folder: str | Path) -> TrainingQueries:
    from retrdistill.data.beir import load_qrels, load_queries

    folder = Path(folder)
    queries, _ = load_queries(folder / "queries.jsonl")
    positives, _ = load_qrels(folder / "qrels.tsv", query_ids=queries)
    return TrainingQueries(queries, positives)


__all__ = ["QueriesConfig", "run_queries", "read_training_queries", "fingerprint_obj"]
