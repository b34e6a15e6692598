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

Relative paths (``collection``, ``workdir``, ``cache_dir``, a step's ``collection``, an eval step's ``datasets``,
every ``path`` option, and any other value starting with ``./`` or ``../``, such as a model folder) are resolved
against the pipeline file's folder, whatever the current directory, and may climb out of it with ``..``;
absolute paths are taken as the user wrote them. Given ``base_dir`` (``--base-dir``), relative paths must stay
inside that folder. YAML is read with ``yaml.safe_load`` semantics.

:func:`load_pipeline` also takes what the command line may change without editing the file: ``collection`` and
``workdir`` (resolved against the current directory) and ``overrides``, ``STEP.KEY=VALUE`` strings
(``student.learning_rate=5e-5``, ``candidates.options.model=offline:all-MiniLM-L6-v2``,
``eval.systems[0].name=x``) whose VALUE is read as YAML and put into the file's step before the steps are built,
so it is typed, validated and referenced exactly like a value written in the file (an error names the
``--set STEP.KEY`` it came from).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from retrdistill import registry
from retrdistill.artefacts import artefact_lock
from retrdistill.errors import ConfigError
from retrdistill.kinds import kind as artefact_kind
from retrdistill.stages.base import StageSpec, StepContext
from retrdistill.registry import part_options
from retrdistill.validate import Lines, check_value

log = logging.getLogger(__name__)

TOP_LEVEL = {"name", "collection", "workdir", "cache_dir", "steps"}
STEP_KEYS = {"id", "stage", "collection"}
# A reference inside a part's options is checked by the option's name.
OPTION_REFERENCE_KINDS: dict[str, tuple[str, ...]] = {"model": ("student",), "path": ("index",),
                                                     "choice": ("teacher-choice",)}
# Options that name a local file or folder (never a hub name): resolved against the pipeline file's folder.
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
    # the project folder: keys write absolute paths under it relative to it, so a copied project keeps its keys
    # (``base_dir`` when given, else the deepest folder holding the file's folder, workdir, cache and collection)
    base: Path = field(default_factory=Path.cwd)

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


def safe_path(raw: str, base: Path, path: Path, line: int | None, key: str, *, inside: Path | None = None) -> Path:
    """``raw`` as a path: absolute as written, relative resolved against ``base`` (the pipeline file's folder;
    ``..`` allowed). With ``inside`` (an explicit ``base_dir``), a relative path that resolves outside that
    folder (through ``..`` or a link) is a ConfigError naming ``key``."""
    p = Path(str(raw)).expanduser()
    if p.is_absolute():
        return p
    resolved = (base / p).resolve()
    if inside is not None and not resolved.is_relative_to(inside.resolve()):
        raise ConfigError(f"{key}: relative path {raw!r} escapes the base folder {inside}; give an absolute path to "
                          f"allow it", path, line)
    return resolved


def _local_path_value(text: str) -> bool:
    """A value written as a local path (``./x``, ``../x``): resolved against the pipeline file's folder."""
    return text.startswith(("./", "../")) or text in (".", "..")


def build_config(cls: type, values: dict[str, Any], *, what: str, path: Path | None = None,
                 lines: dict[str, int | None] | None = None, line: int | None = None,
                 key_lines: Lines | None = None) -> Any:
    """A stage config dataclass from raw values: unknown keys, wrong types, numbers outside a field's declared
    range (its metadata: :mod:`retrdistill.validate`) and bad options of the parts it names are errors naming
    the key. ``lines``: the line of each key; ``key_lines``: the line of every key path of the step (list items
    and the keys inside options), for errors about a value inside a key."""
    lines = lines or {}
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{what}: unknown key {key!r}; expected one of: {', '.join(sorted(fields))}",
                              path, lines.get(key, line))
        kwargs[key] = check_value(cls, key, value, f"{what}.{key}", path, lines.get(key, line), lines=key_lines,
                                  at=(key,))
    part_options(cls, values, what=what, path=path, lines={**{(k,): v for k, v in lines.items()}, **(key_lines or {})},
                 line=line)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{what}: {exc.problem}", path, line) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what}: {exc}", path, line) from None


def _key_lines(node: yaml.Node, path: Path, what: str, at: tuple[str, ...] = ()) -> dict[tuple[str, ...], int | None]:
    """The line of every key path under ``node``: a mapping's keys (the key's own line, merged ``<<`` keys
    where they were written) and a list's items, so that an error about any value inside a step names its line."""
    out: dict[tuple[str, ...], int | None] = {}
    if isinstance(node, yaml.MappingNode):
        label = what + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in at)
        for key, (key_node, value_node) in _mapping(node, path, label).items():
            if isinstance(key_node, yaml.ScalarNode):
                out[(*at, str(key))] = _line(key_node)
                out.update(_key_lines(value_node, path, what, (*at, str(key))))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[(*at, str(i))] = _line(item)
            out.update(_key_lines(item, path, what, (*at, str(i))))
    return out


# ------------------------------------------------------------------ loading
def load_pipeline(path: str | Path, *, base_dir: str | Path | None = None, collection: str | Path | None = None,
                  workdir: str | Path | None = None,
                  overrides: Sequence[str] | Mapping[str, Any] | None = None) -> Pipeline:
    """The pipeline file at ``path``, checked and in dependency order (a ConfigError names the file, the line
    and what is accepted).

    Relative paths in the file resolve against the file's folder. ``base_dir``: the project folder, which
    relative paths must stay inside and keys are written relative to (default: no limit, and the deepest folder
    holding the file's folder, the workdir, the cache and the collection). ``collection`` / ``workdir``: replace
    the file's (relative ones resolve against the current directory; steps with their own collection keep it).
    ``overrides``: ``"STEP.KEY=VALUE"`` strings (VALUE read as YAML) or a mapping ``{"STEP.KEY": value}``, put
    into the file's steps before they are built, so they are checked like the file's own values."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("pipeline file not found", path)
    try:
        text = path.read_text(encoding="utf-8")
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"not valid YAML: {getattr(exc, 'problem', exc)}", path, mark.line + 1 if mark else None) from None
    except UnicodeDecodeError:
        raise ConfigError("not valid UTF-8", path) from None
    if root is None:
        raise ConfigError("the pipeline file is empty", path)
    given = _parse_overrides(overrides, first_line=text.count("\n") + 2)
    applied = _apply_overrides(root, given, path)
    try:
        return _build_pipeline(root, path, base_dir=base_dir, collection=collection, workdir=workdir)
    except ConfigError as exc:
        raise _blame_override(exc, given, applied, path) from None


def _build_pipeline(root: yaml.Node, path: Path, *, base_dir: str | Path | None, collection: str | Path | None,
                    workdir: str | Path | None) -> Pipeline:
    folder = path.resolve().parent  # relative paths in the file resolve against its folder
    inside = Path(base_dir).resolve() if base_dir is not None else None
    top = _mapping(root, path, "pipeline")
    for key, (key_node, _) in top.items():
        if key not in TOP_LEVEL:
            hint = " (pipelines now list `steps:`, each with an id and a stage)" if key == "stages" else ""
            raise ConfigError(f"unknown top-level key {key!r}; expected one of: {', '.join(sorted(TOP_LEVEL))}{hint}",
                              path, _line(key_node))
    for required in ("name", "steps") if collection is not None else ("name", "collection", "steps"):
        if required not in top:
            raise ConfigError(f"missing top-level key {required!r}", path, _line(root))

    def get_path(key: str, default: str, given: str | Path | None) -> Path:
        if given is not None:  # from the command line: relative to the current directory
            return Path(given).expanduser().resolve()
        if key in top:
            return safe_path(_value(top[key][1], path), folder, path, _line(top[key][1]), key, inside=inside)
        return safe_path(default, folder, path, None, key, inside=inside)

    name = str(_value(top["name"][1], path))
    pipeline = Pipeline(path=path, name=name, collection=get_path("collection", "", collection),
                        workdir=get_path("workdir", f"runs/{name}", workdir),
                        cache_dir=get_path("cache_dir", ".cache/retrdistill", None))
    pipeline.base = inside if inside is not None else project_folder(folder, pipeline)
    steps_node = top["steps"][1]
    if not isinstance(steps_node, yaml.SequenceNode) or not steps_node.value:
        raise ConfigError("steps: expected a non-empty list of steps", path, _line(steps_node))
    steps: dict[str, Step] = {}
    for node in steps_node.value:
        for step in _sharded(_load_step(node, path, folder, pipeline, inside), node, path):
            if step.id in steps:
                raise ConfigError(f"step id {step.id!r} is used twice (first on line {steps[step.id].line})", path, step.line)
            steps[step.id] = step
    _check_references(steps, path)
    pipeline.steps = {sid: steps[sid] for sid in _dependency_order(steps, path)}
    _default_teacher_systems(pipeline)
    return pipeline


def project_folder(folder: Path, pipeline: Pipeline) -> Path:
    """The deepest folder holding the pipeline file's ``folder``, its workdir, its cache and its collection: the
    project whose paths keys write relative (for the bundled pipelines, the repository)."""
    places = [folder, pipeline.workdir, pipeline.cache_dir, pipeline.collection]
    return Path(os.path.commonpath([str(Path(p).resolve()) for p in places]))


# ------------------------------------------------------------------ overrides (--set STEP.KEY=VALUE)
_OVERRIDE_KEY = re.compile(r"([A-Za-z0-9][A-Za-z0-9_-]*)((?:\.[^.\[\]=\s]+|\[\d+\])+)")
_OVERRIDE_PART = re.compile(r"\.([^.\[\]=\s]+)|\[(\d+)\]")
# a number YAML 1.2 reads as a float but PyYAML's YAML 1.1 as a string (no dot, or no sign in the exponent)
_EXPONENT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+")


@dataclass
class Override:
    """One ``--set STEP.KEY=VALUE``: the step id, the key path below it (list indices as ints), the value as a
    YAML node whose marks carry ``line``, a line past the end of the file, so an error about it is told apart."""

    text: str  # as given, for messages
    step: str
    keys: tuple[str | int, ...]
    node: yaml.Node
    line: int

    @property
    def target(self) -> str:
        return "--set " + self.step + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in self.keys)


def parse_override(text: str, line: int = 0) -> Override:
    """``STEP.KEY[.KEY|[N]]...=VALUE`` as an :class:`Override`; VALUE is read as YAML (a scalar or a flow
    collection: ``5e-5``, ``offline:x``, ``[a, b]``, ``{k: v}``; ``'...'`` keeps a string)."""
    form = "expected STEP.KEY=VALUE, e.g. student.learning_rate=5e-5 or candidates.options.model=offline:NAME"
    target, sep, raw = str(text).partition("=")
    target = target.strip()
    m = _OVERRIDE_KEY.fullmatch(target)
    if not sep or not m:
        hint = ("; the collection and the workdir are set with --collection and --workdir"
                if target in TOP_LEVEL else "")
        raise ConfigError(f"--set {text!r}: {form}{hint}")
    keys = tuple(int(i) if i else k for k, i in _OVERRIDE_PART.findall(m.group(2)))
    if keys[0] in ("id",) or isinstance(keys[0], int):
        raise ConfigError(f"--set {text!r}: a step's {keys[0]!r} cannot be set; {form}")
    try:
        node = yaml.compose(raw, Loader=yaml.SafeLoader) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {target}: the value {raw!r} is not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if node is None:
        node = yaml.ScalarNode("tag:yaml.org,2002:null", "")
    return Override(str(text), m.group(1), keys, _marked(node, line), line)


def _parse_overrides(overrides: Sequence[str] | Mapping[str, Any] | None, first_line: int) -> list[Override]:
    if not overrides:
        return []
    if isinstance(overrides, str):
        overrides = [overrides]
    if isinstance(overrides, Mapping):
        overrides = [f"{key}={yaml.safe_dump(value, default_flow_style=True, width=1 << 30).strip()}"
                     .removesuffix("\n...") for key, value in overrides.items()]
    return [parse_override(text, first_line + i) for i, text in enumerate(overrides)]


def _marked(node: yaml.Node, line: int) -> yaml.Node:
    """``node`` (in place) with every mark on ``line`` (0-based ``line - 1``), and plain scalars that read as
    numbers in YAML 1.2 but not in PyYAML (``5e-5``) typed as floats."""
    mark = yaml.Mark(f"<--set line {line}>", 0, line - 1, 0, None, None)
    stack = [node]
    while stack:
        n = stack.pop()
        n.start_mark = n.end_mark = mark
        if isinstance(n, yaml.ScalarNode):
            if n.style is None and n.tag.endswith(":str") and _EXPONENT.fullmatch(n.value):
                n.tag = "tag:yaml.org,2002:float"
        elif isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)
        elif isinstance(n, yaml.MappingNode):
            stack.extend(x for pair in n.value for x in pair)
    return node


def _apply_overrides(root: yaml.Node, overrides: list[Override], path: Path) -> dict[str, int | None]:
    """Put each override into its step of ``root`` (copying every node on the way, so a step sharing a YAML
    anchor with another changes alone); the line of each overridden step."""
    if not overrides:
        return {}
    top = _mapping(root, path, "pipeline")
    steps_node = top.get("steps", (None, None))[1]
    if not isinstance(steps_node, yaml.SequenceNode):
        raise ConfigError("steps: expected a non-empty list of steps", path, _line(steps_node or root))
    ids: dict[str, int] = {}
    for i, node in enumerate(steps_node.value):
        items = _mapping(node, path, "step")
        if "id" in items:
            ids.setdefault(str(_value(items["id"][1], path)), i)
    applied: dict[str, int | None] = {}
    for o in overrides:
        if o.step not in ids:
            raise ConfigError(f"{o.target}: no step {o.step!r} in the pipeline; its steps: {', '.join(ids)}", path)
        i = ids[o.step]
        applied.setdefault(o.step, _line(steps_node.value[i]))
        steps_node.value[i] = _set_node(steps_node.value[i], o.keys, o, path, ())
    return applied


def _set_node(node: yaml.Node, keys: tuple[str | int, ...], o: Override, path: Path,
              done: tuple[str | int, ...]) -> yaml.Node:
    """A copy of ``node`` with the value at ``keys`` replaced by ``o.node`` (mappings created on the way)."""
    if not keys:
        return o.node
    head, rest = keys[0], keys[1:]
    where = o.step + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in done)
    if isinstance(head, int):
        if not isinstance(node, yaml.SequenceNode):
            raise ConfigError(f"{o.target}: {where} is not a list, so [{head}] names nothing", path, _line(node))
        if head >= len(node.value):
            raise ConfigError(f"{o.target}: {where} has {len(node.value)} items (indices 0 to "
                              f"{len(node.value) - 1})", path, _line(node))
        items = list(node.value)
        items[head] = _set_node(items[head], rest, o, path, (*done, head))
        return yaml.SequenceNode(node.tag, items, node.start_mark, node.end_mark, flow_style=node.flow_style)
    if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
        node = yaml.MappingNode("tag:yaml.org,2002:map", [], node.start_mark, node.end_mark)
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{o.target}: {where} holds {_value(node, path)!r}, not a mapping with key {head!r}",
                          path, _line(node))
    found = _mapping(node, path, where).get(head)  # merged ``<<`` keys too
    child = found[1] if found is not None else yaml.ScalarNode("tag:yaml.org,2002:null", "", o.node.start_mark,
                                                                 o.node.end_mark)
    key_node = yaml.ScalarNode("tag:yaml.org,2002:str", head, o.node.start_mark, o.node.end_mark)
    pairs = [(k, v) for k, v in node.value if not (isinstance(k, yaml.ScalarNode) and k.value == head
                                                   and k.tag != "tag:yaml.org,2002:merge")]
    at = next((n for n, (k, _) in enumerate(node.value) if isinstance(k, yaml.ScalarNode) and k.value == head), len(pairs))
    pairs.insert(at, (key_node, _set_node(child, rest, o, path, (*done, head))))
    return yaml.MappingNode(node.tag, pairs, node.start_mark, node.end_mark, flow_style=node.flow_style)


def _blame_override(exc: ConfigError, overrides: list[Override], applied: dict[str, int | None],
                    path: Path) -> ConfigError:
    """``exc`` told as the ``--set`` it is about (its line is an override's), or naming the overrides of the
    step it is about; else unchanged."""
    if not overrides or exc.line is None:
        return exc
    for o in overrides:
        if exc.line == o.line:
            return ConfigError(f"{o.target}: {exc.problem}", path)
    for step, line in applied.items():
        if exc.line != line:
            continue
        # an error about the step as a whole (a check across its fields): the override it names, if one
        mine = [o for o in overrides if o.step == step]
        named = [o for o in mine if re.search(rf"(?<![\w-]){re.escape(str(o.keys[0]))}(?![\w-])", exc.problem)]
        if len(named) == 1:
            return ConfigError(f"{named[0].target}: {exc.problem}", path)
        return ConfigError(f"{exc.problem} (with {', '.join(f'--set {o.text}' for o in mine)})", path, exc.line)
    return exc


def _load_step(node: yaml.Node, path: Path, base: Path, pipeline: Pipeline, inside: Path | None = None) -> Step:
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
                               f"{what}.collection", inside=inside)
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
            elif _local_path_value(raw):  # a literal local path (a model folder): from the file's folder
                raw = str(safe_path(raw, base, path, _line(value_node), f"{what}.{key}", inside=inside))
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
            elif where[-1] in LOCAL_PATH_OPTIONS or _local_path_value(text):  # a file or folder of the user's
                local = str(safe_path(text, base, path, ref_line, f"{what}: {'.'.join(where)}", inside=inside))
                if len(where) > 1:
                    _set(value, where[1:], local)
                else:
                    value = local
        if key == "datasets" and isinstance(value, list):  # collections evaluated by an eval step
            value = [str(safe_path(v, base, path, _line(value_node), f"{what}.datasets", inside=inside))
                     for v in value]
        values[key] = value
        lines[key] = _line(value_node)
    missing = [key for key, spec in stage.inputs.items() if key not in inputs]
    if missing:
        raise ConfigError(f"{what}: missing {', '.join(missing)} (" + "; ".join(
            f"{k}: {stage.inputs[k].help}, a {' or '.join(stage.inputs[k].kinds)} artefact" for k in missing) + ")",
            path, line)
    config = build_config(stage.config, values, what=what, path=path, lines=lines, line=line,
                          key_lines=_key_lines(node, path, what))
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


def _jsonable(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))


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
    if hasattr(work, "base"):
        work.base = pipeline.base
    if getattr(work, "settings", False) is None:
        work.settings = {**_jsonable(raw), **{key: value for key, value in step.inputs.items()}}
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
    with artefact_lock(pipeline.workdir, what=f"pipeline's workdir (pipeline {pipeline.name!r})"):
        for sid, step in pipeline.steps.items():
            if only and sid not in only:
                continue
            log.info("pipeline %s: step %s (%s)", pipeline.name, sid, step.stage.name)
            runs.append(StepRun(sid, step.stage.name, prepare_step(pipeline, sid).run(force=sid in force)))
    return runs


def check_judgments(pipeline: Pipeline, *, only: set[str] | None = None) -> None:
    """Before anything runs: a ConfigError for each eval step (of those in ``only``) whose collection has no
    judged queries to score (``queries.jsonl`` and ``qrels/<split>.tsv``), naming what is missing and the
    steps that can run without them, so a corpus-only collection fails at once rather than after training."""
    blocked: dict[str, str] = {}
    for sid, step in pipeline.steps.items():
        if step.stage.name != "eval" or (only and sid not in only) or getattr(step.config, "datasets", None):
            continue
        split = getattr(step.config, "split", "test")
        missing = [name for name in ("queries.jsonl", f"qrels/{split}.tsv") if not (step.collection / name).is_file()]
        if missing:
            blocked[sid] = f"{step.collection} has no {' and no '.join(missing)}"
    if not blocked:
        return
    skipped = set(blocked)
    for sid in blocked:
        skipped.update(pipeline.downstream(sid))
    runnable = [sid for sid in pipeline.steps if sid not in skipped and (not only or sid in only)]
    first = next(iter(blocked))
    hint = (f"; the other steps run without judgments: {' '.join('--only ' + sid for sid in runnable)}"
            if runnable else "")
    raise ConfigError(f"step {first!r} (eval) scores judged queries, but {blocked[first]}: add them in BEIR format "
                      f"(queries.jsonl, qrels/<split>.tsv with query-id, corpus-id, score) to evaluate{hint}",
                      pipeline.path, pipeline.steps[first].line)


def _check_ids(pipeline: Pipeline, ids: set[str]) -> None:
    unknown = sorted(ids - set(pipeline.steps))
    if unknown:
        raise ConfigError(f"unknown step id(s) {', '.join(unknown)}; steps: {', '.join(pipeline.steps)}", pipeline.path)
