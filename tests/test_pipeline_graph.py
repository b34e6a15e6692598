"""The pipeline graph: validation before anything runs (file, line, what is accepted), dependency order,
references resolved to artefact parts, and each step's cost recorded in its manifest."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from retrdistill.artefacts import read_manifest
from retrdistill.errors import ConfigError
from retrdistill.pipeline import load_pipeline
from retrdistill.stages.base import Work


def write(tmp_path: Path, body: str, sample_dir: Path) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(f"name: t\ncollection: {sample_dir}\nworkdir: {tmp_path / 'work'}\n" + textwrap.dedent(body))
    return path


def load(tmp_path: Path, body: str, sample_dir: Path):
    return load_pipeline(write(tmp_path, body, sample_dir), base_dir=tmp_path)


CHAIN = """\
steps:
  - {id: q, stage: queries, options: {num_queries: 10}}
  - {id: m, stage: mine, queries: "@q", miner: bm25}
  - {id: s, stage: score, candidates: "@m"}
  - {id: t, stage: train, scores: "@s", save_untrained: true}
  - {id: i, stage: index, model: "@t"}
  - {id: e, stage: eval, systems: [{name: A, type: index, options: {path: "@i"}},
                                   {name: B, type: dense, options: {model: "@t.untrained"}}]}
"""


def test_chain_loads_in_dependency_order_and_resolves_parts(tmp_path, sample_dir):
    shuffled = CHAIN.replace('  - {id: q, stage: queries, options: {num_queries: 10}}\n', '')
    shuffled += '  - {id: q, stage: queries, options: {num_queries: 10}}\n'  # listed last, runs first
    p = load(tmp_path, shuffled, sample_dir)
    assert list(p.steps) == ["q", "m", "s", "t", "i", "e"]
    assert p.downstream("m") == ["s", "t", "i", "e"]
    refs = {(r.where, r.step, r.part) for r in p.steps["e"].refs}
    assert refs == {(("systems", "0", "options", "path"), "i", None), (("systems", "1", "options", "model"), "t", "untrained")}
    untrained = next(r for r in p.steps["e"].refs if r.part == "untrained")
    assert p.resolve(untrained) == tmp_path / "work" / "t" / "untrained"
    assert p.resolve(p.steps["i"].refs[0]) == tmp_path / "work" / "t" / "model"  # a bare @train means its model


@pytest.mark.parametrize("body, message, line", [
    ('  - {id: q, stage: queries}\n  - {id: m, stage: mine, queries: "@nope"}\n',
     "unknown step @nope; steps: q, m", 6),
    ('  - {id: q, stage: queries}\n  - {id: q, stage: queries}\n', "step id 'q' is used twice (first on line 5)", 6),
    ('  - {id: q, stage: queries}\n  - {id: m, stage: mine, queries: "@q"}\n  - {id: t, stage: train, scores: "@m"}\n',
     "@m is a mine step, whose artefact is 'candidates'; expected 'scores'", 7),
    ('  - {id: q, stage: queries}\n  - {id: e, stage: eval, systems: [{name: A, type: index, options: {path: "@q"}}]}\n',
     "@q is a queries step, whose artefact is 'queries'; expected 'index'", 6),
    ('  - {id: q, stage: queries}\n  - {id: m, stage: mine, queries: "@q.model"}\n',
     "a 'queries' artefact has no part 'model'", 6),
    ('  - {id: a, stage: score, candidates: "@b"}\n  - {id: b, stage: mine, queries: "@a"}\n',
     "@a is a score step, whose artefact is 'scores'; expected 'queries'", 6),
    ('  - {id: q, stage: queries, negatives: 3}\n', "unknown key 'negatives'; expected one of: allow_eval_queries", 5),
    ('  - {id: m, stage: mine, miner: bm25}\n', "missing queries (queries: the training queries", 5),
    ('  - {id: m, stage: mine, queries: q}\n', 'must reference a step ("@step-id") whose artefact is queries', 5),
    ('  - {id: q, stage: querys}\n', "unknown stage 'querys'; expected one of: queries, mine, score, train", 5),
    ('  - {id: "a/b", stage: queries}\n', "step id 'a/b'", 5),
    ('  - {id: q, stage: queries, source: nope}\n', "unknown query generator 'nope'", 5),
])
def test_bad_graphs_are_refused_with_file_line_and_what_is_accepted(tmp_path, sample_dir, body, message, line):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, "steps:\n" + body, sample_dir)
    assert message in str(err.value)
    assert err.value.path == str(tmp_path / "p.yaml")
    assert err.value.line == line


def test_a_cycle_is_refused_naming_it(tmp_path, sample_dir, monkeypatch):
    # the built-in stages cannot form a cycle through their typed inputs, but references inside options can:
    # an index step whose model is a train step downstream of it
    body = """\
steps:
  - {id: q, stage: queries}
  - {id: m, stage: mine, queries: "@q", miner: dense, options: {model: "@t"}}
  - {id: s, stage: score, candidates: "@m"}
  - {id: t, stage: train, scores: "@s"}
"""
    with pytest.raises(ConfigError, match=r"the steps form a cycle: @m -> @t -> @s -> @m"):  # each needs the next
        load(tmp_path, body, sample_dir)


def test_the_old_one_stage_per_kind_format_points_to_steps(tmp_path, sample_dir):
    with pytest.raises(ConfigError, match="pipelines now list `steps:`"):
        load(tmp_path, "stages:\n  queries: {}\n", sample_dir)


def test_bundled_pipelines_load(sample_dir):
    root = Path(__file__).resolve().parents[1]
    for path in sorted((root / "pipelines").glob("*.yaml")):
        p = load_pipeline(path, base_dir=root)
        assert p.steps, path


_MEASURED_STEPS = """
import json, sys, time
from pathlib import Path

import numpy as np

from retrdistill.artefacts import read_manifest
from retrdistill.stages.base import Work


def big(tmp: Path) -> dict:
    block = np.ones(300 * 2**20 // 8)  # 300 MB of anonymous memory, touched
    (tmp / "x.txt").write_text(str(float(block.sum())))
    time.sleep(0.2)  # RssAnon is sampled by a thread: hold the block past a few of its intervals
    del block
    return {}


root = Path(sys.argv[1])
Work("queries", "queries", root / "big", {"a": 1}, {}, big, step="x").run()
Work("queries", "queries", root / "small", {"a": 1}, {}, lambda t: (t / "y").write_text("1") and {}).run()
print(json.dumps({name: {"step": read_manifest(root / name).step, **read_manifest(root / name).memory}
                  for name in ("big", "small")}))
"""


def test_a_step_records_its_wall_time_and_peak_memory(tmp_path):
    # In its own interpreter, as a `retrdistill run` is: in the test run's long process a 300 MB block may be
    # served from memory an earlier test freed and that is still resident, so the step would add nothing to RSS.
    done = subprocess.run([sys.executable, "-c", _MEASURED_STEPS, str(tmp_path)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    memory = json.loads(done.stdout.strip().splitlines()[-1])
    big, small = memory["big"], memory["small"]
    assert big["step"] == "x"
    assert big["peak_rss_mb"] - big["start_rss_mb"] >= 250  # VmHWM reset at the step's start, else sampled
    assert big["peak_anon_mb"] - big["start_anon_mb"] >= 250
    assert small["peak_anon_mb"] - small["start_anon_mb"] < 100  # each step measures its own peak
    assert small["peak_rss_mb"] - small["start_rss_mb"] < 100


def test_yaml_merge_keys_share_a_step_recipe_and_explicit_keys_win(tmp_path, sample_dir):
    p = load(tmp_path, """\
    steps:
      - {id: q, stage: queries, options: {num_queries: 10}}
      - {id: m, stage: mine, queries: "@q", miner: bm25}
      - {id: s, stage: score, candidates: "@m"}
      - &student {id: t1, stage: train, scores: "@s", learning_rate: 1.0e-4, epochs: 2}
      - {<<: *student, id: t2, learning_rate: 3.0e-5}
    """, sample_dir)
    assert p.steps["t2"].stage.name == "train" and p.steps["t2"].config.epochs == 2
    assert (p.steps["t1"].config.learning_rate, p.steps["t2"].config.learning_rate) == (1.0e-4, 3.0e-5)
    assert [r.step for r in p.steps["t2"].refs] == ["s"]


@pytest.mark.parametrize("name", ["splade-sample.yaml", "splade-flops-sweep.yaml", "splade-minilm-sample.yaml"])
def test_a_pipeline_sharing_the_demos_workdir_declares_the_demos_steps_unchanged(name):
    """These files extend the demo in the demo's workdir: a shared step id with another config would rebuild the
    demo's artefact each time the other file runs, so the shared steps must stay equal."""
    root = Path(__file__).resolve().parents[1]
    demo = load_pipeline(root / "pipelines" / "msmarco-sample.yaml", base_dir=root)
    extension = load_pipeline(root / "pipelines" / name, base_dir=root)
    assert extension.workdir == demo.workdir
    shared = set(demo.steps) & set(extension.steps)
    assert {"queries", "candidates", "scores", "student", "index"} <= shared
    for sid in shared:
        mine, theirs = extension.steps[sid], demo.steps[sid]
        assert (mine.stage.name, mine.config, mine.inputs) == (theirs.stage.name, theirs.config, theirs.inputs), sid
