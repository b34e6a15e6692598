"""A tiny real pipeline (small sub-collection, 16 pseudo-queries, MiniLM as teacher and student, 2 training
steps) run end to end through ``run_pipeline``:

* reproducibility: the same pipeline and seed, run twice into separate work folders and caches on CPU, gives
  byte-identical candidates and scores and exactly the same evaluation means;
* staleness: an unchanged rerun skips everything, a train-only config change reruns train/index/eval only, an
  edited corpus line reruns every stage, and newer-format or foreign manifests are refused with a clear message.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from retrdistill.artefacts import FORMAT_VERSION, MANIFEST
from retrdistill.errors import ManifestError
from retrdistill.pipeline import load_pipeline, run_pipeline
from retrdistill.artefacts import upstream

pytestmark = pytest.mark.slow

MINILM = "offline:all-MiniLM-L6-v2"
STEPS = ["queries", "candidates", "scores", "student", "index", "eval"]


def _pipeline_yaml(root: Path, collection: Path, learning_rate: float = 2e-5) -> str:
    return f"""
name: tiny
collection: {collection}
workdir: {root / "work"}
cache_dir: {root / "cache"}
steps:
  - {{id: queries, stage: queries, source: inverse-cloze, options: {{num_queries: 16, seed: 13}}}}
  - {{id: candidates, stage: mine, queries: "@queries", miner: bm25, depth: 30, negatives: 4, rank_max: 30, seed: 13}}
  - {{id: scores, stage: score, candidates: "@candidates", teacher: bi-encoder,
     options: {{model: "{MINILM}", max_seq_length: 64, batch_size: 32}}}}
  - id: student
    stage: train
    scores: "@scores"
    student: dense
    options: {{model: "{MINILM}", max_seq_length: 64}}
    negatives_per_query: 2
    max_steps: 2
    batch_size: 8
    learning_rate: {learning_rate:.1e}
    seed: 13
  - {{id: index, stage: index, model: "@student", indexer: faiss-flat, max_seq_length: 64, batch_size: 32}}
  - id: eval
    stage: eval
    split: test
    metrics: [ndcg@10, recall@100]
    measure_cost: false
    systems:
      - {{name: BM25, type: bm25}}
      - {{name: student, type: index, options: {{path: "@index"}}}}
"""


def _setup(root: Path, small_collection: Path, **kw):
    collection = root / "collection"
    if not collection.exists():
        shutil.copytree(small_collection, collection)
    path = root / "pipeline.yaml"
    path.write_text(_pipeline_yaml(root, collection, **kw), encoding="utf-8")
    return load_pipeline(path, base_dir=root)


def _ran(results) -> tuple[list[str], list[str]]:
    return [r.id for r in results if r.skipped], [r.id for r in results if not r.skipped]


def _snapshot(root: Path) -> dict:
    work = root / "work"
    results = json.loads((work / "eval" / "results.json").read_text())
    return {
        "candidates": (work / "candidates" / "candidates.jsonl").read_bytes(),
        "queries": (work / "queries" / "queries.jsonl").read_bytes(),
        "scores": (work / "scores" / "scores.jsonl").read_bytes(),
        "means": {name: system["mean"] for name, system in results["systems"].items()},
        "per_query": {name: system["per_query"] for name, system in results["systems"].items()},
    }


@pytest.fixture(scope="module")
def first_run(small_collection, tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline-a")
    pipeline = _setup(root, small_collection)
    results = run_pipeline(pipeline)
    assert _ran(results) == ([], STEPS)
    return root, _snapshot(root)


def test_same_seed_same_outputs_on_cpu(first_run, small_collection, tmp_path):
    _, first = first_run
    pipeline = _setup(tmp_path, small_collection)
    results = run_pipeline(pipeline)
    assert _ran(results) == ([], STEPS), "a separate cache: nothing may be reused"
    second = _snapshot(tmp_path)
    assert second["queries"] == first["queries"]
    assert second["candidates"] == first["candidates"]
    assert second["scores"] == first["scores"]
    assert second["means"] == first["means"]  # exactly, not approximately
    assert second["per_query"] == first["per_query"]
    assert set(first["means"]) == {"BM25", "student"}


def test_stale_inputs_and_configs_rerun_exactly_the_affected_stages(first_run, small_collection):
    root, _ = first_run
    skipped, ran = _ran(run_pipeline(_setup(root, small_collection)))
    assert (skipped, ran) == (STEPS, []), "nothing changed: every stage is current"

    # Only the train config changes: the stages before it are reused, train and everything after it rerun.
    skipped, ran = _ran(run_pipeline(_setup(root, small_collection, learning_rate=3e-5)))
    assert skipped == ["queries", "candidates", "scores"]
    assert ran == ["student", "index", "eval"]

    # One corpus line edited: every stage depends on the corpus, so every stage reruns.
    corpus = root / "collection" / "corpus.jsonl"
    lines = corpus.read_text(encoding="utf-8").rstrip("\n").split("\n")  # not splitlines(): texts hold U+0085
    doc = json.loads(lines[-1])
    doc["text"] += " (edited)"
    lines[-1] = json.dumps(doc, ensure_ascii=False)
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    skipped, ran = _ran(run_pipeline(_setup(root, small_collection, learning_rate=3e-5)))
    assert (skipped, ran) == ([], STEPS)


def test_newer_and_foreign_manifests_stop_the_pipeline(first_run, small_collection):
    root, _ = first_run
    pipeline = _setup(root, small_collection)
    # The manifest of a stage's own folder is read before any of its work, so a refused one fails fast.
    scores_manifest = root / "work" / "scores" / MANIFEST
    original = scores_manifest.read_text()
    raw = json.loads(original)
    raw["format_version"] = FORMAT_VERSION + 1
    scores_manifest.write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match="newer retrdistill") as err:
        run_pipeline(pipeline)
    assert str(scores_manifest) in str(err.value) and "upgrade retrdistill or rebuild" in str(err.value)
    scores_manifest.write_text(original)

    mine_manifest = root / "work" / "candidates" / MANIFEST
    original = mine_manifest.read_text()
    mine_manifest.write_text(json.dumps({"format": "someone-elses-tool", "format_version": 1}))
    with pytest.raises(ManifestError, match="not a retrdistill manifest") as err:
        run_pipeline(pipeline)
    assert str(mine_manifest) in str(err.value)
    mine_manifest.write_text(original)
    skipped, ran = _ran(run_pipeline(pipeline, only={"queries", "candidates"}))
    assert (skipped, ran) == (["queries", "candidates"], []), "a restored manifest is trusted again"
    assert upstream(root / "work" / "scores", "scores").kind == "scores"
