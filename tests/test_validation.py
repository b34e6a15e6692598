"""Label-free validation: the held-out split, the metrics against hand computations, the kept checkpoint,
the pick stage and the leaderboard's curves, with real models on real sample passages."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
from scipy import stats

from retrdistill import registry
from retrdistill.artefacts import fingerprint_path, read_manifest
from retrdistill.errors import ConfigError, DataError
from retrdistill.kinds import ScoredGroup, read_scores
from retrdistill.validation.metrics import (
    PseudoPositive,
    TeacherAgreement,
    ValidationView,
    kendall,
    minmax_gains,
    ndcg,
    spearman,
)
from retrdistill.validation.split import ValidationSettings, split_queries, split_scores

TEACHER = {"model": "offline:tiny-bert-mlm", "batch_size": 64}  # fast; these tests check mechanics, not quality
TINY = {"model": "offline:tiny-bert-mlm", "max_seq_length": 64}


@pytest.fixture(scope="module")
def scored(small_collection, small_cache, tmp_path_factory):
    """The scores folder of 30 inverse-cloze queries over ``small_collection``, BM25-mined, scored by TEACHER."""
    from retrdistill.stages.mine import MineConfig, run_mine
    from retrdistill.stages.queries import QueriesConfig, run_queries
    from retrdistill.stages.score import ScoreConfig, run_score

    root = tmp_path_factory.mktemp("validation-scored")
    run_queries(QueriesConfig(options={"num_queries": 30, "seed": 5}), small_collection, root / "q",
                cache_dir=small_cache)
    run_mine(MineConfig(miner="bm25", depth=30, negatives=6, rank_max=30), small_collection, root / "q", root / "c",
             cache_dir=small_cache)
    run_score(ScoreConfig(options=TEACHER), small_collection, root / "c", root / "s", cache_dir=small_cache)
    return root / "s"


# ------------------------------------------------------------------ the split
def test_split_never_overlaps_training_and_is_deterministic(scored, tmp_path):
    settings = ValidationSettings(fraction=0.2, seed=7)
    split, held, record = split_scores(scored, tmp_path / "a", settings)
    all_qids = {g.qid for g in read_scores(scored)}
    train_qids = {g.qid for g in read_scores(tmp_path / "a")}
    assert train_qids == split.train and {g.qid for g in held} == split.held_out
    assert not train_qids & split.held_out and train_qids | split.held_out == all_qids
    assert len(split.held_out) == 6 and record["held_out_queries"] == 6 and record["train_groups"] == 24
    again, _, record_again = split_scores(scored, tmp_path / "b", settings)
    assert again.held_out == split.held_out and record_again == record
    assert (tmp_path / "a" / "scores.jsonl").read_bytes() == (tmp_path / "b" / "scores.jsonl").read_bytes()
    other, _, other_record = split_scores(scored, tmp_path / "c", ValidationSettings(fraction=0.2, seed=8))
    assert other.held_out != split.held_out
    assert other_record["held_out_fingerprint"] != record["held_out_fingerprint"]


def test_split_sizes_and_bad_settings():
    ids = [f"q{i}" for i in range(10)]
    assert len(split_queries(ids, 0.01, 1).held_out) == 1  # at least one held out
    assert len(split_queries(ids, 0.99, 1).train) == 1  # at least one kept
    assert split_queries(list(reversed(ids)), 0.3, 4).held_out == split_queries(ids, 0.3, 4).held_out
    with pytest.raises(ConfigError, match="needs 2 or more"):
        split_queries(["q1"], 0.5, 1)
    from retrdistill.stages.train import TrainConfig

    with pytest.raises(ConfigError, match=r"fraction must be in \(0, 1\)"):
        TrainConfig(validation={"fraction": 1.5})
    with pytest.raises(ConfigError, match="every must be 'epoch' or a positive"):
        TrainConfig(validation={"every": "sometimes"})
    with pytest.raises(ConfigError, match="expected one of: pseudo-mrr@10, pseudo-recall@100, teacher-ndcg@10"):
        TrainConfig(validation={"metric": "ndcg@10"})
    with pytest.raises(ConfigError, match="unknown validation metric 'oracle'"):
        TrainConfig(validation={"metrics": ["oracle"]})


def test_validation_off_keeps_the_artefact_key():
    """Off (the default), the config that keys a train artefact is the one written before validation existed."""
    from retrdistill.stages.base import config_dict
    from retrdistill.stages.train import TrainConfig

    assert "validation" not in config_dict(TrainConfig())
    assert config_dict(TrainConfig(validation={"fraction": 0.2}))["validation"] == {"fraction": 0.2}


# ------------------------------------------------------------------ the metrics, by hand
def _view(groups, queries, passages, ids):
    rows = {d: i for i, d in enumerate(ids)}
    return ValidationView(groups, np.asarray(queries, np.float32), np.asarray(passages, np.float32), rows, None,
                          lambda r: [ids[i] for i in r])


def test_pseudo_positive_equals_a_hand_computation():
    # five passages on the unit circle's quarter; query qa points at p1, qb between p3 and p4
    ids = ["p0", "p1", "p2", "p3", "p4"]
    passages = [[1.0, 0.0], [0.0, 1.0], [0.8, 0.6], [0.6, 0.8], [-1.0, 0.0]]
    groups = [ScoredGroup("qa", "a", ["p2", "p0"], [1.0, 0.0], 1),   # positive p2: scores 1, .6, .8, .6, -1 -> rank 2
              ScoredGroup("qb", "b", ["p4", "p1"], [1.0, 0.0], 1),   # positive p4: the last of five -> rank 5
              ScoredGroup("qc", "c", ["p3", "p2"], [1.0, 0.0], 2),   # two positives p3 (rank 2), p2 (rank 3)
              ScoredGroup("qd", "d", ["p0"], [1.0], 0)]              # no positive: left out
    queries = [[0.0, 1.0], [0.6, 0.8], [0.6, 0.8], [1.0, 0.0]]
    # qa ranks p1 (1.0), p3 (.8), p2 (.6), p0 (0), p4 (0): p2 at rank 3
    # qb ranks p3 (1.0), p2 (.96), p1 (.8), p0 (.6), p4 (-.6): p4 at rank 5
    # qc: p3 at rank 1, p2 at rank 2
    view = _view(groups, queries, passages, ids)
    metric = registry.build("validation_metric", "pseudo-positive", {"mrr_k": 3, "recall_k": 4})
    values = metric.compute(view)
    assert values["pseudo-mrr@3"] == pytest.approx((1 / 3 + 0 + 1) / 3)
    assert values["pseudo-recall@4"] == pytest.approx((1 + 0 + 1) / 3)
    assert metric.compute(view) == values
    wide = PseudoPositive(PseudoPositive.Options(mrr_k=5, recall_k=5)).compute(view)
    assert wide == {"pseudo-mrr@5": pytest.approx((1 / 3 + 1 / 5 + 1) / 3), "pseudo-recall@5": pytest.approx(1.0)}


def test_teacher_agreement_equals_a_hand_computation():
    ids = ["a", "b", "c", "d"]
    passages = [[3.0], [1.0], [2.0], [0.5]]  # 1-d embeddings: the student's score is query * value
    groups = [ScoredGroup("q1", "x", ["a", "b", "c"], [2.0, 6.0, 1.0], 1),  # teacher: b > a > c
              ScoredGroup("q2", "y", ["d", "c"], [5.0, 5.0], 1)]           # all equal: left out
    view = _view(groups, [[1.0], [1.0]], passages, ids)
    # student order a (3), c (2), b (1); gains from the teacher min-max: a 0.2, b 1, c 0
    dcg = 0.2 / np.log2(2) + 0 / np.log2(3) + 1 / np.log2(4)
    ideal = 1 / np.log2(2) + 0.2 / np.log2(3) + 0 / np.log2(4)
    values = TeacherAgreement(TeacherAgreement.Options(k=10)).compute(view)
    assert values["teacher-ndcg@10"] == pytest.approx(dcg / ideal)
    assert values["teacher-spearman"] == pytest.approx(-0.5)  # ranks (3,1,2) against (2,3,1): 1 - 6*6/(3*8)
    kendall_values = registry.build("validation_metric", "teacher-agreement", {"correlation": "kendall", "k": 2})
    out = kendall_values.compute(view)
    assert out["teacher-kendall"] == pytest.approx(-1 / 3)  # pairs ab, bc discordant, ac concordant
    assert out["teacher-ndcg@2"] == pytest.approx(0.2 / (1 + 0.2 / np.log2(3)))


def test_rank_correlations_and_ndcg_against_independent_computations():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.integers(0, 4, size=9).astype(float)  # ties on purpose
        b = rng.normal(size=9)
        assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic)
        assert kendall(a, b) == pytest.approx(stats.kendalltau(a, b).statistic)
    assert spearman(np.ones(4), np.arange(4.0)) is None and kendall(np.arange(4.0), np.ones(4)) is None
    assert minmax_gains(np.array([2.0, 2.0])) is None
    gains = minmax_gains(np.array([1.0, 3.0, 2.0]))
    np.testing.assert_allclose(gains, [0.0, 1.0, 0.5])
    assert ndcg(np.array([1, 2, 0]), gains, 3) == pytest.approx(1.0)


def test_evaluator_equals_a_brute_force_computation(small_collection, small_cache, scored, tmp_path):
    """The evaluator's numbers for a real model over the whole real corpus, against numpy and encode()."""
    from sentence_transformers import SentenceTransformer

    from retrdistill.data.beir import open_collection
    from retrdistill.validation.evaluator import LabelFreeEvaluator

    corpus = open_collection(small_collection, small_cache / "corpora").corpus
    _, held, _ = split_scores(scored, tmp_path, ValidationSettings(fraction=0.3, seed=2))
    model = registry.build("student", "pruned", TINY).load()
    metrics = [registry.build("validation_metric", "pseudo-positive", {}),
               registry.build("validation_metric", "teacher-agreement", {})]
    values = LabelFreeEvaluator(held, corpus, metrics, "pseudo-mrr@10")(model, epoch=1, steps=3)
    assert isinstance(model, SentenceTransformer)
    ids = corpus.id_list()
    docs = model.encode(corpus.texts(0, len(corpus)), normalize_embeddings=True)
    queries = model.encode([g.query for g in held], normalize_embeddings=True)
    rr, rec, nd, rho = [], [], [], []
    for g, q in zip(held, queries):
        scores = docs @ q
        order = sorted(range(len(ids)), key=lambda r: -scores[r])
        ranked = [ids[r] for r in order]
        positive = g.docids[0]
        rank = ranked.index(positive) + 1
        rr.append(1 / rank if rank <= 10 else 0.0)
        rec.append(1.0 if rank <= 100 else 0.0)
        student = np.array([scores[ids.index(d)] for d in g.docids])
        teacher = np.array(g.scores)
        gain = (teacher - teacher.min()) / (teacher.max() - teacher.min())
        disc = 1 / np.log2(np.arange(2, len(g.docids) + 2))
        nd.append(float(gain[np.argsort(-student)][:10] @ disc[:10]) / float(np.sort(gain)[::-1][:10] @ disc[:10]))
        rho.append(stats.spearmanr(student, teacher).statistic)
    assert values["pseudo-mrr@10"] == pytest.approx(np.mean(rr), abs=1e-6)
    assert values["pseudo-recall@100"] == pytest.approx(np.mean(rec), abs=1e-6)
    assert values["teacher-ndcg@10"] == pytest.approx(np.mean(nd), abs=1e-4)
    assert values["teacher-spearman"] == pytest.approx(np.mean(rho), abs=1e-4)


def test_a_corpus_sample_searches_the_sample_and_the_candidates_only(small_collection, small_cache, scored, tmp_path):
    """With ``corpus_sample``, the search metrics equal a brute-force search over exactly the drawn rows plus
    every held-out candidate; the same rows at every evaluation; the candidates' metrics are unchanged."""
    from retrdistill.data.beir import open_collection
    from retrdistill.validation.evaluator import LabelFreeEvaluator

    corpus = open_collection(small_collection, small_cache / "corpora").corpus
    _, held, _ = split_scores(scored, tmp_path, ValidationSettings(fraction=0.3, seed=2))
    model = registry.build("student", "pruned", TINY).load()
    metrics = [registry.build("validation_metric", "pseudo-positive", {}),
               registry.build("validation_metric", "teacher-agreement", {})]
    whole = LabelFreeEvaluator(held, corpus, metrics, "pseudo-mrr@10")(model)
    evaluator = LabelFreeEvaluator(held, corpus, metrics, "pseudo-mrr@10", corpus_sample=40, seed=9)
    ids = corpus.id_list()
    searched = evaluator.searched_rows
    candidates = {ids.index(d) for g in held for d in g.docids}
    drawn = set(np.random.default_rng(9).choice(len(ids), size=40, replace=False).tolist())
    assert set(searched) == drawn | candidates and len(searched) < len(ids)
    assert evaluator.get_config_dict()["searched"] == len(searched)
    values = evaluator(model)
    assert evaluator(model) == values  # the same rows, the same numbers
    docs = model.encode([corpus.texts(r, r + 1)[0] for r in searched], normalize_embeddings=True)
    queries = model.encode([g.query for g in held], normalize_embeddings=True)
    rr = []
    for g, q in zip(held, queries):
        order = np.argsort(-(docs @ q), kind="stable")
        ranked = [ids[searched[i]] for i in order]
        rank = ranked.index(g.docids[0]) + 1
        rr.append(1 / rank if rank <= 10 else 0.0)
    assert values["pseudo-mrr@10"] == pytest.approx(np.mean(rr), abs=1e-6)
    assert values["pseudo-mrr@10"] >= whole["pseudo-mrr@10"]  # fewer passages to beat the positive
    assert values["teacher-ndcg@10"] == pytest.approx(whole["teacher-ndcg@10"], abs=1e-5)
    assert LabelFreeEvaluator(held, corpus, metrics, "pseudo-mrr@10", corpus_sample=len(ids)).searched_rows is None


def test_a_corpus_sample_keys_the_train_step_and_is_checked():
    from retrdistill.stages.base import config_dict
    from retrdistill.stages.train import TrainConfig

    assert "corpus_sample" not in ValidationSettings().fingerprint()
    assert ValidationSettings(corpus_sample=500).fingerprint()["corpus_sample"] == 500
    assert (config_dict(TrainConfig(validation={"corpus_sample": 500}))
            != config_dict(TrainConfig(validation={"corpus_sample": 600})))
    for bad in (0, -3, "many", True):
        with pytest.raises(ConfigError, match="corpus_sample"):
            TrainConfig(validation={"corpus_sample": bad})


# ------------------------------------------------------------------ the kept checkpoint
KEPT = {"fraction": 0.3, "seed": 2, "metric": "pseudo-mrr@10", "at_start": True, "keep_checkpoints": True}


@pytest.fixture(scope="module")
def trained(small_collection, small_cache, scored, tmp_path_factory):
    """A tiny student trained 3 short epochs with validation, every evaluated checkpoint kept."""
    from retrdistill.stages.train import TrainConfig, run_train

    cfg = TrainConfig(student="pruned", options=TINY, negatives_per_query=3, epochs=3, batch_size=4,
                      learning_rate=1e-3, warmup_ratio=0.0, validation=KEPT)
    out = tmp_path_factory.mktemp("trained") / "student"
    return cfg, run_train(cfg, scored, small_collection, out, cache_dir=small_cache)


def test_the_kept_checkpoint_is_the_best_on_the_recorded_curve(trained, scored, small_collection, small_cache,
                                                               tmp_path):
    from sentence_transformers import SentenceTransformer

    from retrdistill.data.beir import open_collection
    from retrdistill.validation.evaluator import LabelFreeEvaluator

    cfg, result = trained
    record = result.manifest.counts["validation"]
    curve = record["curve"]
    assert [p["step"] for p in curve][0] == 0 and [p["epoch"] for p in curve[1:]] == [1.0, 2.0, 3.0]
    candidates = {p["step"]: p["metrics"]["pseudo-mrr@10"] for p in curve[1:]}  # step 0: not a candidate
    best_step = max(candidates, key=candidates.get)
    last_step = max(candidates)
    assert record["best"]["step"] == best_step and record["kept"] == "best"
    assert record["best"]["value"] == pytest.approx(candidates[best_step])
    assert best_step != last_step, "constructed so the last epoch is not the best (else this test could not fail)"
    assert candidates[best_step] != candidates[last_step]
    # whether the kept checkpoint beats the starting model on the metric (a warning in the log when it does not)
    assert record["best"]["above_start"] == (candidates[best_step] > curve[0]["metrics"]["pseudo-mrr@10"])
    split = record["split"]
    assert split["held_out_queries"] == 9 and split["train_queries"] == 21 and split["seed"] == 2
    counts = result.manifest.counts
    assert counts["rows"] + counts["groups_skipped"] == split["train_groups"]
    # the saved model, evaluated again on the same held-out groups, is the best checkpoint, not the last
    corpus = open_collection(small_collection, small_cache / "corpora").corpus
    _, held, _ = split_scores(scored, tmp_path, ValidationSettings(**KEPT))
    metrics = ValidationSettings(**KEPT).parts()
    folder = result.out_dir
    saved = LabelFreeEvaluator(held, corpus, metrics, "pseudo-mrr@10")(SentenceTransformer(str(folder / "model")))
    assert saved["pseudo-mrr@10"] == pytest.approx(candidates[best_step], abs=1e-6)
    assert saved["pseudo-mrr@10"] != pytest.approx(candidates[last_step], abs=1e-6)
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == sorted(f"step-{p['step']}" for p in curve)
    texts = corpus.texts(0, 8)
    np.testing.assert_allclose(SentenceTransformer(str(folder / "model")).encode(texts),
                               SentenceTransformer(str(folder / "checkpoints" / f"step-{best_step}")).encode(texts),
                               atol=1e-5)
    assert not (folder / ".trainer").exists() and not (folder / ".validation").exists()
    assert result.manifest.config["validation"] == KEPT


# ------------------------------------------------------------------ pick, in a pipeline, to the leaderboard
PIPELINE = """\
name: sweep
collection: {collection}
workdir: {workdir}
cache_dir: {cache}
steps:
  - {{id: q, stage: queries, source: inverse-cloze, options: {{num_queries: 30, seed: 5}}}}
  - {{id: c, stage: mine, queries: "@q", miner: bm25, depth: 30, negatives: 6, rank_max: 30}}
  - {{id: s, stage: score, candidates: "@c", teacher: bi-encoder, options: {{model: "offline:all-MiniLM-L6-v2"}}}}
  - {{id: slow, stage: train, scores: "@s", student: pruned, options: {tiny}, negatives_per_query: 3, epochs: 1,
      batch_size: 4, learning_rate: 1.0e-6, validation: {{fraction: 0.3, seed: 2}}}}
  - {{id: fast, stage: train, scores: "@s", student: pruned, options: {tiny}, negatives_per_query: 3, epochs: 2,
      batch_size: 4, learning_rate: 1.0e-3, validation: {{fraction: 0.3, seed: 2}}}}
  - {{id: pick, stage: pick, students: ["@slow", "@fast"]}}
  - {{id: idx, stage: index, model: "@pick"}}
  - id: board
    stage: eval
    metrics: [ndcg@10]
    measure_cost: false
    systems:
      - {{name: picked, type: index, options: {{path: "@idx"}}}}
      - {{name: fast, type: dense, options: {{model: "@fast"}}}}
      - {{name: BM25, type: bm25}}
"""


@pytest.mark.slow
def test_pick_takes_the_best_student_and_the_leaderboard_draws_its_curve(small_collection, small_cache, tmp_path):
    from retrdistill.evaluation.leaderboard import load_leaderboard
    from retrdistill.pipeline import load_pipeline, run_pipeline

    path = tmp_path / "sweep.yaml"
    path.write_text(PIPELINE.format(collection=small_collection, workdir=tmp_path / "runs", cache=small_cache,
                                    tiny=json.dumps(TINY)), encoding="utf-8")
    pipeline = load_pipeline(path, base_dir=tmp_path)
    assert pipeline.steps["pick"].upstream == ["slow", "fast"]
    run_pipeline(pipeline)
    runs = tmp_path / "runs"
    values = {}
    for name in ("slow", "fast"):
        record = read_manifest(runs / name).counts["validation"]
        values[name] = record["best"]["value"]
    assert values["slow"] != values["fast"]
    winner = max(values, key=values.get)
    picked = json.loads((runs / "pick" / "pick.json").read_text(encoding="utf-8"))
    assert picked["picked"] == winner and picked["metric"] == "pseudo-mrr@10"
    assert {c["student"]: c["value"] for c in picked["compared"]} == pytest.approx(values)
    assert fingerprint_path(runs / "pick" / "model") == fingerprint_path(runs / winner / "model")
    manifest = read_manifest(runs / "pick")
    assert manifest.kind == "student" and manifest.counts["picked"] == winner
    board = load_leaderboard(runs / "board" / "leaderboard.json")
    rows = {r.system: r for r in board.rows}
    assert rows["BM25"].validation is None
    assert rows["picked"].validation["student"] == "pick"
    assert rows["fast"].validation["metric"] == "pseudo-mrr@10"
    fast_curve = read_manifest(runs / "fast").counts["validation"]["curve"]
    assert [p["value"] for p in rows["fast"].validation["points"]] == pytest.approx(
        [p["metrics"]["pseudo-mrr@10"] for p in fast_curve])
    html = (runs / "board" / "leaderboard.html").read_text(encoding="utf-8")
    assert html.count('<svg id="curve-') == 2 and "fast: validation pseudo-mrr@10" in html


def test_pick_takes_the_best_and_refuses_what_does_not_compare(trained, scored, small_collection, small_cache,
                                                               tmp_path):
    from retrdistill.stages.pick import PickConfig, prepare_pick
    from retrdistill.stages.train import TrainConfig, run_train

    cfg, result = trained
    weak = TrainConfig(student="pruned", options=TINY, negatives_per_query=3, max_steps=2, batch_size=4,
                       learning_rate=1e-7, validation={**KEPT, "at_start": False, "keep_checkpoints": False})
    run_train(weak, scored, small_collection, tmp_path / "weak", cache_dir=small_cache)
    values = {"student": result.manifest.counts["validation"]["best"]["value"],
              "weak": read_manifest(tmp_path / "weak").counts["validation"]["best"]["value"]}
    assert values["student"] != values["weak"]
    winner = max(values, key=values.get)
    for order in (["weak", "student"], ["student", "weak"]):
        folders = {"student": result.out_dir / "model", "weak": tmp_path / "weak" / "model"}
        picked = prepare_pick(PickConfig(), [folders[n] for n in order], tmp_path / f"pick-{order[0]}").run()
        assert picked.manifest.counts["picked"] == winner and picked.manifest.kind == "student"
        assert picked.manifest.counts["compared"] == pytest.approx(values)
        assert fingerprint_path(picked.out_dir / "model") == fingerprint_path(folders[winner].parent / "model")
        assert json.loads((picked.out_dir / "pick.json").read_text(encoding="utf-8"))["picked"] == winner
    other = TrainConfig(student="pruned", options=TINY, negatives_per_query=3, max_steps=1, batch_size=4,
                        validation={**KEPT, "seed": 3, "at_start": False, "keep_checkpoints": False})
    run_train(other, scored, small_collection, tmp_path / "other", cache_dir=small_cache)
    plain = TrainConfig(student="pruned", options=TINY, negatives_per_query=3, max_steps=1, batch_size=4)
    run_train(plain, scored, small_collection, tmp_path / "plain", cache_dir=small_cache)
    with pytest.raises(ConfigError, match="different held-out queries"):
        prepare_pick(PickConfig(), [result.out_dir / "model", tmp_path / "other" / "model"], tmp_path / "p1").run()
    with pytest.raises(ConfigError, match="trained without validation"):
        prepare_pick(PickConfig(), [result.out_dir, tmp_path / "plain"], tmp_path / "p2").run()
    done = prepare_pick(PickConfig(same_split=False, metric="teacher-ndcg@10"),
                        [result.out_dir, tmp_path / "other"], tmp_path / "p3").run()
    assert done.manifest.counts["metric"] == "teacher-ndcg@10"


@pytest.mark.parametrize("students, problem, line", [
    ('"@a"', r"students must be a list of references", 8),
    ("[]", r"students must be a list of references", 8),
    ('["@a", "b"]', r"students\[1\] must be a reference", 8),
    ('["@a", "@a"]', r"students lists @a twice", 8),
    ('["@a", "@s"]', r"@s is a score step, whose artefact is 'scores'; expected 'student'", 8),
    ('["@a", "@nope"]', r"unknown step @nope", 8),
])
def test_pick_references_are_checked_with_file_and_line(tmp_path, students, problem, line):
    from retrdistill.pipeline import load_pipeline

    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: p
        collection: data
        steps:
          - {{id: q, stage: queries}}
          - {{id: c, stage: mine, queries: "@q"}}
          - {{id: s, stage: score, candidates: "@c"}}
          - {{id: a, stage: train, scores: "@s"}}
          - {{id: pick, stage: pick, students: {students}}}
        """), encoding="utf-8")
    with pytest.raises(ConfigError, match=problem) as err:
        load_pipeline(path, base_dir=tmp_path)
    assert err.value.line == line and str(path) in str(err.value)


def test_leaderboard_validation_field_round_trips_and_is_checked(tmp_path):
    from retrdistill.evaluation.leaderboard import Leaderboard, Row, load_leaderboard, write_json
    from retrdistill.evaluation.leaderboard_html import write_html

    curve = {"metric": "pseudo-mrr@10", "student": "s", "best_step": 20,
             "points": [{"step": 10, "epoch": 1.0, "value": 0.5}, {"step": 20, "epoch": 2.0, "value": 0.6}]}
    board = Leaderboard(rows=[Row("student", "d", {"ndcg@10": 0.5}, validation=curve), Row("bm25", "d", {"ndcg@10": 0.4})])
    write_json(board, tmp_path / "lb.json")
    again = load_leaderboard(tmp_path / "lb.json")
    assert again.row("student", "d").validation == curve and again.row("bm25", "d").validation is None
    write_html(again, tmp_path / "lb.html")
    html = (tmp_path / "lb.html").read_text(encoding="utf-8")
    assert html.count("<svg id=\"curve-") == 1 and "step 20, epoch 2: pseudo-mrr@10 0.6000 (kept)" in html
    data = json.loads((tmp_path / "lb.json").read_text(encoding="utf-8"))
    data["rows"][1]["validation"]["points"][0]["value"] = "high"
    (tmp_path / "bad.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(DataError, match=r"rows\[1\].validation.points\[0\]"):
        load_leaderboard(tmp_path / "bad.json")
