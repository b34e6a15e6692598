"""A branched pipeline run end to end on a real sub-collection with real (tiny) models: two mine branches
(BM25 and dense), two train steps fed by one score step, one leaderboard. Per-step skipping, ``--plan``, and
staleness confined to the branch that changed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retrdistill.artefacts import read_manifest
from retrdistill.cli.app import app
from retrdistill.pipeline import load_pipeline, plan_pipeline, run_pipeline

TINY = "offline:tiny-bert-mlm"
ALL = ["q", "bm25-neg", "dense-neg", "s-bm25", "s-dense", "t-bm25", "t-bm25-lr", "t-dense", "idx", "board"]


def _yaml(root: Path, collection: Path, dense_negatives: int = 3) -> str:
    student = f"""student: pruned
    options: {{model: "{TINY}", max_seq_length: 48}}
    negatives_per_query: 2
    max_steps: 2
    batch_size: 4
    seed: 13"""
    return f"""
name: branches
collection: {collection}
workdir: {root / "work"}
cache_dir: {root / "cache"}
steps:
  - {{id: q, stage: queries, options: {{num_queries: 12, seed: 13}}}}
  - {{id: bm25-neg, stage: mine, queries: "@q", miner: bm25, depth: 20, negatives: 3, rank_max: 20}}
  - id: dense-neg
    stage: mine
    queries: "@q"
    miner: dense
    options: {{model: "{TINY}", max_seq_length: 48}}
    depth: 20
    negatives: {dense_negatives}
    rank_max: 20
  - {{id: s-bm25, stage: score, candidates: "@bm25-neg", teacher: bi-encoder,
     options: {{model: "{TINY}", max_seq_length: 48}}}}
  - {{id: s-dense, stage: score, candidates: "@dense-neg", teacher: bi-encoder,
     options: {{model: "{TINY}", max_seq_length: 48}}}}
  - id: t-bm25
    stage: train
    scores: "@s-bm25"
    save_untrained: true
    {student}
    learning_rate: 1.0e-4
  - id: t-bm25-lr
    stage: train
    scores: "@s-bm25"
    {student}
    learning_rate: 1.0e-3
  - id: t-dense
    stage: train
    scores: "@s-dense"
    {student}
    learning_rate: 1.0e-4
  - {{id: idx, stage: index, model: "@t-bm25", max_seq_length: 48}}
  - id: board
    stage: eval
    metrics: [ndcg@10]
    measure_cost: false
    baseline: untrained
    systems:
      - {{name: untrained, type: dense, options: {{model: "@t-bm25.untrained", max_seq_length: 48}}}}
      - {{name: bm25 negatives, type: index, options: {{path: "@idx"}}}}
      - {{name: bm25 negatives lr 1e-3, type: dense, options: {{model: "@t-bm25-lr", max_seq_length: 48}}}}
      - {{name: dense negatives, type: dense, options: {{model: "@t-dense", max_seq_length: 48}}}}
"""


def _setup(root: Path, small_collection: Path, **kw) -> Path:
    collection = root / "collection"
    if not collection.exists():
        shutil.copytree(small_collection, collection)
    path = root / "pipeline.yaml"
    path.write_text(_yaml(root, collection, **kw), encoding="utf-8")
    return path


def _ran(runs) -> tuple[list[str], list[str]]:
    return [r.id for r in runs if r.skipped], [r.id for r in runs if not r.skipped]


@pytest.fixture(scope="module")
def finished(small_collection, tmp_path_factory):
    root = tmp_path_factory.mktemp("branches")
    path = _setup(root, small_collection)
    runs = run_pipeline(load_pipeline(path, base_dir=root))
    assert _ran(runs) == ([], ALL)
    return root, path, runs


def test_every_step_writes_its_folder_and_the_leaderboard_has_every_branch(finished):
    root, _, runs = finished
    work = root / "work"
    for step in ALL:
        manifest = read_manifest(work / step)
        assert manifest is not None and manifest.step == step
        assert manifest.memory["peak_rss_mb"] > 0 and manifest.seconds > 0
    assert (work / "t-bm25" / "untrained" / "config.json").is_file()
    assert not (work / "t-dense" / "untrained").exists()
    systems = read_manifest(work / "board").counts["systems"]
    assert set(systems) == {"untrained", "bm25 negatives", "bm25 negatives lr 1e-3", "dense negatives"}
    # two train steps fed by one score step read the same scores, and learned different weights
    assert read_manifest(work / "t-bm25").inputs["scores"] == read_manifest(work / "t-bm25-lr").inputs["scores"]
    a = (work / "t-bm25" / "model" / "model.safetensors").read_bytes()
    b = (work / "t-bm25-lr" / "model" / "model.safetensors").read_bytes()
    assert a != b


def test_a_finished_pipeline_is_current_in_plan_and_run(finished):
    root, path, _ = finished
    pipeline = load_pipeline(path, base_dir=root)
    assert {p.id: p.state for p in plan_pipeline(pipeline)} == {s: "current" for s in ALL}
    assert _ran(run_pipeline(pipeline)) == (ALL, [])
    result = CliRunner().invoke(app, ["run", str(path), "--plan", "--base-dir", str(root), "--quiet"])
    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.output.splitlines() if line.startswith("  ")]
    assert [(line[0], line[2]) for line in lines] == [(s, "current") for s in ALL]


def test_changing_one_branch_reruns_that_branch_and_the_eval_only(finished, small_collection):
    root, _, _ = finished
    path = _setup(root, small_collection, dense_negatives=2)
    pipeline = load_pipeline(path, base_dir=root)
    plan = {p.id: (p.state, p.why) for p in plan_pipeline(pipeline)}
    assert plan["dense-neg"] == ("stale", "config changed: negatives")
    assert plan["s-dense"] == ("stale", "input changed: upstream @dense-neg reruns")
    assert plan["board"][0] == "stale" and "@t-dense" in plan["board"][1]
    stale = [s for s, (state, _) in plan.items() if state != "current"]
    assert stale == ["dense-neg", "s-dense", "t-dense", "board"]
    skipped, ran = _ran(run_pipeline(pipeline))
    assert ran == stale
    assert skipped == [s for s in ALL if s not in stale]
    # --force and --only take step ids
    assert _ran(run_pipeline(pipeline, only={"s-bm25"}, force={"s-bm25"})) == ([], ["s-bm25"])
    assert {p.id: p.state for p in plan_pipeline(pipeline)} == {s: "current" for s in ALL}  # same output: same key
