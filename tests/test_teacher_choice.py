"""Label-free teacher choice on a real sub-collection: candidates rated on probe pseudo-queries, the pick and the
weighted ensemble used by a score step, and negatives mined by more than one retriever."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from retrdistill import registry
from retrdistill.artefacts import fingerprint_obj, read_manifest
from retrdistill.kinds import read_candidates, read_scores
from retrdistill.pipeline import load_pipeline, plan_pipeline, run_pipeline
from retrdistill.stages.rate_teachers import agreement, estimates, pseudo_mrr, standardised, weights_from

TINY = "offline:tiny-bert-mlm"
MINILM = "offline:all-MiniLM-L6-v2"


def test_signals_on_hand_made_runs():
    runs = {"a": {"q1": ["d1", "d2"], "q2": ["d3", "d4"]},
            "b": {"q1": ["d1", "d5"], "q2": ["d9", "d8"]},
            "c": {"q1": ["d7", "d1"], "q2": ["d3", "d8"]}}
    positives = {"q1": {"d1": 1}, "q2": {"d3": 1}}
    assert pseudo_mrr(runs["a"], positives) == 1.0
    assert pseudo_mrr(runs["b"], positives) == 0.5
    assert pseudo_mrr(runs["c"], positives) == pytest.approx((0.5 + 1.0) / 2)
    agree = agreement(runs, k=2)
    # a shares {d1} with b on q1, nothing on q2; {d1} with c on q1, {d3} with c on q2: (1 + 0 + 1 + 1) / 4 / 2
    assert agree["a"] == pytest.approx(3 / 8)
    z = standardised({"x": 1.0, "y": 2.0, "z": 3.0})
    assert z["y"] == 0.0 and z["z"] == pytest.approx(-z["x"]) and z["z"] == pytest.approx(math.sqrt(1.5))
    assert standardised({"x": 1.0, "y": 1.0}) == {"x": 0.0, "y": 0.0}
    signals = {"a": {"pseudo-mrr@10": 0.9, "agreement@10": 0.1}, "b": {"pseudo-mrr@10": 0.5, "agreement@10": 0.5},
               "c": {"pseudo-mrr@10": 0.7, "agreement@10": 0.6}}
    est = estimates(signals)
    assert max(est, key=est.get) == "c"  # neither the best on one signal alone
    w = weights_from(est, temperature=1.0, min_weight=0.0)
    assert sum(w.values()) == pytest.approx(1.0) and max(w, key=w.get) == "c"
    assert list(weights_from(est, temperature=0.01, min_weight=0.05)) == ["c"]


def _pipeline(root: Path, collection: Path, select: str) -> Path:
    text = f"""
name: choice
collection: {collection}
workdir: {root / "work"}
cache_dir: {root / "cache"}
steps:
  - {{id: probe, stage: queries, options: {{num_queries: 16, seed: 29}}}}
  - {{id: q, stage: queries, options: {{num_queries: 8, seed: 13}}}}
  - id: rate
    stage: rate-teachers
    queries: "@probe"
    select: {select}
    candidates:
      - {{name: bm25, teacher: bm25}}
      - {{name: tiny, teacher: bi-encoder, options: {{model: "{TINY}", max_seq_length: 48}}}}
      - {{name: minilm, teacher: bi-encoder, options: {{model: "{MINILM}", max_seq_length: 64}}}}
  - id: neg
    stage: mine
    queries: "@q"
    miner: fused
    options:
      members:
        - {{miner: bm25}}
        - {{miner: dense, options: {{model: "{TINY}", max_seq_length: 48}}}}
    depth: 20
    negatives: 3
    rank_max: 20
  - {{id: s, stage: score, candidates: "@neg", teacher: chosen, options: {{choice: "@rate"}}}}
"""
    path = root / "pipeline.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def picked(tmp_path_factory, small_collection):
    root = tmp_path_factory.mktemp("choice-pick")
    path = _pipeline(root, small_collection, "pick")
    run_pipeline(load_pipeline(path))
    return root


def test_rate_teachers_records_signals_and_a_pick(picked):
    choice = json.loads((picked / "work" / "rate" / "choice.json").read_text())
    assert set(choice["signals"]) == {"bm25", "tiny", "minilm"}
    for values in choice["signals"].values():
        assert 0.0 <= values["pseudo-mrr@10"] <= 1.0 and 0.0 <= values["agreement@10"] <= 1.0
    assert choice["picked"] == choice["ranking"][0] == max(choice["estimate"], key=choice["estimate"].get)
    assert choice["probe_queries"] == 16
    # the inverse-cloze probe is a span of its passage: BM25 finds it, the untrained tiny BERT barely does
    assert choice["signals"]["bm25"]["pseudo-mrr@10"] > choice["signals"]["tiny"]["pseudo-mrr@10"]
    assert read_manifest(picked / "work" / "rate").kind == "teacher-choice"


def test_the_chosen_teacher_is_the_pick_itself(picked, small_collection):
    from retrdistill.data.beir import open_collection

    choice = json.loads((picked / "work" / "rate" / "choice.json").read_text())
    spec = choice["candidates"][choice["picked"]]
    corpus = open_collection(small_collection, picked / "cache" / "corpora").corpus
    chosen = registry.build("teacher", "chosen", {"choice": str(picked / "work" / "rate")}, corpus=corpus,
                            cache_dir=picked / "cache")
    direct = registry.build("teacher", spec["teacher"], spec["options"], corpus=corpus, cache_dir=picked / "cache")
    assert chosen.fingerprint() == direct.fingerprint()  # caches and embeddings shared with the pick
    scores = read_manifest(picked / "work" / "s")
    assert scores.inputs["teacher"] == fingerprint_obj(direct.fingerprint())
    for group in read_scores(picked / "work" / "s"):
        expected = direct.score_groups({group.qid: group.query}, {group.qid: group.docids})[group.qid]
        assert group.scores == pytest.approx(expected.tolist(), rel=1e-5, abs=1e-5)


def test_fused_mining_takes_negatives_from_both_retrievers(picked, small_collection):
    from retrdistill.data.beir import open_collection

    corpus = open_collection(small_collection, picked / "cache" / "corpora").corpus
    fused = registry.build("miner", "fused", {"members": [
        {"miner": "bm25"}, {"miner": "dense", "options": {"model": TINY, "max_seq_length": 48}}]},
        corpus=corpus, cache_dir=picked / "cache")
    bm25 = registry.build("miner", "bm25", {}, corpus=corpus, cache_dir=picked / "cache")
    dense = registry.build("miner", "dense", {"model": TINY, "max_seq_length": 48}, corpus=corpus,
                           cache_dir=picked / "cache")
    queries = {g.qid: g.query for g in read_candidates(picked / "work" / "neg")}
    hits, b, d = fused.search(queries, 20), bm25.search(queries, 20), dense.search(queries, 20)
    for qid in queries:
        got = [doc for doc, _ in hits[qid]]
        assert len(got) == 20 and len(set(got)) == 20
        assert set(got) & {doc for doc, _ in b[qid]} - {doc for doc, _ in d[qid]}, "BM25-only passages kept"
        assert set(got) & {doc for doc, _ in d[qid]} - {doc for doc, _ in b[qid]}, "dense-only passages kept"
        both = {doc for doc, _ in b[qid][:5]} & {doc for doc, _ in d[qid][:5]}
        assert all(got.index(doc) < 10 for doc in both)  # agreed on early by both: ranked early


def test_weights_make_a_weighted_ensemble(tmp_path, small_collection, picked):
    root = tmp_path / "weights"
    shutil.copytree(picked / "cache", root / "cache")  # encodings shared: nothing re-encoded
    path = _pipeline(root, small_collection, "weights")
    run_pipeline(load_pipeline(path))
    choice = json.loads((root / "work" / "rate" / "choice.json").read_text())
    assert sum(choice["weights"].values()) == pytest.approx(1.0)
    assert choice["picked"] in choice["weights"]
    manifest = read_manifest(root / "work" / "s")
    assert manifest.counts["groups"] == 8
    assert {p.state for p in plan_pipeline(load_pipeline(path))} == {"current"}


def test_the_teacher_miner_retrieves_as_its_teacher(picked, small_collection, tmp_path):
    """``miner: teacher`` with the chosen teacher: the pick's own retrieval, its fingerprint; in a pipeline's
    fused miner the reference to the choice makes the mine step follow the rate step."""
    from retrdistill.data.beir import open_collection

    rate = picked / "work" / "rate"
    choice = json.loads((rate / "choice.json").read_text())
    spec = choice["candidates"][choice["picked"]]
    corpus = open_collection(small_collection, picked / "cache" / "corpora").corpus
    miner = registry.build("miner", "teacher", {"teacher": "chosen", "teacher_options": {"choice": str(rate)}},
                           corpus=corpus, cache_dir=picked / "cache")
    direct = registry.build("teacher", spec["teacher"], spec["options"], corpus=corpus, cache_dir=picked / "cache")
    assert miner.fingerprint() == {"miner": "teacher", "teacher": direct.fingerprint()}
    queries = {g.qid: g.query for g in read_candidates(picked / "work" / "neg")}
    hits, run = miner.search(queries, 10), direct.retrieve(queries, 10)
    for qid in queries:
        expected = sorted(run[qid].items(), key=lambda hit: (-hit[1], hit[0]))
        assert [d for d, _ in hits[qid]] == [d for d, _ in expected][:10] and hits[qid]
        assert [s for _, s in hits[qid]] == pytest.approx([s for _, s in expected])

    text = _pipeline(tmp_path, small_collection, "pick").read_text(encoding="utf-8").replace(
        '        - {miner: bm25}\n',
        '        - {miner: bm25}\n        - {miner: teacher, options: {teacher: chosen, teacher_options: {choice: "@rate"}}}\n')
    (tmp_path / "pipeline.yaml").write_text(text, encoding="utf-8")
    pipeline = load_pipeline(tmp_path / "pipeline.yaml")
    assert "rate" in pipeline.steps["neg"].upstream
    order = [p.id for p in plan_pipeline(pipeline)]
    assert order.index("rate") < order.index("neg")


def test_rate_teachers_on_the_command_line(small_collection, tmp_path):
    from typer.testing import CliRunner

    from retrdistill.cli.app import app

    cache = tmp_path / "cache"
    runner = CliRunner()
    probe = tmp_path / "probe"
    done = runner.invoke(app, ["queries", "--collection", str(small_collection), "--out", str(probe),
                               "--cache-dir", str(cache), "--option", "num_queries=12", "--option", "seed=5", "--quiet"])
    assert done.exit_code == 0, done.output
    args = ["rate-teachers", "--collection", str(small_collection), "--queries", str(probe), "--out",
            str(tmp_path / "rate"), "--cache-dir", str(cache), "--quiet", "--candidate", "bm25=bm25",
            "--candidate", f'tiny=bi-encoder:{{"model": "{TINY}", "max_seq_length": 48}}']
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    choice = json.loads((tmp_path / "rate" / "choice.json").read_text())
    assert set(choice["estimate"]) == {"bm25", "tiny"} and choice["picked"] == choice["ranking"][0]
    bad = runner.invoke(app, [*args[:-1], "tiny=bi-encoders"])
    assert bad.exit_code != 0 and "unknown teacher 'bi-encoders'" in bad.output and "bi-encoder, sparse" in bad.output
