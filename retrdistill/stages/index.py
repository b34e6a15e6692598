"""Stage ``index``: encode the corpus with a model (the trained student by default) and index it.

The registered indexer does both (see :class:`retrdistill.parts.Indexer`): it refuses a model of the wrong family
before anything is encoded, encodes the corpus (dense FAISS indexers through the shared embedding cache, the
sparse indexer through its postings cache) and saves its files. The folder (under ``indexes/`` by default)
holds the indexer's files (``index.faiss``; ``sparse.json`` + ``postings.*.npy``), ``docids.txt`` (row -> doc
id), ``index.json`` (indexer, model, corpus, encoding backend, what the indexer records of the encoding) and the
manifest; :class:`retrdistill.Retriever` loads it, encoding queries on the index's backend by default.

With ``shard: I/N`` the step encodes and indexes only a contiguous slice of the corpus, in whole encoding blocks
of the indexer (``shard_size`` passages, :mod:`retrdistill.shards`), and records its corpus rows in
``index.json``; ``retrdistill merge`` combines the N shard folders into one sharded index
(:mod:`retrdistill.indexers.sharded`) whose top-k equals the unsharded index's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrdistill import registry
from retrdistill.artefacts import atomic_path, fingerprint_obj, write_json_atomic
from retrdistill.data.beir import open_collection
from retrdistill.encoding.backends import backend_info, output_key
from retrdistill.errors import ConfigError
from retrdistill.indexers.model_check import check_model
from retrdistill.indexers.references import portable
from retrdistill.models import model_fingerprint
from retrdistill.shards import SHARD_HELP, SHARD_LAYOUT, corpus_slice, parse_shard, shard_rows
from retrdistill.stages.base import StageResult, StageSpec, StepInput, Work, config_dict, keyed_part_config
from retrdistill.validate import check_ranges


@dataclass
class IndexConfig:
    indexer: str = field(default="faiss-flat", metadata={"help": "Index family."})
    options: dict[str, Any] = field(default_factory=dict,
                                    metadata={"help": "Options of the indexer, e.g. -o nlist=1024.",
                                              "part": {"kind": "indexer", "name": "indexer"}})
    batch_size: int = field(default=64, metadata={"help": "Passages per encoding batch.", "min": 1})
    max_seq_length: int | None = field(default=None,
                                       metadata={"help": "Token limit per passage; default: the model's own.",
                                                 "min": 1})
    backend: str = field(default="torch", metadata={
        "help": "Encoding backend: torch, or a CPU fast path: onnx, openvino (fp32, equal to torch), onnx-int8, "
                "openvino-bf16 (faster, embeddings change slightly; see docs/fast-paths.md).",
        "omit_default": True})
    shard: str = field(default="", metadata={"help": SHARD_HELP.replace("input rows", "corpus passages"),
                                             "omit_default": True})

    def __post_init__(self) -> None:
        from retrdistill.encoding.backends import BACKENDS

        registry.entry("indexer", self.indexer)
        parse_shard(self.shard)
        if self.backend not in BACKENDS:
            raise ConfigError(f"index backend {self.backend!r}: expected one of {', '.join(BACKENDS)}")
        check_ranges(self, "index")


def run_index(cfg: IndexConfig, collection_dir: str | Path, model: str, out_dir: str | Path, *,
              cache_dir: str | Path, force: bool = False) -> StageResult:
    return prepare_index(cfg, collection_dir, model, out_dir, cache_dir=cache_dir).run(force=force)


def prepare_index(cfg: IndexConfig, collection_dir: str | Path, model: str, out_dir: str | Path, *,
                  cache_dir: str | Path) -> Work:
    """``model``: the encoder (a student artefact's model folder, a path, a hub name or offline:NAME)."""
    model = str(model)
    collection = open_collection(collection_dir, Path(cache_dir) / "corpora")
    whole = collection.corpus
    indexer = registry.build("indexer", cfg.indexer, cfg.options)
    check_model(indexer, model)  # a model that exists already: refused now, before planning goes on
    shard = parse_shard(cfg.shard)
    rows = _shard_rows(cfg, indexer, shard, len(whole))
    corpus = corpus_slice(whole, rows)
    model_fp = model_fingerprint(model)
    inputs = {"corpus": whole.fingerprint, "model": model_fp, "indexer": fingerprint_obj(indexer.fingerprint())}
    # the model by content and the indexer by its fingerprint (output-neutral options such as shard_size left out);
    # a shard's corpus rows are keyed where they depend on the encoding block
    config = keyed_part_config(config_dict(cfg), "options")
    config.pop("batch_size")
    if shard is not None:
        config[SHARD_LAYOUT] = {"rows": [rows.start, rows.stop]}
    # the backend keys the artefact only where it changes the embeddings (int8, bf16); fp32 ONNX / OpenVINO build
    # the index torch builds (they share its embedding cache), so they keep its key
    config.pop("backend", None)
    changes = output_key(cfg.backend)  # also refuses a backend whose runtime is missing, before anything runs
    if changes is not None:
        config["backend"] = changes
    out_dir = Path(out_dir)

    def body(tmp: Path) -> dict[str, Any]:
        check_model(indexer, model)  # an upstream step's model, written since planning: before any encoding
        encoder = indexer.load_model(model, max_seq_length=cfg.max_seq_length, backend=cfg.backend)
        built = indexer.index_corpus(encoder, corpus, tmp, model_ref=model, cache_dir=Path(cache_dir),
                                     batch_size=cfg.batch_size, max_seq_length=cfg.max_seq_length)
        with atomic_path(tmp / "docids.txt") as part, open(part, "w", encoding="utf-8") as fh:
            for start in range(0, len(corpus), 100_000):
                fh.writelines(d + "\n" for d in corpus.dataset[start:start + 100_000]["_id"])
        write_json_atomic(tmp / "index.json", {
            "indexer": cfg.indexer,
            "options": cfg.options,
            "model": portable(model, out_dir),
            "model_fingerprint": model_fp,  # a search refuses a model that no longer matches (retrdistill.retriever)
            "model_type": indexer.model_type,
            "max_seq_length": cfg.max_seq_length,
            "backend": cfg.backend,
            "backend_detail": backend_info(encoder),
            **built.info,
            "corpus": portable(str(whole.path), out_dir),
            "corpus_fingerprint": whole.fingerprint,
            "documents": len(corpus),
            **({"shard": shard.label, "rows": [rows.start, rows.stop], "corpus_documents": len(whole)}
               if shard is not None else {}),
        })
        counts = {k: v for k, v in built.info.items() if isinstance(v, int) and not isinstance(v, bool)}
        return {"documents": len(corpus), **counts, "index_bytes": indexer.index_bytes(tmp),
                "backend": backend_info(encoder)}

    return Work("index", "index", out_dir, config, inputs, body, settings={**config_dict(cfg), "model": model})


def _shard_rows(cfg: IndexConfig, indexer, shard, total: int) -> range:
    """The corpus rows this step indexes: all of them, or the shard's whole encoding blocks (ConfigError where
    the indexer cannot be sharded or the shard would be empty)."""
    if shard is None:
        return range(total)
    block = indexer.encoding_block()
    if block is None:
        raise ConfigError(f"index shard {shard.label}: indexer {cfg.indexer!r} cannot be sharded (it has no "
                          f"encoding block to split the corpus by); run it unsharded")
    rows = shard_rows(shard, total, unit=block)
    if not rows:
        blocks = -(-total // block)
        raise ConfigError(f"index shard {shard.label}: no passages to index: the corpus's {total} passages make "
                          f"{blocks} encoding block(s) of shard_size {block}, fewer than {shard.count} shards; "
                          f"use at most {blocks} shards or a smaller -o shard_size")
    return rows


__all__ = ["IndexConfig", "prepare_index", "run_index"]


STAGE = StageSpec(
    name="index", config=IndexConfig, output="index",
    inputs={"model": StepInput(("student",), "the encoder: @train-step, or a path, hub name or offline:NAME",
                               literal=True)},
    prepare=lambda cfg, refs, ctx: prepare_index(cfg, ctx.collection, refs["model"], ctx.out_dir,
                                                 cache_dir=ctx.cache_dir),
    summary="encode the corpus and build a registered index",
)
