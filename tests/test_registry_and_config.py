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
    from retrdistill.stages.base import StageSpec

    for kind in registry.KINDS:
        for name in registry.names(kind):
            target = registry.entry(kind, name).load()
            if kind == "stage":
                assert isinstance(target, StageSpec) and target.name == name, name
            else:
                assert hasattr(target, "from_options"), f"{kind} {name}"


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
    head = "name: x\ncollection: data\nsteps:\n  - {id: q, stage: queries}\n"
    path = _pipeline(tmp_path, head + "  - id: m\n    stage: mine\n    queries: '@q'\n    depht: 3\n")
    with pytest.raises(ConfigError) as err:
        load_pipeline(path, base_dir=tmp_path)
    assert err.value.line == 8 and "unknown key 'depht'" in str(err.value) and str(path) in str(err.value)

    path = _pipeline(tmp_path, head + "  - id: m\n    stage: mine\n    queries: '@q'\n    miner: lucene\n")
    every_miner = ", ".join(registry.names("miner"))  # the message lists what the registry holds, in its order
    with pytest.raises(ConfigError, match=f"unknown miner 'lucene'; expected one of: {re.escape(every_miner)}$") as err:
        load_pipeline(path, base_dir=tmp_path)
    assert err.value.line == 5

    path = _pipeline(tmp_path, head + "  - {id: m, stage: mine, queries: '@q', depth: many}\n")
    with pytest.raises(ConfigError, match="mine\\).depth: expected int, got str") as err:
        load_pipeline(path, base_dir=tmp_path)
    assert err.value.line == 5

    path = _pipeline(tmp_path, "name: x\ncollection: data\nsteps:\n  - {id: t, stage: trian}\n")
    with pytest.raises(ConfigError, match="unknown stage 'trian'; expected one of: queries, mine, score, train, index, eval"):
        load_pipeline(path, base_dir=tmp_path)

    path = _pipeline(tmp_path, "name: x\ncollection: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML") as err:
        load_pipeline(path, base_dir=tmp_path)
    assert err.value.line is not None


ONE_STEP = "steps:\n  - {id: q, stage: queries}\n"


def test_pipeline_paths_cannot_escape_the_base_folder(tmp_path):
    path = _pipeline(tmp_path, "name: x\ncollection: ../../etc\n" + ONE_STEP)
    with pytest.raises(ConfigError, match="escapes the base folder"):
        load_pipeline(path, base_dir=tmp_path)
    path = _pipeline(tmp_path, f"name: x\ncollection: {tmp_path.parent}\n" + ONE_STEP)
    assert load_pipeline(path, base_dir=tmp_path).collection == tmp_path.parent  # absolute: the user's choice


def test_pipeline_yaml_is_loaded_safely(tmp_path):
    path = _pipeline(tmp_path, "name: !!python/object/apply:os.system ['echo pwned']\ncollection: d\n" + ONE_STEP)
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_pipeline(path, base_dir=tmp_path)


def test_shipped_pipelines_validate():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    files = sorted((root / "pipelines").glob("*.yaml"))
    assert files
    for f in files:
        load_pipeline(f, base_dir=root)


def test_every_source_file_is_packaged(tmp_path):
    """The wheel (packages found by setup.py) holds every module of retrdistill/ and cli/ (as retrdistill.cli)
    and the LLM templates: a new package needs no list, but a folder of modules without an __init__.py would be
    left out, and this says which."""
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    pytest.importorskip("setuptools")
    root = Path(__file__).resolve().parents[1]
    expected = {"retrdistill/" + p.relative_to(root / "retrdistill").as_posix()
                for p in (root / "retrdistill").rglob("*.py") if "__pycache__" not in p.parts}
    expected |= {"retrdistill/cli/" + p.name for p in (root / "cli").glob("*.py")}
    expected |= {"retrdistill/llm/templates/" + p.name for p in (root / "retrdistill" / "llm" / "templates").glob("*.txt")}
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(root)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("retrdistill-*.whl")
    packed = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(expected - packed)
    assert not missing, f"left out of the wheel (a folder without __init__.py?): {missing}"
