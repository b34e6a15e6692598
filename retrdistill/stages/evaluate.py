"""Stage ``eval``: run every system on a collection's evaluation queries and score the runs with ranx.

Writes ``runs/<system>.trec`` (TREC format), ``results.json`` (means, per-query values, counts, cost), the
leaderboard as ``leaderboard.json`` / ``leaderboard.md`` / ``leaderboard.html``, and the manifest last.
Queries that have no judgments are reported, not silently dropped (see retrdistill.evaluation.metrics).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrdistill import progress, registry
from retrdistill.artefacts import fingerprint_obj, read_manifest, write_json_atomic
from retrdistill.data.beir import open_collection
from retrdistill.errors import ConfigError
from retrdistill.stages.base import StageResult, config_dict, execute, file_input

log = logging.getLogger(__name__)


@dataclass
class SystemSpec:
    name: str
    type: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalConfig:
    split: str = "test"
    metrics: list[str] = field(default_factory=lambda: ["ndcg@10", "recall@100", "mrr@10", "map"])
    depth: int = 100
    systems: list[dict[str, Any]] = field(default_factory=lambda: [{"name": "BM25", "type": "bm25"}])
    baseline: str | None = None
    stat_test: str = "fisher"
    correction: str = "holm"
    measure_cost: bool = True
    dataset_name: str | None = None
    # BEIR-format collections, or folders of them, evaluated in one call (per-dataset and mean rows); empty: the
    # one collection the stage is given. Paths are inputs, not config: each dataset's artefact keys on its content.
    datasets: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        from retrdistill.evaluation.metrics import validate_metrics

        self.metrics = list(validate_metrics(self.metrics))
        names = []
        for i, raw in enumerate(self.systems):
            if not isinstance(raw, dict) or "name" not in raw or "type" not in raw:
                raise ConfigError(f"eval system #{i + 1}: expected a mapping with 'name' and 'type' (and optional 'options')")
            unknown = set(raw) - {"name", "type", "options"}
            if unknown:
                raise ConfigError(f"eval system {raw['name']!r}: unknown key(s) {', '.join(sorted(unknown))}; expected name, type, options")
            cls = registry.entry("system", raw["type"]).load()
            combines = getattr(cls, "combines", None)
            if combines is not None:  # a fused system: its parts must be listed before it
                for part in combines(dict(raw.get("options") or {})):
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

    def specs(self) -> list[SystemSpec]:
        return [SystemSpec(s["name"], s["type"], dict(s.get("options") or {})) for s in self.systems]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "system"


def _key_config(cfg: EvalConfig) -> dict[str, Any]:
    """The config keying an eval artefact; ``datasets`` (paths) is not part of it, each dataset's content is."""
    config = config_dict(cfg)
    config.pop("datasets", None)
    return config


def _system_input(spec: SystemSpec) -> str:
    """What identifies a system's output: its saved index's manifest, or its type and options (models hashed)."""
    if spec.type == "index":
        manifest = read_manifest(spec.options.get("path", ""))
        if manifest is None:
            raise ConfigError(f"eval system {spec.name!r}: {spec.options.get('path')!r} is not a finished index")
        return manifest.fingerprint
    if spec.type == "run":
        return file_input(spec.options.get("path", ""))
    from retrdistill.models import model_fingerprint

    opts = dict(spec.options)
    if "model" in opts:
        opts["model"] = model_fingerprint(opts["model"])
    inner = opts.get("options")
    if isinstance(inner, dict) and "model" in inner:
        opts["options"] = {**inner, "model": model_fingerprint(inner["model"])}
    return fingerprint_obj({"type": spec.type, "options": opts})


def run_eval(cfg: EvalConfig, collection_dir: str | Path, out_dir: str | Path, *, cache_dir: str | Path,
             force: bool = False) -> StageResult:
    from retrdistill.evaluation import leaderboard as lb
    from retrdistill.evaluation.compare import compare_results
    from retrdistill.evaluation.metrics import evaluate
    from retrdistill.evaluation.runs import write_trec_run

    collection = open_collection(collection_dir, Path(cache_dir) / "corpora")
    dataset = cfg.dataset_name or collection.root.name
    specs = cfg.specs()
    inputs = {"corpus": collection.corpus.fingerprint, "queries": file_input(collection.root / "queries.jsonl"),
              "qrels": file_input(collection.qrels_path(cfg.split))}
    inputs.update({f"system:{s.name}": _system_input(s) for s in specs})
    config = _key_config(cfg)

    def body(tmp: Path) -> dict[str, Any]:
        qrels, qrels_report = collection.qrels(cfg.split, check_corpus=True)
        queries = {q: collection.queries[q] for q in collection.queries}
        judged = {q: t for q, t in queries.items() if q in qrels}
        corpus = collection.corpus
        results, rows = {}, {}
        bar = progress.bar(len(specs), "eval systems", "system")
        for spec in specs:
            system = registry.build("system", spec.type, spec.options)
            log.info("eval: running %s (%s) on %d queries", spec.name, spec.type, len(judged))
            if hasattr(system, "fuse"):
                out = system.fuse(rows, cfg.depth)
            else:
                out = system.run(corpus, judged, cfg.depth, Path(cache_dir), cfg.measure_cost)
            write_trec_run(tmp / "runs" / f"{_slug(spec.name)}.trec", out.run, tag=_slug(spec.name))
            results[spec.name] = evaluate(qrels, out.run, cfg.metrics)
            rows[spec.name] = out
            bar.update()
        bar.close()
        board = lb.Leaderboard(title=f"retrdistill — {dataset} ({cfg.split})", baseline=cfg.baseline,
                               metric_order=list(cfg.metrics))
        for spec in specs:
            out = rows[spec.name]
            board.add_result(spec.name, dataset, results[spec.name], provenance=out.provenance,
                             **{k: v for k, v in out.cost.items() if k in lb.COST_FIELDS})
        comparison = None
        if cfg.baseline and len(specs) > 1:
            comparison = compare_results(results, cfg.baseline, test=cfg.stat_test, correction=cfg.correction)
            board.add_comparison(dataset, comparison)
        lb.write_json(board, tmp / "leaderboard.json")
        lb.write_markdown(board, tmp / "leaderboard.md")
        lb.write_html(board, tmp / "leaderboard.html")
        r0 = next(iter(results.values()))
        write_json_atomic(tmp / "results.json", {
            "dataset": dataset,
            "split": cfg.split,
            "queries": len(queries),
            "judged_queries": r0.n_queries,
            "queries_without_judgments": sorted(set(queries) - set(qrels)),
            "qrels_repairs": qrels_report.repairs(),
            "systems": {
                name: {"mean": res.mean, "per_query": res.per_query, "cost": rows[name].cost,
                       "missing_from_run": res.missing_from_run, "provenance": rows[name].provenance}
                for name, res in results.items()
            },
        })
        return {"queries": len(queries), "judged_queries": r0.n_queries,
                "systems": {name: res.mean for name, res in results.items()}}

    return execute("eval", out_dir, config, inputs, body, force=force)


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


def run_eval_datasets(cfg: EvalConfig, datasets: list[str | Path], out_dir: str | Path, *, cache_dir: str | Path,
                      force: bool = False) -> DatasetsResult:
    """Evaluate the same systems on several BEIR-format collections in one call.

    ``datasets``: collections or folders of collections (see :func:`retrdistill.data.beir.find_collections`).
    Writes ``OUT/datasets/<name>/`` (one eval artefact per dataset: runs, results.json, its leaderboard and
    manifest, so an interrupted call resumes at the first unfinished dataset) and ``OUT/leaderboard/`` (the
    combined leaderboard: per-dataset rows with their significance tests, and each system's mean over the
    datasets; JSON, Markdown and HTML; its manifest keys on the per-dataset manifests).
    """
    from dataclasses import replace

    from retrdistill.data.beir import find_collections
    from retrdistill.evaluation import leaderboard as lb

    found = find_collections(list(datasets))
    out_dir = Path(out_dir)
    per_dataset: dict[str, StageResult] = {}
    bar = progress.bar(len(found), "eval datasets", "dataset")
    for name, root in found.items():
        log.info("eval: dataset %s (%s)", name, root)
        per_dataset[name] = run_eval(replace(cfg, datasets=[], dataset_name=name), root, out_dir / "datasets" / name,
                                     cache_dir=cache_dir, force=force)
        bar.update()
    bar.close()
    config = {"datasets": list(found), "metrics": list(cfg.metrics), "baseline": cfg.baseline, "split": cfg.split}
    inputs = {f"eval:{name}": r.manifest.fingerprint for name, r in per_dataset.items()}

    def body(tmp: Path) -> dict[str, Any]:
        board = lb.Leaderboard(title=f"retrdistill — {len(found)} datasets ({cfg.split})", baseline=cfg.baseline,
                               metric_order=list(cfg.metrics))
        for name, result in per_dataset.items():
            for row in lb.load_leaderboard(result.out_dir / "leaderboard.json").rows:
                board.add(row)
        lb.write_json(board, tmp / "leaderboard.json")
        lb.write_markdown(board, tmp / "leaderboard.md")
        lb.write_html(board, tmp / "leaderboard.html")
        return {"datasets": len(found), "rows": len(board.rows),
                "mean": {r.system: r.metrics for r in board.mean_rows()}}

    combined = execute("leaderboard", out_dir / "leaderboard", config, inputs, body, force=force)
    return DatasetsResult(per_dataset, combined)
