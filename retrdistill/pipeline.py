"""Pipeline files: a graph of named steps, validated with file and line in every error, run in dependency
order, each step skipped when its artefact already matches its config and inputs.

    name: compare-negatives
    collection: data/msmarco-dl-5k
    workdir: runs/compare-negatives        # each step's artefact is workdir/<id>
    steps:
      - {id: q, stage: queries, source: inverse-cloze, options: {num_queries: 1000}}
      - {id: bm25-neg, stage: mine, queries: "@q", miner: bm25}
      - {id: s1, stage: score, candidates: "@bm25-neg", teacher: bi-encoder}
      - {id: student, stage: train, scores: "@s1", student: dense}
      - {id: idx, stage: index, model: "@student"}
      - {id: board, stage: eval, systems: [{name: student, type: index, options: {path: "@idx"}}]}

A step is ``id`` + ``stage`` + the stage's references (``queries``, ``candidates``, ``scores``, ``model``: see
each stage's ``StageSpec.inputs``) + the fields of the stage's config dataclass (+ optionally ``collection``).
``@id`` names step ``id``'s artefact, ``@id.part`` one part of it (``@student.untrained``); references may
also appear inside options (``model: "@student"`` takes a student, ``path: "@idx"`` an index), and a stage
input declared ``many`` takes a list of them (``students: ["@a", "@b"]``, the ``pick`` stage). Before
anything runs, the graph is checked: unknown or duplicate ids, unknown stages and keys, references to missing
steps or to artefacts of the wrong kind, and cycles are errors naming the file, the line and what is accepted.

Relative paths are resolved against the base folder (the current directory unless given) and may not escape
it; absolute paths are taken as the user wrote them. YAML is read with ``yaml.safe_load`` semantics.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from retrdistill import registry
from retrdistill.errors import ConfigError
from retrdistill.kinds import kind as artefact_kind
from retrdistill.stages.base import StageSpec, StepContext

log = logging.getLogger(__name__)

TOP_LEVEL = {"name", "collection", "workdir", "cache_dir", "steps"}
STEP_KEYS = {"id", "stage", "collection"}
# A reference inside a part's options is checked by the option's name.
OPTION_REFERENCE_KINDS: dict[str, tuple[str, ...]] = {"model": ("student",), "path": ("index",)}
# Options that name a local file or folder (never a hub name): resolved against the base folder.
LOCAL_PATH_OPTIONS = {"path"}
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_REF = re.compile(r"@([A-Za-z0-9][A-Za-z0-9_-]*)(?:\.([A-Za-z0-9_-]+))?")


@dataclass
class Reference:
    """``@step`` or ``@step.part`` found at ``where`` (a step key or an option path) on ``line``."""

    step: str
    part: str | None
    where: tuple[str, ...]
    line: int | None
    kinds: tuple[str, ...] | None  # accepted kinds; None: any


@dataclass
class Step:
    id: str
    stage: StageSpec
    config: Any  # the stage's config dataclass, references still as "@..." strings
    inputs: dict[str, Any]  # stage input key -> raw value ("@id[.part]", a literal, or a list of references)
    collection: Path
    line: int | None
    refs: list[Reference] = field(default_factory=list)

    @property
    def upstream(self) -> list[str]:
        return list(dict.fromkeys(r.step for r in self.refs))


@dataclass
class Pipeline:
    path: Path
    name: str
    collection: Path
    workdir: Path
    cache_dir: Path
    steps: dict[str, Step] = field(default_factory=dict)  # in dependency order

    def out_dir(self, step_id: str) -> Path:
        return self.workdir / step_id

    def resolve(self, ref: Reference) -> Path:
        """The path a reference means: the referenced step's folder, or a part of it."""
        target = self.steps[ref.step]
        return artefact_kind(target.stage.output).resolve(self.out_dir(ref.step), ref.part)

    def downstream(self, step_id: str) -> list[str]:
        """Every step that depends on ``step_id``, directly or not, in dependency order."""
        hit = {step_id}
        for sid, step in self.steps.items():
            if any(u in hit for u in step.upstream):
                hit.add(sid)
        return [s for s in self.steps if s in hit and s != step_id]


# ------------------------------------------------------------------ YAML helpers
def _line(node: yaml.Node | None) -> int | None:
    return node.start_mark.line + 1 if node is not None else None


def _mapping(node: yaml.Node, path: Path, what: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{what}: expected a mapping", path, _line(node))
    out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    merged: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for key_node, value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # ``<<: *anchor`` (or a list of them): keys given here win
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for source in sources:
                for key, pair in _mapping(source, path, f"{what} (merged from <<)").items():
                    merged.setdefault(key, pair)
            continue
        key = key_node.value
        if key in out:
            raise ConfigError(f"{what}: key {key!r} given twice", path, _line(key_node))
        out[key] = (key_node, value_node)
    return {**{k: v for k, v in merged.items() if k not in out}, **out}


def _value(node: yaml.Node, path: Path) -> Any:
    try:
        return yaml.safe_load(yaml.serialize(node))
    except yaml.YAMLError as exc:  # e.g. a !!python tag: safe loading refuses to construct objects
        raise ConfigError(f"not valid YAML: {getattr(exc, 'problem', exc)}", path, _line(node)) from None


def _scalars(node: yaml.Node, where: tuple[str, ...]):
    """Every string scalar under ``node`` with its key path and line."""
    if isinstance(node, yaml.ScalarNode):
        if node.tag.endswith(":str"):
            yield where, node.value, _line(node)
    elif isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            yield from _scalars(value_node, (*where, str(key_node.value)))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _scalars(item, (*where, str(i)))


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


def build_config(cls: type, values: dict[str, Any], *, what: str, path: Path | None = None,
                 lines: dict[str, int | None] | None = None, line: int | None = None) -> Any:
    """A stage config dataclass from raw values: unknown keys and wrong types are errors naming the key."""
    lines = lines or {}
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{what}: unknown key {key!r}; expected one of: {', '.join(sorted(fields))}",
                              path, lines.get(key, line))
        kwargs[key] = _check_type(value, hints[key], f"{what}.{key}", path, lines.get(key, line))
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{what}: {exc.problem}", path, line) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what}: {exc}", path, line) from None


# ------------------------------------------------------------------ loading
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
            hint = " (pipelines now list `steps:`, each with an id and a stage)" if key == "stages" else ""
            raise ConfigError(f"unknown top-level key {key!r}; expected one of: {', '.join(sorted(TOP_LEVEL))}{hint}",
                              path, _line(key_node))
    for required in ("name", "collection", "steps"):
        if required not in top:
            raise ConfigError(f"missing top-level key {required!r}", path, _line(root))

    def get_path(key: str, default: str) -> Path:
        if key in top:
            return safe_path(_value(top[key][1], path), base, path, _line(top[key][1]), key)
        return safe_path(default, base, path, None, key)

    name = str(_value(top["name"][1], path))
    pipeline = Pipeline(path=path, name=name, collection=get_path("collection", ""),
                        workdir=get_path("workdir", f"runs/{name}"), cache_dir=get_path("cache_dir", ".cache/retrdistill"))
    steps_node = top["steps"][1]
    if not isinstance(steps_node, yaml.SequenceNode) or not steps_node.value:
        raise ConfigError("steps: expected a non-empty list of steps", path, _line(steps_node))
    steps: dict[str, Step] = {}
    for node in steps_node.value:
        for step in _sharded(_load_step(node, path, base, pipeline), node, path):
            if step.id in steps:
                raise ConfigError(f"step id {step.id!r} is used twice (first on line {steps[step.id].line})", path, step.line)
            steps[step.id] = step
    _check_references(steps, path)
    pipeline.steps = {sid: steps[sid] for sid in _dependency_order(steps, path)}
    _default_teacher_systems(pipeline)
    return pipeline


def _load_step(node: yaml.Node, path: Path, base: Path, pipeline: Pipeline) -> Step:
    items = _mapping(node, path, "step")
    line = _line(node)
    for required in ("id", "stage"):
        if required not in items:
            raise ConfigError(f"step: missing key {required!r}", path, line)
    step_id = str(_value(items["id"][1], path))
    if not _ID.fullmatch(step_id):
        raise ConfigError(f"step id {step_id!r}: use letters, digits, '_' and '-' (it names the step's folder)",
                          path, _line(items["id"][1]))
    stage_name = str(_value(items["stage"][1], path))
    stage: StageSpec = registry.entry("stage", stage_name, where=str(path), line=_line(items["stage"][1])).load()
    what = f"step {step_id!r} ({stage_name})"
    collection = pipeline.collection
    if "collection" in items:
        collection = safe_path(_value(items["collection"][1], path), base, path, _line(items["collection"][1]),
                               f"{what}.collection")
    inputs: dict[str, str] = {}
    refs: list[Reference] = []
    values: dict[str, Any] = {}
    lines: dict[str, int | None] = {}
    config_fields = {f.name for f in dataclasses.fields(stage.config)}
    for key, (key_node, value_node) in items.items():
        if key in STEP_KEYS or key == "shards":  # shards: N is read by _sharded
            continue
        if key in stage.inputs and stage.inputs[key].many:
            inputs[key] = _many_refs(value_node, key, stage.inputs[key], what, path, refs)
            continue
        if key in stage.inputs:
            raw = _value(value_node, path)
            if not isinstance(raw, str):
                raise ConfigError(f"{what}: {key} must be a reference like \"@step-id\", got {raw!r}", path, _line(value_node))
            spec = stage.inputs[key]
            ref = _parse_ref(raw, (key,), _line(value_node), spec.kinds, path)
            if ref is None and not spec.literal:
                raise ConfigError(f"{what}: {key} must reference a step (\"@step-id\") whose artefact is "
                                  f"{' or '.join(spec.kinds)}, got {raw!r}", path, _line(value_node))
            if ref is not None:
                refs.append(ref)
            inputs[key] = raw
            continue
        if key not in config_fields:
            accepted = sorted(STEP_KEYS | set(stage.inputs) | config_fields)
            raise ConfigError(f"{what}: unknown key {key!r}; expected one of: {', '.join(accepted)}", path, _line(key_node))
        value = _value(value_node, path)
        for where, text, ref_line in _scalars(value_node, (key,)):
            ref = _parse_ref(text, where, ref_line, OPTION_REFERENCE_KINDS.get(where[-1]), path)
            if ref is not None:
                refs.append(ref)
            elif where[-1] in LOCAL_PATH_OPTIONS:  # a file or folder of the user's: resolved, kept inside the base
                _set(value, where[1:], str(safe_path(text, base, path, ref_line, f"{what}: {'.'.join(where)}")))
        if key == "datasets" and isinstance(value, list):  # collections evaluated by an eval step
            value = [str(safe_path(v, base, path, _line(value_node), f"{what}.datasets")) for v in value]
        values[key] = value
        lines[key] = _line(value_node)
    missing = [key for key, spec in stage.inputs.items() if key not in inputs]
    if missing:
        raise ConfigError(f"{what}: missing {', '.join(missing)} (" + "; ".join(
            f"{k}: {stage.inputs[k].help}, a {' or '.join(stage.inputs[k].kinds)} artefact" for k in missing) + ")",
            path, line)
    config = build_config(stage.config, values, what=what, path=path, lines=lines, line=line)
    return Step(step_id, stage, config, inputs, collection, line, refs)


def _sharded(step: Step, node: yaml.Node, path: Path) -> list[Step]:
    """``[step]``, or with ``shards: N`` the N shard steps (ids ``ID-shard-I-of-N``, config ``shard: I/N``) and a
    merge step under the step's own id, so ``@ID`` names the merged artefact (:mod:`retrdistill.stages.merge`)."""
    items = _mapping(node, path, "step")
    if "shards" not in items:
        return [step]
    from retrdistill.stages.merge import MergeConfig, merge_spec

    count, line = _value(items["shards"][1], path), _line(items["shards"][1])
    what = f"step {step.id!r} ({step.stage.name})"
    if "shard" not in {f.name for f in dataclasses.fields(step.stage.config)}:
        shardable = [n for n in registry.names("stage")
                     if "shard" in {f.name for f in dataclasses.fields(registry.entry("stage", n).load().config)}]
        raise ConfigError(f"{what}: this stage cannot be sharded; stages that can: {', '.join(shardable)}", path, line)
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ConfigError(f"{what}: shards must be a positive whole number, got {count!r}", path, line)
    if step.config.shard:
        raise ConfigError(f"{what}: give shards: N (all shards and their merge) or shard: I/N (one shard), not both",
                          path, line)
    parts = [Step(f"{step.id}-shard-{i}-of-{count}", step.stage, dataclasses.replace(step.config, shard=f"{i}/{count}"),
                  dict(step.inputs), step.collection, step.line, list(step.refs)) for i in range(count)]
    refs = [Reference(p.id, None, ("shards", str(i)), line, (step.stage.output,)) for i, p in enumerate(parts)]
    merge = Step(step.id, merge_spec(step.stage.output), MergeConfig(), {"shards": [f"@{p.id}" for p in parts]},
                 step.collection, step.line, refs)
    return [*parts, merge]


def _many_refs(node: yaml.Node, key: str, spec, what: str, path: Path, refs: list[Reference]) -> list[str]:
    """A ``many`` input: a non-empty list of distinct ``@step`` references, each checked like a single one."""
    expected = f"a list of references like [\"@a\", \"@b\"] to steps whose artefact is {' or '.join(spec.kinds)}"
    if not isinstance(node, yaml.SequenceNode) or not node.value:
        raise ConfigError(f"{what}: {key} must be {expected}, got {_value(node, path)!r}", path, _line(node))
    raws: list[str] = []
    for i, item in enumerate(node.value):
        raw = _value(item, path)
        ref = _parse_ref(raw, (key, str(i)), _line(item), spec.kinds, path) if isinstance(raw, str) else None
        if ref is None:
            raise ConfigError(f"{what}: {key}[{i}] must be a reference like \"@step-id\", got {raw!r}", path, _line(item))
        if raw in raws:
            raise ConfigError(f"{what}: {key} lists {raw} twice", path, _line(item))
        refs.append(ref)
        raws.append(raw)
    return raws


def _set(value: Any, where: tuple[str, ...], new: Any) -> None:
    for key in where[:-1]:
        value = value[int(key)] if isinstance(value, list) else value[key]
    value[int(where[-1]) if isinstance(value, list) else where[-1]] = new


def _parse_ref(text: str, where: tuple[str, ...], line: int | None, kinds: tuple[str, ...] | None,
               path: Path) -> Reference | None:
    if not text.startswith("@"):
        return None
    m = _REF.fullmatch(text)
    if not m:
        raise ConfigError(f"{'.'.join(where)}: {text!r} is not a reference; expected \"@step-id\" or \"@step-id.part\"",
                          path, line)
    return Reference(m.group(1), m.group(2), where, line, kinds)


def _check_references(steps: dict[str, Step], path: Path) -> None:
    for step in steps.values():
        for ref in step.refs:
            where = f"step {step.id!r}: {'.'.join(ref.where)}"
            if ref.step not in steps:
                raise ConfigError(f"{where}: unknown step @{ref.step}; steps: {', '.join(steps)}", path, ref.line)
            if ref.step == step.id:
                raise ConfigError(f"{where}: a step cannot reference itself", path, ref.line)
            target = steps[ref.step]
            produced = target.stage.output
            if ref.kinds is not None and produced not in ref.kinds:
                raise ConfigError(f"{where}: @{ref.step} is a {target.stage.name} step, whose artefact is {produced!r}; "
                                  f"expected {' or '.join(map(repr, ref.kinds))}", path, ref.line)
            try:
                artefact_kind(produced).resolve(Path("."), ref.part)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc.problem}", path, ref.line) from None


def _dependency_order(steps: dict[str, Step], path: Path) -> list[str]:
    """Steps in file order, each after everything it references; a cycle is an error naming it."""
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(sid: str, trail: list[str]) -> None:
        if state.get(sid) == "done":
            return
        if state.get(sid) == "visiting":
            cycle = trail[trail.index(sid):] + [sid]
            raise ConfigError(f"the steps form a cycle: {' -> '.join('@' + s for s in cycle)}", path, steps[sid].line)
        state[sid] = "visiting"
        for up in steps[sid].upstream:
            visit(up, [*trail, sid])
        state[sid] = "done"
        order.append(sid)

    for sid in steps:
        visit(sid, [])
    return order


def _default_teacher_systems(pipeline: Pipeline) -> None:
    """An eval system ``{type: teacher}`` without options takes the teacher of the pipeline's one score step."""
    scorers = [s for s in pipeline.steps.values()  # a sharded score step counts once (its shard 0)
               if s.stage.name == "score" and str(getattr(s.config, "shard", "")).partition("/")[0] in ("", "0")]
    for step in pipeline.steps.values():
        if step.stage.name != "eval":
            continue
        for system in step.config.systems:
            if system["type"] != "teacher" or system.get("options"):
                continue
            if len(scorers) != 1:
                raise ConfigError(f"step {step.id!r}: eval system {system['name']!r} (teacher) needs options when the "
                                  f"pipeline has {len(scorers)} score steps: {{teacher: ..., options: {{...}}}}",
                                  pipeline.path, step.line)
            score = scorers[0].config
            system["options"] = {"teacher": score.teacher, "options": dict(score.options)}


# ------------------------------------------------------------------ planning and running
@dataclass
class StepPlan:
    id: str
    stage: str
    state: str  # current | new | stale | forced
    why: str
    upstream: list[str]


@dataclass
class StepRun:
    id: str
    stage: str
    result: Any  # StageResult or DatasetsResult

    @property
    def skipped(self) -> bool:
        return self.result.skipped

    @property
    def seconds(self) -> float:
        return self.result.seconds

    @property
    def memory(self) -> dict[str, Any]:
        return self.result.memory


def _resolved(value: Any, pipeline: Pipeline) -> Any:
    """``value`` with every "@id[.part]" string replaced by the path it means."""
    if isinstance(value, str) and value.startswith("@"):
        m = _REF.fullmatch(value)
        return str(pipeline.resolve(Reference(m.group(1), m.group(2), (), None, None)))
    if isinstance(value, dict):
        return {k: _resolved(v, pipeline) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolved(v, pipeline) for v in value]
    return value


def prepare_step(pipeline: Pipeline, step_id: str):
    """The step's work (its key, inputs and body), with references resolved to the upstream folders."""
    step = pipeline.steps[step_id]
    raw = dataclasses.asdict(step.config)
    config = step.config
    resolved = _resolved(raw, pipeline)
    if resolved != raw:
        config = build_config(step.stage.config, resolved, what=f"step {step_id!r}", path=pipeline.path, line=step.line)
    inputs = {key: _resolved(value, pipeline) for key, value in step.inputs.items()}
    ctx = StepContext(step.collection, pipeline.cache_dir, pipeline.out_dir(step_id))
    work = step.stage.prepare(config, inputs, ctx)
    if hasattr(work, "step"):
        work.step = step_id
    return work


def plan_pipeline(pipeline: Pipeline, *, force: set[str] | None = None, only: set[str] | None = None) -> list[StepPlan]:
    """What ``run_pipeline`` would do, and why, without running anything."""
    force = force or set()
    _check_ids(pipeline, force | (only or set()))
    will_run: set[str] = set()
    plans = []
    for sid, step in pipeline.steps.items():
        if only and sid not in only:
            plans.append(StepPlan(sid, step.stage.name, "not selected", "not in --only", step.upstream))
            continue
        rerun = [u for u in step.upstream if u in will_run]
        if sid in force:
            state, why = "forced", "--force"
        elif rerun:
            has = (pipeline.out_dir(sid) / "manifest.json").is_file()
            state, why = ("stale" if has else "new"), f"input changed: upstream {', '.join('@' + u for u in rerun)} reruns"
        else:
            state, why = prepare_step(pipeline, sid).status()
        if state != "current":
            will_run.add(sid)
        plans.append(StepPlan(sid, step.stage.name, state, why, step.upstream))
    return plans


def run_pipeline(pipeline: Pipeline, *, force: set[str] | None = None, only: set[str] | None = None) -> list[StepRun]:
    """Run the steps in dependency order; each is skipped when its artefact is current (unless in ``force``)."""
    force = force or set()
    _check_ids(pipeline, force | (only or set()))
    runs = []
    for sid, step in pipeline.steps.items():
        if only and sid not in only:
            continue
        log.info("pipeline %s: step %s (%s)", pipeline.name, sid, step.stage.name)
        runs.append(StepRun(sid, step.stage.name, prepare_step(pipeline, sid).run(force=sid in force)))
    return runs


def _check_ids(pipeline: Pipeline, ids: set[str]) -> None:
    unknown = sorted(ids - set(pipeline.steps))
    if unknown:
        raise ConfigError(f"unknown step id(s) {', '.join(unknown)}; steps: {', '.join(pipeline.steps)}", pipeline.path)
