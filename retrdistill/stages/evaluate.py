"""Stage ``eval``: run every system on a collection's evaluation queries and score the runs with ranx.

Writes ``runs/<system>.trec`` (TREC format), ``results.json`` (means, per-query values, counts, cost), the
leaderboard as ``leaderboard.json`` / ``leaderboard.md`` / ``leaderboard.html``, and the manifest last.
Queries that have no judgments are reported, not silently dropped (see retrdistill.evaluation.metrics).

With ``shard: I/N`` every system runs on a contiguous slice of the judged queries (in the collection's order;
a ``run`` system keeps its file's rows for them, a fusion fuses its parts' sliced runs) and the shard's metrics
cover its slice; ``retrdistill merge`` (:func:`merge_eval_shards`) concatenates each system's runs and computes
metrics, significance tests and the leaderboard over all queries, as the unsharded step does.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrdistill import progress, registry
from retrdistill.artefacts import Manifest, write_json_atomic
from retrdistill.data.beir import open_collection
from retrdistill.errors import ConfigError, DataError, ManifestError
from retrdistill.shards import SHARD_HELP, parse_shard, shard_rows
from retrdistill.stages.base import StageResult, StageSpec, Work, config_dict, file_input
from retrdistill.validate import check_ranges

log = logging.getLogger(__name__)


@dataclass
class SystemSpec:
    name: str
    type: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalConfig:
    split: str = field(default="test", metadata={"help": "Evaluation split (qrels/<split>.tsv)."})
    metrics: list[str] = field(default_factory=lambda: ["ndcg@10", "recall@100", "mrr@10", "map"],
                               metadata={"help": "Metric like ndcg@10."})
    depth: int = field(default=100, metadata={"help": "Documents retrieved per query.", "min": 1})
    systems: list[dict[str, Any]] = field(default_factory=lambda: [{"name": "BM25", "type": "bm25"}],
                                          metadata={"part": {"kind": "system", "name": "type", "each": True}})
    baseline: str | None = field(default=None, metadata={"help": "System the others are tested against."})
    stat_test: str = field(default="fisher",
                           metadata={"help": "Significance test: fisher (randomisation) or student (paired t-test)."})
    correction: str = field(default="holm",
                            metadata={"help": "Multiple-comparison correction: holm, bonferroni or none."})
    measure_cost: bool = field(default=True, metadata={"help": "Measure each system's cost (passages/s, ms/query, "
                                                               "index size, parameters)."})
    dataset_name: str | None = field(default=None, metadata={"help": "Dataset name on the leaderboard; default: the "
                                                                     "collection folder's name."})
    # BEIR-format collections, or folders of them, evaluated in one call (per-dataset and mean rows); empty: the
    # one collection the stage is given. Paths are inputs, not config: each dataset's artefact keys on its content.
    datasets: list[str] = field(default_factory=list, metadata={
        "help": "Instead of --collection: a folder of BEIR-format collections (or one collection). "
                "Writes OUT/datasets/<name>/ per dataset and OUT/leaderboard/ with per-dataset and mean rows."})
    shard: str = field(default="", metadata={"help": SHARD_HELP, "omit_default": True})

    def __post_init__(self) -> None:
        from retrdistill.evaluation.metrics import validate_metrics

        check_ranges(self, "eval")
        self.metrics = list(validate_metrics(self.metrics))
        names = []
        for i, raw in enumerate(self.systems):
            if not isinstance(raw, dict) or "name" not in raw or "type" not in raw:
                raise ConfigError(f"eval system #{i + 1}: expected a mapping with 'name' and 'type' (and optional 'options')")
            unknown = set(raw) - {"name", "type", "options"}
            if unknown:
                raise ConfigError(f"eval system {raw['name']!r}: unknown key(s) {', '.join(sorted(unknown))}; expected name, type, options")
            system = registry.build("system", raw["type"], dict(raw.get("options") or {}))
            for part in system.combines():  # a fused system: its parts must be listed before it
                if part not in names:
                    raise ConfigError(f"eval system {raw['name']!r} fuses {part!r}, which is not a system listed "
                                      f"before it; listed before: {', '.join(names) or 'none'}")
            names.append(raw["name"])
        if len(set(names)) != len(names):
            raise ConfigError(f"eval systems need distinct names, got: {', '.join(names)}")
        if self.baseline is not None and self.baseline not in names:
            raise ConfigError(f"eval baseline {self.baseline!r} is not one of the systems: {', '.join(names)}")
        if self.stat_test not in ("fisher", "student"):
            raise ConfigError("stat_test must be 'fisher' or 'student'")
        if parse_shard(self.shard) is not None and self.datasets:
            raise ConfigError("eval: shard with datasets is not supported; shard one collection's eval instead")

    def specs(self) -> list[SystemSpec]:
        return [SystemSpec(s["name"], s["type"], dict(s.get("options") or {})) for s in self.systems]


def check_judged(path: Path, qrels: dict[str, dict[str, int]], report: Any, relevance_level: int = 1) -> None:
    """A DataError naming the qrels file unless it judges at least one query relevant (grade >= 1): evaluating
    against nothing would score every system 0. (Qrels whose queries are all unknown are refused on reading.)"""
    if not qrels:
        raise DataError(path, None, f"no judgments: the file has no query-id, corpus-id, grade rows "
                                    f"({report.rows} read{', a header skipped' if report.header_skipped else ''})")
    if not any(g >= relevance_level for docs in qrels.values() for g in docs.values()):
        rows = sum(len(docs) for docs in qrels.values())
        raise DataError(path, None, f"no judgment with a grade ≥ {relevance_level}: its {rows} judgment rows of "
                                    f"{len(qrels)} queries are all graded below {relevance_level}, so nothing "
                                    f"is relevant and every metric would be 0")


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "system"


def _key_config(cfg: EvalConfig) -> dict[str, Any]:
    """The config keying an eval artefact; ``datasets`` (paths) is not part of it, each dataset's content is."""
    config = config_dict(cfg)
    config.pop("datasets", None)
    # each system by name and type; what of its options changes its run is keyed by its input fingerprint
    # (models and index folders by content, output-neutral options such as batch_size left out)
    config["systems"] = [{"name": s["name"], "type": s["type"]} for s in config["systems"]]
    return config


def run_eval(cfg: EvalConfig, collection_dir: str | Path, out_dir: str | Path, *, cache_dir: str | Path,
             force: bool = False) -> StageResult:
    return prepare_eval(cfg, collection_dir, out_dir, cache_dir=cache_dir).run(force=force)


def prepare_eval(cfg: EvalConfig, collection_dir: str | Path, out_dir: str | Path, *, cache_dir: str | Path) -> Work:
    from retrdistill.evaluation.metrics import evaluate
    from retrdistill.evaluation.runs import write_trec_run

    collection = open_collection(collection_dir, Path(cache_dir) / "corpora")
    dataset = cfg.dataset_name or collection.root.name
    specs = cfg.specs()
    systems = {s.name: registry.build("system", s.type, s.options) for s in specs}
    inputs = {"corpus": collection.corpus.fingerprint, "queries": file_input(collection.root / "queries.jsonl"),
              "qrels": file_input(collection.qrels_path(cfg.split))}
    inputs.update({f"system:{name}": system.input_fingerprint() for name, system in systems.items()})
    config = _key_config(cfg)

    def body(tmp: Path) -> dict[str, Any]:
        qrels, qrels_report = collection.qrels(cfg.split, check_corpus=True)
        check_judged(collection.qrels_path(cfg.split), qrels, qrels_report)
        queries = {q: collection.queries[q] for q in collection.queries}
        judged = {q: t for q, t in queries.items() if q in qrels}
        in_qrels = set(qrels)  # before a shard slices them: the queries the split judges
        shard = parse_shard(cfg.shard)
        if shard is not None:  # a contiguous slice of the judged queries, scored on its own judgments
            qids = list(judged)
            take = shard_rows(shard, len(qids))
            if not take:
                raise ConfigError(f"eval shard {shard.label}: no queries (the split has {len(qids)} judged "
                                  f"queries); use at most {len(qids)} shards")
            judged = {q: judged[q] for q in qids[take.start:take.stop]}
            qrels = {q: qrels[q] for q in judged}
        corpus = collection.corpus
        results, rows = {}, {}
        bar = progress.bar(len(specs), "eval systems", "system")
        for spec in specs:
            log.info("eval: running %s (%s) on %d queries", spec.name, spec.type, len(judged))
            out = systems[spec.name].run(corpus, judged, cfg.depth, Path(cache_dir), cfg.measure_cost, earlier=rows)
            write_trec_run(tmp / "runs" / f"{_slug(spec.name)}.trec", out.run, tag=_slug(spec.name))
            results[spec.name] = evaluate(qrels, out.run, cfg.metrics)
            rows[spec.name] = out
            bar.update()
        bar.close()
        return _write_report(tmp, cfg, dataset, queries, qrels, qrels_report.repairs(), results, rows,
                             in_qrels=in_qrels, shard=shard.label if shard is not None else None)

    return Work("eval", "eval", Path(out_dir), config, inputs, body, settings=config_dict(cfg))


def primary_metric(metrics: list[str]) -> str:
    """The metric rows are ranked and plotted by, and zero scores are checked on: nDCG@10 when evaluated."""
    return "ndcg@10" if "ndcg@10" in metrics else metrics[0]


def _write_report(tmp: Path, cfg: EvalConfig, dataset: str, queries: dict[str, str], qrels, repairs,
                  results: dict[str, Any], rows: dict[str, Any], *, in_qrels: set[str] | None = None,
                  shard: str | None = None) -> dict[str, Any]:
    """The leaderboard (JSON, Markdown, HTML) and ``results.json`` of evaluated systems; the manifest's counts.

    ``in_qrels``: the queries the split's qrels judge, when ``qrels`` is a shard's slice of them (``shard``)."""
    from retrdistill.evaluation import leaderboard as lb
    from retrdistill.evaluation.leaderboard_html import write_html
    from retrdistill.evaluation.compare import compare_results

    specs = cfg.specs()
    primary = primary_metric(cfg.metrics)
    board = lb.Leaderboard(title=f"retrdistill — {dataset} ({cfg.split})", baseline=cfg.baseline,
                           metric_order=list(cfg.metrics), primary_metric=primary)
    for spec in specs:
        out = rows[spec.name]
        board.add_result(spec.name, dataset, results[spec.name], provenance=out.provenance,
                         validation=out.validation, negatives=out.negatives,
                         **{k: v for k, v in out.cost.items() if k in lb.COST_FIELDS})
    if cfg.baseline and len(specs) > 1:
        comparison = compare_results(results, cfg.baseline, test=cfg.stat_test, correction=cfg.correction)
        board.add_comparison(dataset, comparison)
    r0 = next(iter(results.values()))
    without = sorted(set(queries) - (in_qrels if in_qrels is not None else set(qrels)))
    zero = sorted(q for q in r0.per_query if all(res.per_query[q][primary] == 0 for res in results.values()))
    coverage = lb.query_coverage(
        len(queries), r0.n_queries,
        {"without_judgments": without, "no_relevant": r0.no_relevant, "zero_for_every_system": zero},
        judged_documents_not_in_corpus=int(repairs.get("judged_documents_not_in_corpus", 0)), shard=shard)
    board.coverage[dataset] = coverage
    _log_coverage(dataset, cfg.split, coverage, primary)
    lb.write_json(board, tmp / "leaderboard.json")
    lb.write_markdown(board, tmp / "leaderboard.md")
    write_html(board, tmp / "leaderboard.html")
    write_json_atomic(tmp / "results.json", {
        "dataset": dataset,
        "split": cfg.split,
        "shard": shard,
        "primary_metric": primary,
        "queries": len(queries),
        "judged_queries": r0.n_queries,
        "queries_without_judgments": without,
        "queries_without_relevant_judgment": r0.no_relevant,
        "queries_zero_for_every_system": zero,
        "qrels_repairs": repairs,
        "systems": {
            name: {"mean": res.mean, "per_query": res.per_query, "cost": rows[name].cost,
                   "missing_from_run": res.missing_from_run, "provenance": rows[name].provenance}
            for name, res in results.items()
        },
    })
    return {"queries": len(queries), "judged_queries": r0.n_queries, "queries_without_judgments": len(without),
            "queries_without_relevant_judgment": len(r0.no_relevant), "queries_zero_for_every_system": len(zero),
            "systems": {name: res.mean for name, res in results.items()}}


def _log_coverage(dataset: str, split: str, coverage: Any, primary: str) -> None:
    """What the evaluation scored, at INFO; judged queries that every system scores 0 on, at WARNING."""
    from retrdistill.evaluation.leaderboard import coverage_lines, coverage_warnings

    lines = coverage_lines(coverage)
    log.info("eval %s (%s): %s", dataset, split, " ".join(lines))
    for warning in coverage_warnings(coverage, primary):
        log.warning("eval %s (%s): %s", dataset, split, warning)


# cost fields averaged over queries: a merge weighs each shard's value by its number of queries
PER_QUERY_COST = ("ms_per_query", "flops_per_query", "query_terms")


def merge_eval_shards(shards, tmp: Path, cache_dir: str | Path | None, collection_dir: str | Path | None) -> dict:
    """Eval shards (a :class:`retrdistill.stages.merge.ShardSet`) as the unsharded eval: each system's runs
    concatenated over the shards (rewritten in the unsharded order: queries sorted), scored against the
    collection's whole qrels, significance tests and leaderboard over all queries. Cost: the per-query fields
    averaged over all queries, the others (index size, parameters, encoding rate) as shard 0 measured them."""
    from retrdistill.evaluation import leaderboard as lb
    from retrdistill.evaluation.metrics import evaluate
    from retrdistill.evaluation.runs import read_trec_run, write_trec_run
    from retrdistill.systems import SystemOutput

    if collection_dir is None or cache_dir is None:
        raise ConfigError("merge: eval shards need their collection (its qrels score the merged runs) and the cache "
                          "folder: merge them in a pipeline (shards: N) or pass collection_dir and cache_dir to "
                          "run_merge")
    given = shards.settings or shards.config  # the systems' options are in the settings (the key has name + type)
    cfg = EvalConfig(**{k: v for k, v in given.items() if k not in ("datasets", "shard")})
    collection = open_collection(collection_dir, Path(cache_dir) / "corpora")
    found = {"corpus": collection.corpus.fingerprint, "queries": file_input(collection.root / "queries.jsonl"),
             "qrels": file_input(collection.qrels_path(cfg.split))}
    differ = [k for k, v in found.items() if shards.inputs.get(k) != v]
    if differ:
        raise ManifestError(f"merge: {collection.root} is not the collection the eval shards ran on (its "
                            f"{', '.join(differ)} differ from the shards' inputs)")
    qrels, qrels_report = collection.qrels(cfg.split, check_corpus=True)
    queries = {q: collection.queries[q] for q in collection.queries}
    boards = [{row.system: row for row in lb.load_leaderboard(folder / "leaderboard.json").rows}
              for folder in shards.dirs]
    parts = [json.loads((folder / "results.json").read_text(encoding="utf-8")) for folder in shards.dirs]
    sizes = [p["judged_queries"] for p in parts]
    results, rows = {}, {}
    for spec in cfg.specs():
        name = f"{_slug(spec.name)}.trec"
        run: dict[str, dict[str, float]] = {}
        for folder in shards.dirs:
            part = read_trec_run(folder / "runs" / name)
            overlap = set(part) & set(run)
            if overlap:
                raise ManifestError(f"{folder / 'runs' / name}: query {sorted(overlap)[0]!r} is in another shard too")
            run.update(part)
        write_trec_run(tmp / "runs" / name, run, tag=_slug(spec.name))
        results[spec.name] = evaluate(qrels, run, cfg.metrics)
        costs = [p["systems"][spec.name]["cost"] for p in parts]
        cost = dict(costs[0])
        for key in PER_QUERY_COST:
            values = [c.get(key) for c in costs]
            if all(isinstance(v, (int, float)) for v in values):
                cost[key] = sum(v * n for v, n in zip(values, sizes)) / max(1, sum(sizes))
        row = boards[0][spec.name]
        rows[spec.name] = SystemOutput(run, cost, parts[0]["systems"][spec.name]["provenance"], row.validation,
                                       row.negatives)
    dataset = cfg.dataset_name or collection.root.name
    return _write_report(tmp, cfg, dataset, queries, qrels, qrels_report.repairs(), results, rows)


@dataclass
class DatasetsResult:
    """A many-dataset evaluation: each dataset's eval artefact and the combined leaderboard artefact."""

    datasets: dict[str, StageResult]
    leaderboard: StageResult

    # the pipeline reports it like any stage result
    @property
    def stage(self) -> str:
        return "eval"

    @property
    def out_dir(self) -> Path:
        return self.leaderboard.out_dir.parent

    @property
    def manifest(self):
        return self.leaderboard.manifest

    @property
    def skipped(self) -> bool:
        return self.leaderboard.skipped and all(r.skipped for r in self.datasets.values())

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in [*self.datasets.values(), self.leaderboard])

    @property
    def memory(self) -> dict[str, Any]:
        """The highest peaks of the per-dataset evaluations and the combined leaderboard."""
        out: dict[str, Any] = {}
        for r in [*self.datasets.values(), self.leaderboard]:
            for key, value in r.memory.items():
                if key.startswith("peak") and value is not None:
                    out[key] = max(out.get(key) or 0, value)
        return out


def run_eval_datasets(cfg: EvalConfig, datasets: list[str | Path], out_dir: str | Path, *, cache_dir: str | Path,
                      force: bool = False) -> DatasetsResult:
    """Evaluate the same systems on several BEIR-format collections in one call.

    ``datasets``: collections or folders of collections (see :func:`retrdistill.data.beir.find_collections`).
    Writes ``OUT/datasets/<name>/`` (one eval artefact per dataset: runs, results.json, its leaderboard and
    manifest, so an interrupted call resumes at the first unfinished dataset) and ``OUT/leaderboard/`` (the
    combined leaderboard: per-dataset rows with their significance tests, and each system's mean over the
    datasets; JSON, Markdown and HTML; its manifest keys on the per-dataset manifests).
    """
    return prepare_eval_datasets(cfg, datasets, out_dir, cache_dir=cache_dir).run(force=force)


@dataclass
class DatasetsWork:
    """The work of a many-dataset evaluation: one eval per dataset, then the combined leaderboard."""

    cfg: EvalConfig
    out_dir: Path
    datasets: dict[str, Work]

    def combined(self, manifests: dict[str, Manifest]) -> Work:
        from retrdistill.evaluation import leaderboard as lb
        from retrdistill.evaluation.leaderboard_html import write_html

        cfg = self.cfg
        config = {"datasets": list(self.datasets), "metrics": list(cfg.metrics), "baseline": cfg.baseline,
                  "split": cfg.split}
        inputs = {f"eval:{name}": m.fingerprint for name, m in manifests.items()}
        folders = {name: work.out_dir for name, work in self.datasets.items()}

        def body(tmp: Path) -> dict[str, Any]:
            board = lb.Leaderboard(title=f"retrdistill — {len(folders)} datasets ({cfg.split})", baseline=cfg.baseline,
                                   metric_order=list(cfg.metrics), primary_metric=primary_metric(cfg.metrics))
            for folder in folders.values():
                loaded = lb.load_leaderboard(folder / "leaderboard.json")
                for row in loaded.rows:
                    board.add(row)
                board.coverage.update(loaded.coverage)
            lb.write_json(board, tmp / "leaderboard.json")
            lb.write_markdown(board, tmp / "leaderboard.md")
            write_html(board, tmp / "leaderboard.html")
            return {"datasets": len(folders), "rows": len(board.rows),
                    "mean": {r.system: r.metrics for r in board.mean_rows()}}

        return Work("leaderboard", "eval", self.out_dir / "leaderboard", config, inputs, body)

    def status(self) -> tuple[str, str]:
        from retrdistill.artefacts import read_manifest

        states = {name: work.status() for name, work in self.datasets.items()}
        stale = [f"{name}: {why}" for name, (state, why) in states.items() if state != "current"]
        if stale:
            new = all(state == "new" for state, _ in states.values())
            return ("new" if new else "stale"), "; ".join(stale[:3])
        return self.combined({name: read_manifest(w.out_dir) for name, w in self.datasets.items()}).status()

    def run(self, *, force: bool = False) -> DatasetsResult:
        per_dataset: dict[str, StageResult] = {}
        bar = progress.bar(len(self.datasets), "eval datasets", "dataset")
        for name, work in self.datasets.items():
            log.info("eval: dataset %s", name)
            per_dataset[name] = work.run(force=force)
            bar.update()
        bar.close()
        combined = self.combined({name: r.manifest for name, r in per_dataset.items()}).run(force=force)
        return DatasetsResult(per_dataset, combined)


def prepare_eval_datasets(cfg: EvalConfig, datasets: list[str | Path], out_dir: str | Path, *,
                          cache_dir: str | Path) -> DatasetsWork:
    from dataclasses import replace

    from retrdistill.data.beir import find_collections

    out_dir = Path(out_dir)
    found = find_collections(list(datasets))
    works = {name: prepare_eval(replace(cfg, datasets=[], dataset_name=name), root, out_dir / "datasets" / name,
                                cache_dir=cache_dir)
             for name, root in found.items()}
    return DatasetsWork(cfg, out_dir, works)


def leaderboard_file(eval_dir: str | Path) -> Path:
    """The Markdown leaderboard of an eval artefact: the combined one of a many-dataset evaluation, else its own."""
    eval_dir = Path(eval_dir)
    combined = eval_dir / "leaderboard" / "leaderboard.md"
    return combined if combined.is_file() else eval_dir / "leaderboard.md"


def _prepare_step(cfg: EvalConfig, refs: dict[str, str], ctx) -> Work | DatasetsWork:
    if cfg.datasets:
        return prepare_eval_datasets(cfg, cfg.datasets, ctx.out_dir, cache_dir=ctx.cache_dir)
    return prepare_eval(cfg, ctx.collection, ctx.out_dir, cache_dir=ctx.cache_dir)


STAGE = StageSpec(
    name="eval", config=EvalConfig, output="eval", inputs={}, prepare=_prepare_step,
    summary="run systems on evaluation queries, score with ranx, write the leaderboard",
)
