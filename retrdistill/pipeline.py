"""Pipeline files: a YAML description of the stages, validated with file and line in every error, and run
in order, each stage skipped when its artefact already matches its inputs and config.

    name: msmarco-sample
    collection: data/msmarco-dl-5k
    workdir: runs/msmarco-sample      # artefacts of every stage
    stages:
      queries: {source: inverse-cloze, options: {num_queries: 2000}}
      mine:    {miner: bm25, negatives: 8}
      score:   {teacher: bi-encoder, options: {model: offline:all-mpnet-base-v2}}
      train:   {student: dense, options: {model: offline:all-MiniLM-L6-v2}, loss: margin-mse}
      index:   {indexer: faiss-flat}
      eval:    {systems: [{name: BM25, type: bm25}, {name: student, type: index, options: {path: "@index"}}]}

Relative paths are resolved against the base folder (the current directory unless given) and may not escape
it; absolute paths are taken as the user wrote them. YAML is read with ``yaml.safe_load`` semantics.
"""

from __future__ import annotations

import dataclasses
import logging
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from retrdistill.errors import ConfigError
from retrdistill.stages.base import StageResult
from retrdistill.stages.evaluate import EvalConfig, run_eval, run_eval_datasets
from retrdistill.stages.index import IndexConfig, run_index
from retrdistill.stages.mine import MineConfig, run_mine
from retrdistill.stages.queries import QueriesConfig, run_queries
from retrdistill.stages.score import ScoreConfig, run_score
from retrdistill.stages.train import TrainConfig, run_train

log = logging.getLogger(__name__)

STAGE_CONFIGS: dict[str, type] = {
    "queries": QueriesConfig,
    "mine": MineConfig,
    "score": ScoreConfig,
    "train": TrainConfig,
    "index": IndexConfig,
    "eval": EvalConfig,
}
STAGE_ORDER = tuple(STAGE_CONFIGS)
TOP_LEVEL = {"name", "collection", "workdir", "cache_dir", "index_dir", "stages"}
DIRS = {"queries": "queries", "mine": "candidates", "score": "scores", "train": "student", "eval": "eval"}


@dataclass
class Pipeline:
    path: Path
    name: str
    collection: Path
    workdir: Path
    cache_dir: Path
    index_dir: Path
    stages: dict[str, Any] = field(default_factory=dict)

    def out_dir(self, stage: str) -> Path:
        return self.index_dir if stage == "index" else self.workdir / DIRS[stage]

    @property
    def student_model(self) -> str:
        return str(self.out_dir("train") / "model")


# ------------------------------------------------------------------ loading
def _line(node: yaml.Node | None) -> int | None:
    return node.start_mark.line + 1 if node is not None else None


def _mapping(node: yaml.Node, path: Path, what: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{what}: expected a mapping", path, _line(node))
    out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for key_node, value_node in node.value:
        key = key_node.value
        if key in out:
            raise ConfigError(f"{what}: key {key!r} given twice", path, _line(key_node))
        out[key] = (key_node, value_node)
    return out


def _value(node: yaml.Node, path: Path) -> Any:
    try:
        return yaml.safe_load(yaml.serialize(node))
    except yaml.YAMLError as exc:  # e.g. a !!python tag: safe loading refuses to construct objects
        raise ConfigError(f"not valid YAML: {getattr(exc, 'problem', exc)}", path, _line(node)) from None


def safe_path(raw: str, base: Path, path: Path, line: int | None, key: str) -> Path:
    p = Path(str(raw)).expanduser()
    if p.is_absolute():
        return p
    resolved = (base / p).resolve()
    if not resolved.is_relative_to(base.resolve()):
        raise ConfigError(f"{key}: relative path {raw!r} escapes the base folder {base}; give an absolute path to allow it",
                          path, line)
    return resolved


def _check_type(value: Any, annotation: Any, key: str, path: Path, line: int | None) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if value is None and type(None) in args:
            return value
        inner = [a for a in args if a is not type(None)]
        return _check_type(value, inner[0], key, path, line) if len(inner) == 1 else value
    expected = origin or annotation
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected in (int, float, str, bool, list, dict) and not (
        isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    ):
        raise ConfigError(f"{key}: expected {expected.__name__}, got {type(value).__name__} {value!r}", path, line)
    return value


def _stage_config(stage: str, node: yaml.Node, path: Path) -> Any:
    cls = STAGE_CONFIGS[stage]
    if isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null"):
        return cls()
    items = _mapping(node, path, f"stage {stage!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, (key_node, value_node) in items.items():
        if key not in fields:
            raise ConfigError(f"stage {stage!r}: unknown key {key!r}; expected one of: {', '.join(sorted(fields))}",
                              path, _line(key_node))
        kwargs[key] = _check_type(_value(value_node, path), hints[key], f"{stage}.{key}", path, _line(value_node))
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"stage {stage!r}: {exc.problem}", path, _line(node)) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"stage {stage!r}: {exc}", path, _line(node)) from None


def load_pipeline(path: str | Path, *, base_dir: str | Path | None = None) -> Pipeline:
    path = Path(path)
    if not path.is_file():
        raise ConfigError("pipeline file not found", path)
    base = Path(base_dir or Path.cwd()).resolve()
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"not valid YAML: {getattr(exc, 'problem', exc)}", path, mark.line + 1 if mark else None) from None
    except UnicodeDecodeError:
        raise ConfigError("not valid UTF-8", path) from None
    if root is None:
        raise ConfigError("the pipeline file is empty", path)
    top = _mapping(root, path, "pipeline")
    for key, (key_node, _) in top.items():
        if key not in TOP_LEVEL:
            raise ConfigError(f"unknown top-level key {key!r}; expected one of: {', '.join(sorted(TOP_LEVEL))}", path, _line(key_node))
    for required in ("name", "collection", "stages"):
        if required not in top:
            raise ConfigError(f"missing top-level key {required!r}", path, _line(root))

    def get_path(key: str, default: str) -> Path:
        if key in top:
            return safe_path(_value(top[key][1], path), base, path, _line(top[key][1]), key)
        return safe_path(default, base, path, None, key)

    name = str(_value(top["name"][1], path))
    pipeline = Pipeline(
        path=path,
        name=name,
        collection=get_path("collection", ""),
        workdir=get_path("workdir", f"runs/{name}"),
        cache_dir=get_path("cache_dir", ".cache/retrdistill"),
        index_dir=get_path("index_dir", f"indexes/{name}"),
    )
    stages = _mapping(top["stages"][1], path, "stages")
    for stage, (key_node, value_node) in stages.items():
        if stage not in STAGE_CONFIGS:
            raise ConfigError(f"unknown stage {stage!r}; expected one of: {', '.join(STAGE_ORDER)}", path, _line(key_node))
        pipeline.stages[stage] = _stage_config(stage, value_node, path)
    chain = [s for s in STAGE_ORDER[:5] if s in pipeline.stages]
    if chain and chain != list(STAGE_ORDER[: len(chain)]):
        missing = [s for s in STAGE_ORDER[: STAGE_ORDER.index(chain[-1])] if s not in pipeline.stages]
        raise ConfigError(f"stages {', '.join(chain)} need the earlier stage(s) {', '.join(missing)}", path,
                          _line(top["stages"][1]))
    if "eval" in pipeline.stages:
        _resolve_eval_refs(pipeline, base, path)
    return pipeline


def _resolve_eval_refs(pipeline: Pipeline, base: Path, path: Path) -> None:
    """``@index`` is the pipeline's index; a teacher system without options takes the score stage's teacher."""
    cfg: EvalConfig = pipeline.stages["eval"]
    cfg.datasets = [str(safe_path(raw, base, path, None, "eval.datasets")) for raw in cfg.datasets]
    for system in cfg.systems:
        opts = system.setdefault("options", {}) or {}
        system["options"] = opts
        if system["type"] == "index":
            raw = opts.get("path", "@index")
            if raw == "@index":
                if "index" not in pipeline.stages:
                    raise ConfigError(f"eval system {system['name']!r} uses @index but the pipeline has no index stage", path)
                opts["path"] = str(pipeline.index_dir)
            else:
                opts["path"] = str(safe_path(raw, base, path, None, f"eval system {system['name']!r} path"))
        if system["type"] == "teacher" and not opts and "score" in pipeline.stages:
            score: ScoreConfig = pipeline.stages["score"]
            system["options"] = {"teacher": score.teacher, "options": dict(score.options)}


# ------------------------------------------------------------------ running
def _index_model(p: Pipeline) -> str:
    if "train" not in p.stages:
        raise ConfigError("the index stage needs a train stage in the same pipeline (or `retrdistill index --model`)", p.path)
    return p.student_model


# How each stage is called from a pipeline: its inputs are the outputs of the stages before it.
RUNNERS = {
    "queries": lambda p, cfg, kw: run_queries(cfg, p.collection, p.out_dir("queries"), **kw),
    "mine": lambda p, cfg, kw: run_mine(cfg, p.collection, p.out_dir("queries"), p.out_dir("mine"), **kw),
    "score": lambda p, cfg, kw: run_score(cfg, p.collection, p.out_dir("mine"), p.out_dir("score"), **kw),
    "train": lambda p, cfg, kw: run_train(cfg, p.out_dir("score"), p.collection, p.out_dir("train"), **kw),
    "index": lambda p, cfg, kw: run_index(cfg, p.collection, _index_model(p), p.out_dir("index"), **kw),
    "eval": lambda p, cfg, kw: (run_eval_datasets(cfg, cfg.datasets, p.out_dir("eval"), **kw) if cfg.datasets
                                else run_eval(cfg, p.collection, p.out_dir("eval"), **kw)),
}


def run_pipeline(pipeline: Pipeline, *, force: set[str] | None = None, only: set[str] | None = None) -> list[StageResult]:
    """Run the stages in order; each is skipped when its artefact is current (unless named in ``force``)."""
    force = force or set()
    results: list[StageResult] = []
    for stage in STAGE_ORDER:
        if stage not in pipeline.stages or (only and stage not in only):
            continue
        log.info("pipeline %s: stage %s", pipeline.name, stage)
        kw = {"cache_dir": pipeline.cache_dir, "force": stage in force}
        results.append(RUNNERS[stage](pipeline, pipeline.stages[stage], kw))
    return results
