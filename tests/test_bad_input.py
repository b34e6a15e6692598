"""Bad input is refused before anything runs: every wrong value of a pipeline file (a step's own keys and the
options of the parts it names, however deeply nested) is a ConfigError naming the file, the line of the key
and what is accepted; numeric settings are checked against the range their field declares; an evaluation
whose qrels judge none of the collection's queries is an error naming the qrels file, not a leaderboard of
zeros."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from retrdistill import registry
from retrdistill.data.beir import load_qrels
from retrdistill.errors import ConfigError, DataError
from retrdistill.pipeline import load_pipeline
from retrdistill.stages.evaluate import EvalConfig, run_eval
from retrdistill.stages.mine import MineConfig
from retrdistill.stages.score import ScoreConfig
from retrdistill.stages.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]

QUERIES = """\
  - id: q
    stage: queries
    options:
      num_queries: 10
"""
MINE = """\
  - id: m
    stage: mine
    queries: "@q"
"""
SCORE = """\
  - id: s
    stage: score
    candidates: "@m"
"""
TRAIN = """\
  - id: t
    stage: train
    scores: "@s"
"""


def _write(tmp_path: Path, sample_dir: Path, steps: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(f"name: t\ncollection: {sample_dir}\nworkdir: {tmp_path / 'work'}\nsteps:\n"
                    + textwrap.dedent(steps), encoding="utf-8")
    return path


def _line_of(path: Path, marker: str) -> int:
    """The 1-based line of the only line of ``path`` containing ``marker``."""
    hits = [i for i, line in enumerate(path.read_text().splitlines(), start=1) if marker in line]
    assert len(hits) == 1, (marker, hits)
    return hits[0]


def _refused(tmp_path: Path, sample_dir: Path, steps: str) -> tuple[ConfigError, Path]:
    path = _write(tmp_path, sample_dir, steps)
    with pytest.raises(ConfigError) as err:
        load_pipeline(path, base_dir=tmp_path)
    return err.value, path


# ------------------------------------------------------------------ a step's own numeric keys
STEP_KEYS = [
    (QUERIES + MINE + SCORE + "    batch_queries: 0\n", "batch_queries: 0",
     "step 's' (score).batch_queries: expected an integer ≥ 1, got 0"),
    (QUERIES + MINE + "    batch_queries: -4\n", "batch_queries: -4",
     "step 'm' (mine).batch_queries: expected an integer ≥ 1, got -4"),
    (QUERIES + MINE + "    depth: 0\n", "depth: 0", "step 'm' (mine).depth: expected an integer ≥ 1, got 0"),
    ("  - id: e\n    stage: eval\n    depth: 0\n", "depth: 0",
     "step 'e' (eval).depth: expected an integer ≥ 1, got 0"),
    ("  - id: e\n    stage: eval\n    depth: -3\n", "depth: -3",
     "step 'e' (eval).depth: expected an integer ≥ 1, got -3"),
    (QUERIES + MINE + SCORE + TRAIN + "    learning_rate: 0\n", "learning_rate: 0",
     "step 't' (train).learning_rate: expected a number > 0, got 0"),
    (QUERIES + MINE + SCORE + TRAIN + "    warmup_ratio: 1.5\n", "warmup_ratio: 1.5",
     "step 't' (train).warmup_ratio: expected a number in [0, 1), got 1.5"),
    (QUERIES + MINE + SCORE + TRAIN + "    batch_size: 0\n", "batch_size: 0",
     "step 't' (train).batch_size: expected an integer ≥ 1, got 0"),
    (QUERIES + MINE + SCORE + TRAIN + "    epochs: 0\n", "epochs: 0",
     "step 't' (train).epochs: expected a number > 0, got 0"),
    (QUERIES + MINE + SCORE + TRAIN + "    matryoshka_dims:\n      - 64\n      - 0\n", "- 0",
     "step 't' (train).matryoshka_dims[1]: expected an integer ≥ 1, got 0"),
    (QUERIES + MINE + SCORE + "  - id: x\n    stage: select\n    scores: \"@s\"\n    negatives: 0\n", "negatives: 0",
     "step 'x' (select).negatives: expected an integer ≥ 1, got 0"),
]


@pytest.mark.parametrize("steps, marker, message", STEP_KEYS, ids=[m for _, _, m in STEP_KEYS])
def test_a_numeric_step_key_out_of_range_names_file_line_and_range(tmp_path, sample_dir, steps, marker, message):
    err, path = _refused(tmp_path, sample_dir, steps)
    assert message in str(err)
    assert err.path == str(path)
    assert err.line == _line_of(path, marker)


# ------------------------------------------------------------------ the options of a step's parts
EVAL_DENSE = """\
  - id: e
    stage: eval
    systems:
      - name: base
        type: dense
        options:
          {option}
"""


PART_OPTIONS = [
    # wrong types
    (QUERIES + MINE + SCORE + "    options:\n      model: 5\n", "model: 5",
     "step 's' (score).options.model: expected str, got int 5"),
    (QUERIES + MINE + SCORE + "    options:\n      model: [a]\n", "model: [a]",
     "step 's' (score).options.model: expected str, got list ['a']"),
    (QUERIES.replace("num_queries: 10", "num_queries: abc"), "num_queries: abc",
     "step 'q' (queries).options.num_queries: expected int, got str 'abc'"),
    (EVAL_DENSE.format(option="model: 5"), "model: 5",
     "step 'e' (eval).systems[0].options.model: expected str, got int 5"),
    # unknown keys
    (QUERIES.replace("num_queries: 10", "num_querys: 10"), "num_querys: 10",
     "unknown option(s) num_querys for query generator 'inverse-cloze'; expected: max_words, min_words, "
     "num_queries, seed"),
    (EVAL_DENSE.format(option="modle: x"), "modle: x", "unknown option(s) modle for system 'dense'"),
    (QUERIES + MINE + "    options:\n      k1: 0.9\n      k3: 2\n", "k3: 2", "unknown option(s) k3 for miner 'bm25'"),
    # out of range
    (QUERIES.replace("num_queries: 10", "num_queries: 0"), "num_queries: 0",
     "step 'q' (queries).options.num_queries: expected an integer ≥ 1, got 0"),
    (QUERIES + MINE + SCORE + "    options:\n      batch_size: 0\n", "batch_size: 0",
     "step 's' (score).options.batch_size: expected an integer ≥ 1, got 0"),
    (QUERIES + MINE + "    miner: bm25\n    options:\n      k1: -1\n", "k1: -1",
     "step 'm' (mine).options.k1: expected a number ≥ 0, got -1"),
    (EVAL_DENSE.format(option="batch_size: 0"), "batch_size: 0",
     "step 'e' (eval).systems[0].options.batch_size: expected an integer ≥ 1, got 0"),
    (QUERIES + MINE + SCORE + "  - id: x\n    stage: select\n    scores: \"@s\"\n    filters:\n"
     "      - filter: positive-percentile\n        options:\n          percentile: 150\n", "percentile: 150",
     "step 'x' (select).filters[0].options.percentile: expected a number in [0, 100], got 150"),
    (QUERIES + MINE + SCORE + TRAIN + "    options:\n      max_seq_length: 0\n", "max_seq_length: 0",
     "step 't' (train).options.max_seq_length: expected an integer ≥ 1, got 0"),
    (QUERIES + MINE + SCORE + TRAIN + "    loss: listwise-kl\n    loss_options:\n      temperature: 0\n",
     "temperature: 0", "step 't' (train).loss_options.temperature: expected a number > 0, got 0"),
    # a check of the settings' own (not a declared range) still names the line of the option it is about
    (QUERIES + MINE + SCORE + TRAIN + "    validation:\n      fraction: 2\n", "fraction: 2",
     "step 't' (train).validation: validation.fraction must be in (0, 1), got 2"),
    (QUERIES + MINE + SCORE + TRAIN + "    validation:\n      fraction: 0.2\n      batch_size: 0\n", "batch_size: 0",
     "step 't' (train).validation.batch_size: expected an integer ≥ 1, got 0"),
    (QUERIES.replace("num_queries: 10", "num_queries: 10\n      min_words: 9\n      max_words: 3"),
     "min_words: 9", "step 'q' (queries).options: need 1 <= min_words <= max_words"),
    (QUERIES + MINE + SCORE + TRAIN + "    embedding_distill: 1.0\n    embedding_options:\n"
     "      projection_sample: 0\n", "projection_sample: 0",
     "step 't' (train).embedding_options.projection_sample: expected an integer ≥ 1, got 0"),
    ("  - id: i\n    stage: index\n    model: offline:all-MiniLM-L6-v2\n    indexer: faiss-ivf\n    options:\n"
     "      nprobe: 0\n", "nprobe: 0", "step 'i' (index).options.nprobe: expected an integer ≥ 1, got 0"),
    # nested parts: an ensemble member's options, a re-ranking system's teacher options
    (QUERIES + MINE + SCORE + "    teacher: ensemble\n    options:\n      members:\n        - teacher: bi-encoder\n"
     "          options:\n            batch_size: 0\n        - teacher: bm25\n", "batch_size: 0",
     "step 's' (score).options.members[0].options.batch_size: expected an integer ≥ 1, got 0"),
    ("  - id: e\n    stage: eval\n    systems:\n      - {name: A, type: bm25}\n      - name: B\n        type: rerank\n"
     "        options:\n          system: A\n          options:\n            batch_size: -2\n", "batch_size: -2",
     "step 'e' (eval).systems[1].options.options.batch_size: expected an integer ≥ 1, got -2"),
    ("  - id: e\n    stage: eval\n    systems:\n      - {name: A, type: bm25}\n      - name: B\n        type: rerank\n"
     "        options:\n          system: A\n          options:\n            modle: x\n", "modle: x",
     "unknown option(s) modle for teacher 'cross-encoder'"),
]


@pytest.mark.parametrize("steps, marker, message", PART_OPTIONS, ids=[m for _, _, m in PART_OPTIONS])
def test_a_bad_part_option_names_file_line_and_expectation(tmp_path, sample_dir, steps, marker, message):
    err, path = _refused(tmp_path, sample_dir, steps)
    assert message in str(err)
    assert err.path == str(path)
    assert err.line == _line_of(path, marker)


def test_references_and_paths_in_options_still_load(tmp_path, sample_dir):
    steps = QUERIES + MINE + SCORE + TRAIN + """\
    save_untrained: true
    options:
      max_seq_length: 128
  - id: i
    stage: index
    model: "@t"
  - id: e
    stage: eval
    depth: 10
    systems:
      - {name: A, type: index, options: {path: "@i"}}
      - {name: B, type: dense, options: {model: "@t.untrained", batch_size: 8}}
      - {name: C, type: run, options: {path: runs/c.trec}}
"""
    pipeline = load_pipeline(_write(tmp_path, sample_dir, steps), base_dir=tmp_path)
    systems = pipeline.steps["e"].config.systems
    assert systems[0]["options"] == {"path": "@i"}
    assert systems[1]["options"] == {"model": "@t.untrained", "batch_size": 8}
    assert systems[2]["options"] == {"path": str(tmp_path / "runs" / "c.trec")}


@pytest.mark.parametrize("pipeline", sorted((ROOT / "pipelines").glob("*.yaml")), ids=lambda p: p.name)
def test_every_bundled_pipeline_still_loads(pipeline, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert load_pipeline(pipeline.relative_to(ROOT)).steps


# ------------------------------------------------------------------ the same checks through the library
def test_registry_build_checks_option_types_and_ranges():
    with pytest.raises(ConfigError, match="teacher 'bi-encoder' options.batch_size: expected an integer ≥ 1, got 0"):
        registry.build("teacher", "bi-encoder", {"batch_size": 0})
    with pytest.raises(ConfigError, match=r"system 'dense' options.model: expected str, got list \['a'\]"):
        registry.build("system", "dense", {"model": ["a"]})
    with pytest.raises(ConfigError, match="query generator 'inverse-cloze' options.num_queries: expected int, got str"):
        registry.build("query_generator", "inverse-cloze", {"num_queries": "abc"})


@pytest.mark.parametrize("make, message", [
    (lambda: ScoreConfig(batch_queries=0), "batch_queries: expected an integer ≥ 1, got 0"),
    (lambda: MineConfig(batch_queries=0), "batch_queries: expected an integer ≥ 1, got 0"),
    (lambda: EvalConfig(depth=-3), "depth: expected an integer ≥ 1, got -3"),
    (lambda: TrainConfig(learning_rate=-1e-5), "learning_rate: expected a number > 0, got -1e-05"),
])
def test_configs_built_directly_check_their_ranges(make, message):
    with pytest.raises((ConfigError, ValueError), match=message):
        make()


# ------------------------------------------------------------------ qrels that judge none of the queries
def _collection(root: Path, qrels: str) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "text": f"passage {i} on topic {i % 5}"})
                                               + "\n" for i in range(30)), encoding="utf-8")
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": f"topic {i}"}) + "\n"
                                                for i in range(5)), encoding="utf-8")
    (root / "qrels" / "test.tsv").write_text(qrels, encoding="utf-8")
    return root


def test_qrels_judging_none_of_the_queries_is_an_error_naming_the_file(tmp_path):
    root = _collection(tmp_path / "c", "".join(f"Q{i}\td{i}\t1\n" for i in range(5)) + "Q0\td9\t1\n")
    with pytest.raises(DataError) as err:
        load_qrels(root / "qrels" / "test.tsv", query_ids={f"q{i}": "" for i in range(5)})
    assert err.value.path == str(root / "qrels" / "test.tsv")
    message = str(err.value)
    assert "none of the 5 judged queries" in message and "6 judgment rows" in message
    assert "the 5 queries of the queries file" in message


def test_eval_refuses_qrels_that_judge_none_of_the_queries(tmp_path):
    root = _collection(tmp_path / "c", "".join(f"Q{i}\td{i}\t1\n" for i in range(5)))
    out = tmp_path / "eval"
    with pytest.raises(DataError) as err:
        run_eval(EvalConfig(), root, out, cache_dir=tmp_path / "cache")
    assert err.value.path == str(root / "qrels" / "test.tsv")
    assert "none of the 5 judged queries" in str(err.value)
    assert not (out / "manifest.json").exists()


@pytest.mark.parametrize("qrels, message", [
    ("", "no judgments"),
    ("query-id\tcorpus-id\tscore\n", "no judgments"),
    ("".join(f"q{i}\td{i}\t0\n" for i in range(5)), "no judgment with a grade ≥ 1"),
])
def test_eval_refuses_qrels_with_nothing_to_score(tmp_path, qrels, message):
    root = _collection(tmp_path / "c", qrels)
    with pytest.raises(DataError) as err:
        run_eval(EvalConfig(), root, tmp_path / "eval", cache_dir=tmp_path / "cache")
    assert err.value.path == str(root / "qrels" / "test.tsv")
    assert message in str(err.value)
