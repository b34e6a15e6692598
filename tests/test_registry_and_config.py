"""One registry feeds the CLI choices, config validation and error messages; pipeline files fail with file+line."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from retrdistill import registry
from retrdistill.cli.app import app
from retrdistill.errors import ConfigError
from retrdistill.pipeline import load_pipeline

runner = CliRunner()


def test_every_registered_target_imports_and_has_options_constructor():
    for kind in registry.KINDS:
        for name in registry.names(kind):
            cls = registry.entry(kind, name).load()
            assert hasattr(cls, "from_options"), f"{kind} {name}"


@pytest.mark.parametrize("command, kind, flag", [
    ("mine", "miner", "--miner"), ("score", "teacher", "--teacher"), ("train", "loss", "--loss"),
    ("train", "student", "--student"), ("index", "indexer", "--indexer"), ("queries", "query_generator", "--source"),
])
def test_cli_choices_are_the_registry(command, kind, flag):
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"})
    assert result.exit_code == 0
    line = next(l for l in result.output.splitlines() if flag in l)
    shown = re.search(r"<([^>]+)>", line).group(1).split("|")
    assert shown == registry.names(kind)


def test_unknown_name_error_lists_every_registered_name():
    with pytest.raises(ConfigError) as err:
        registry.entry("teacher", "oracle")
    for name in registry.names("teacher"):
        assert name in str(err.value)


def test_unknown_option_error_lists_known_options():
    with pytest.raises(ConfigError, match=r"unknown option\(s\) k3 for miner 'bm25'; expected: b, k1, method"):
        registry.build("miner", "bm25", {"k3": 1}, corpus=None, cache_dir=".")


def _pipeline(tmp_path, text):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


def test_pipeline_errors_name_file_and_line(tmp_path):
    path = _pipeline(tmp_path, "name: x\ncollection: data\nstages:\n  mine:\n    miner: bm25\n    depht: 3\n")
    with pytest.raises(ConfigError) as err:
        load_pipeline(path, base_dir=tmp_path)
    assert err.value.line == 6 and "unknown key 'depht'" in str(err.value) and str(path) in str(err.value)

    path = _pipeline(tmp_path, "name: x\ncollection: data\nstages:\n  queries: {}\n  mine:\n    miner: lucene\n")
    with pytest.raises(ConfigError, match="unknown miner 'lucene'; expected one of: bm25, dense") as err:
        load_pipeline(path, base_dir=tmp_path)
    assert err.value.line == 6

    path = _pipeline(tmp_path, "name: x\ncollection: data\nstages:\n  queries: {}\n  mine: {depth: many}\n")
    with pytest.raises(ConfigError, match="mine.depth: expected int, got str") as err:
        load_pipeline(path, base_dir=tmp_path)
    assert err.value.line == 5

    path = _pipeline(tmp_path, "name: x\ncollection: data\nstages:\n  trian: {}\n")
    with pytest.raises(ConfigError, match="unknown stage 'trian'; expected one of: queries, mine, score, train, index, eval"):
        load_pipeline(path, base_dir=tmp_path)

    path = _pipeline(tmp_path, "name: x\ncollection: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML") as err:
        load_pipeline(path, base_dir=tmp_path)
    assert err.value.line is not None


def test_pipeline_paths_cannot_escape_the_base_folder(tmp_path):
    path = _pipeline(tmp_path, "name: x\ncollection: ../../etc\nstages: {}\n")
    with pytest.raises(ConfigError, match="escapes the base folder"):
        load_pipeline(path, base_dir=tmp_path)
    path = _pipeline(tmp_path, f"name: x\ncollection: {tmp_path.parent}\nstages: {{}}\n")
    assert load_pipeline(path, base_dir=tmp_path).collection == tmp_path.parent  # absolute: the user's choice


def test_pipeline_yaml_is_loaded_safely(tmp_path):
    path = _pipeline(tmp_path, "name: !!python/object/apply:os.system ['echo pwned']\ncollection: d\nstages: {}\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_pipeline(path, base_dir=tmp_path)


def test_pipeline_stage_chain_must_be_complete(tmp_path):
    path = _pipeline(tmp_path, "name: x\ncollection: d\nstages:\n  queries: {}\n  score: {}\n")
    with pytest.raises(ConfigError, match="need the earlier stage\\(s\\) mine"):
        load_pipeline(path, base_dir=tmp_path)


def test_shipped_pipelines_validate():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    files = sorted((root / "pipelines").glob("*.yaml"))
    assert files
    for f in files:
        load_pipeline(f, base_dir=root)
