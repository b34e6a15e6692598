"""Safety: nothing a user hands us (pipeline YAML, artefact folders, model folders) can run code or write outside
the base folder without being asked to.

* YAML is read with safe-loading semantics: a ``!!python/...`` tag is refused, and constructs nothing;
* no pickle is loaded: a source scan (AST, not regex) of the whole package for ``pickle``/``dill``/``joblib``
  loads, ``torch.load`` without ``weights_only=True``, ``allow_pickle=True``, unsafe YAML loaders,
  ``eval``/``exec`` and ``trust_remote_code=True``;
* ``trust_remote_code`` is off unless the caller asks for it;
* relative pipeline paths may not leave the base folder (absolute paths are the user's explicit choice).
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from retrdistill.errors import ConfigError
from retrdistill.pipeline import load_pipeline

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(ROOT / "retrdistill").rglob("*.py"), *(ROOT / "cli").rglob("*.py")])

PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}
PICKLE_LOADERS = {"load", "loads", "Unpickler", "open"}
UNSAFE_YAML = {"unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_calls(source: str, filename: str = "<src>") -> list[str]:
    """Every call or import in ``source`` that could deserialize code or run remote code; empty when safe."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLE_MODULES:
            bad = [a.name for a in node.names if a.name in PICKLE_LOADERS | {"*"}]
            if bad:
                found.append(f"{where}: from {node.module} import {', '.join(bad)}")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        head, _, last = name.rpartition(".")
        if head.split(".")[-1] in PICKLE_MODULES and last in PICKLE_LOADERS:
            found.append(f"{where}: {name}() deserializes pickled code")
        if name in ("torch.load",) and not _is_true(_keyword(node, "weights_only")):
            found.append(f"{where}: torch.load() without weights_only=True")
        if _is_true(_keyword(node, "allow_pickle")):
            found.append(f"{where}: {name}(allow_pickle=True)")
        if name.endswith("read_pickle"):
            found.append(f"{where}: {name}() reads a pickle")
        if head.split(".")[-1] == "yaml" and last in UNSAFE_YAML:
            found.append(f"{where}: {name}() can construct arbitrary objects")
        if head.split(".")[-1] == "yaml" and last in ("load", "load_all"):
            loader = _keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            if loader is None or _dotted(loader).split(".")[-1] not in SAFE_YAML_LOADERS:
                found.append(f"{where}: {name}() without a safe Loader")
        if _is_true(_keyword(node, "trust_remote_code")):
            found.append(f"{where}: trust_remote_code=True")
        if name in ("eval", "exec"):
            found.append(f"{where}: {name}()")
    return found


def test_the_scanner_catches_each_unsafe_pattern():
    bad = """
import pickle, torch, yaml, numpy as np
from joblib import load
pickle.load(open("x", "rb")); pickle.loads(b""); torch.load("m.bin"); torch.load("m.bin", weights_only=False)
np.load("a.npy", allow_pickle=True); yaml.load("a: 1", Loader=yaml.Loader); yaml.load("a: 1"); yaml.unsafe_load("")
AutoModel.from_pretrained("x", trust_remote_code=True); eval("1")
"""
    assert len(unsafe_calls(bad)) == 11
    good = """
import torch, yaml, numpy as np
torch.load("m.bin", weights_only=True); np.load("a.npy", mmap_mode="r"); yaml.safe_load("a: 1")
yaml.load("a: 1", Loader=yaml.SafeLoader); model.eval(); load_model(trust_remote_code=trust_remote_code)
"""
    assert unsafe_calls(good) == []


def test_package_source_loads_no_pickle_and_no_remote_code():
    assert len(SOURCES) > 20, "the scan must see the package"
    found = [hit for f in SOURCES for hit in unsafe_calls(f.read_text(encoding="utf-8"), str(f.relative_to(ROOT)))]
    assert found == []


# ------------------------------------------------------------------ trust_remote_code
def test_trust_remote_code_is_off_unless_asked(monkeypatch, tmp_path):
    import sentence_transformers

    from retrdistill import models

    for loader in (models.load_sentence_transformer, models.load_cross_encoder):
        assert inspect.signature(loader).parameters["trust_remote_code"].default is False
    seen = []

    class Fake:
        def __init__(self, *args, **kwargs):
            seen.append(kwargs.get("trust_remote_code", "not passed"))

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", Fake)
    monkeypatch.setattr(sentence_transformers, "CrossEncoder", Fake)
    folder = str(tmp_path)  # a local folder: resolved without the hub (the loader is replaced above)
    models.load_sentence_transformer(folder)
    models.load_cross_encoder(folder)
    models.load_sentence_transformer(folder, trust_remote_code=True)
    assert seen == [False, False, True]


def test_no_registered_part_turns_remote_code_on_by_default():
    import dataclasses

    from retrdistill.registry import REGISTRY

    for kind, parts in REGISTRY.items():
        for entry in parts.values():
            options = getattr(entry.load(), "Options", None)
            for f in dataclasses.fields(options) if options else []:
                if "remote_code" in f.name:
                    assert f.default is False, f"{kind} {entry.name}: {f.name} defaults to {f.default!r}"


# ------------------------------------------------------------------ YAML
def _pipeline(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("tagged", [
    "!!python/object/apply:builtins.open ['{marker}', 'w']",
    "!!python/object/new:builtins.open ['{marker}', 'w']",
    "!!python/name:os.system",
    "!!python/object:argparse.Namespace {{x: 1}}",
])
def test_python_yaml_tags_in_stage_options_are_refused_and_construct_nothing(tmp_path, tagged):
    marker = tmp_path / "created-by-yaml"
    value = tagged.format(marker=marker)
    text = f"name: x\ncollection: data\nsteps:\n  - id: q\n    stage: queries\n    options:\n      num_queries: {value}\n"
    with pytest.raises(ConfigError, match="not valid YAML") as err:
        load_pipeline(_pipeline(tmp_path, text), base_dir=tmp_path)
    assert err.value.line == 7
    assert not marker.exists()


# ------------------------------------------------------------------ paths
STEPS = "steps:\n  - {id: q, stage: queries}\n"


@pytest.mark.parametrize("key", ["collection", "workdir", "cache_dir"])
def test_no_relative_path_leaves_the_base_folder(tmp_path, key):
    base = tmp_path / "base"
    base.mkdir()
    extra = "" if key == "collection" else f"{key}: sub/../../outside\n"
    collection = "sub/../../outside" if key == "collection" else "data"
    with pytest.raises(ConfigError, match=f"{key}: relative path .* escapes the base folder"):
        load_pipeline(_pipeline(base, f"name: x\ncollection: {collection}\n{extra}" + STEPS), base_dir=base)
    inside = f"{key}: sub/../inside\n" if key != "collection" else ""
    pipeline = load_pipeline(_pipeline(base, f"name: x\ncollection: {'sub/../inside' if key == 'collection' else 'data'}\n"
                                             f"{inside}" + STEPS), base_dir=base)
    assert getattr(pipeline, key) == (base / "inside").resolve()


def test_a_symlink_inside_the_base_folder_cannot_lead_out(tmp_path):
    base, outside = tmp_path / "base", tmp_path / "outside"
    base.mkdir()
    outside.mkdir()
    (base / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ConfigError, match="escapes the base folder"):
        load_pipeline(_pipeline(base, "name: x\ncollection: data\nworkdir: link/runs\n" + STEPS), base_dir=base)
    pipeline = load_pipeline(_pipeline(base, f"name: x\ncollection: data\nworkdir: {outside}/runs\n" + STEPS),
                             base_dir=base)
    assert pipeline.workdir == outside / "runs"  # absolute: the user's explicit choice


def test_default_output_folders_named_after_the_pipeline_stay_inside(tmp_path):
    with pytest.raises(ConfigError, match="workdir: relative path 'runs/../../escape' escapes the base folder"):
        load_pipeline(_pipeline(tmp_path, "name: ../../escape\ncollection: data\n" + STEPS), base_dir=tmp_path)
    pipeline = load_pipeline(_pipeline(tmp_path, "name: ok\ncollection: data\n" + STEPS), base_dir=tmp_path)
    for folder in (pipeline.workdir, pipeline.cache_dir):
        assert folder.is_relative_to(tmp_path.resolve())


def test_eval_index_paths_cannot_leave_the_base_folder(tmp_path):
    text = ("name: x\ncollection: data\nsteps:\n  - id: e\n    stage: eval\n    systems:\n"
            "      - {name: s, type: index, options: {path: ../elsewhere/index}}\n")
    with pytest.raises(ConfigError, match="escapes the base folder"):
        load_pipeline(_pipeline(tmp_path, text), base_dir=tmp_path)


@pytest.mark.parametrize("name", ["../../etc/passwd", "..", "/abs/path", "a/b\\c", ".", "名前 with spaces"])
def test_system_names_become_plain_file_names(name):
    from retrdistill.stages.evaluate import _slug

    run_file = f"{_slug(name)}.trec"  # what eval writes under runs/
    assert "/" not in run_file and "\\" not in run_file and Path(run_file).name == run_file
    assert run_file not in (".", "..")
