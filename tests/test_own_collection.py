"""A new user's own corpus through the bundled pipelines: paths relative to the pipeline file, --collection,
--workdir and --set overrides checked like the file's values, a corpus-only collection (no queries, no
judgments), the pick command, search hits with separate title and text, a student given where an index is
expected, and one labelled progress bar per unit of work (none at all with -q)."""

from __future__ import annotations

import json
import logging
import shutil
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from retrdistill import progress
from retrdistill.cli.app import app
from retrdistill.errors import ConfigError, ManifestError
from retrdistill.pipeline import load_pipeline

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
WIDE = {"COLUMNS": "400", "TERMINAL_WIDTH": "400"}

CHAIN = """\
name: own
collection: ../collection
workdir: ../runs/own
cache_dir: ../.cache
steps:
  - {id: q, stage: queries, options: {num_queries: 10}}
  - {id: m, stage: mine, queries: "@q", miner: bm25}
  - {id: s, stage: score, candidates: "@m", teacher: bi-encoder, options: {model: "offline:all-mpnet-base-v2"}}
  - &student {id: t, stage: train, scores: "@s", learning_rate: 3.0e-5, options: {model: "offline:all-MiniLM-L6-v2"}}
  - {<<: *student, id: t2}
  - {id: i, stage: index, model: "@t"}
  - {id: e, stage: eval, systems: [{name: A, type: index, options: {path: "@i"}}, {name: BM25, type: bm25}]}
"""


@pytest.fixture(autouse=True)
def _bars_back_off():
    """CLI calls turn bars on (or every library's off, with -q) in this process: undone after each test."""
    was = progress.enabled()
    yield
    progress.silence_libraries(False)
    progress.enable(was)


@pytest.fixture
def project(tmp_path: Path, small_collection: Path) -> Path:
    """A project folder: the pipeline file in pipelines/, the collection beside it."""
    root = tmp_path / "proj"
    (root / "pipelines").mkdir(parents=True)
    shutil.copytree(small_collection, root / "collection")
    (root / "pipelines" / "p.yaml").write_text(CHAIN, encoding="utf-8")
    return root


@pytest.fixture
def corpus_only(tmp_path: Path, small_collection: Path) -> Path:
    """A folder holding nothing but corpus.jsonl: passages, no queries, no judgments."""
    folder = tmp_path / "corpus-only"
    folder.mkdir()
    shutil.copy(small_collection / "corpus.jsonl", folder / "corpus.jsonl")
    return folder


# ------------------------------------------------------------------ paths relative to the pipeline file
def test_relative_paths_resolve_against_the_pipeline_files_folder(project, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    p = load_pipeline(project / "pipelines" / "p.yaml")
    assert p.collection == project / "collection"  # ../collection from pipelines/, with `..` allowed
    assert p.workdir == project / "runs" / "own" and p.cache_dir == project / ".cache"
    assert p.base == project  # the deepest folder holding the file's folder, workdir, cache and collection
    monkeypatch.chdir(project / "pipelines")
    assert load_pipeline("p.yaml").collection == project / "collection"


def test_base_dir_still_bounds_relative_paths(project):
    with pytest.raises(ConfigError, match="escapes the base folder"):
        load_pipeline(project / "pipelines" / "p.yaml", base_dir=project / "pipelines")
    p = load_pipeline(project / "pipelines" / "p.yaml", base_dir=project)
    assert p.collection == project / "collection" and p.base == project


def test_values_written_as_local_paths_resolve_against_the_file(project):
    text = CHAIN.replace('options: {model: "offline:all-MiniLM-L6-v2"}', 'options: {model: ../models/mine}')
    text = text.replace('model: "@t"}', 'model: ./student-model}')
    (project / "pipelines" / "p.yaml").write_text(text, encoding="utf-8")
    p = load_pipeline(project / "pipelines" / "p.yaml")
    assert p.steps["t"].config.options["model"] == str(project / "models" / "mine")
    assert p.steps["i"].inputs["model"] == str(project / "pipelines" / "student-model")


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "pipelines").glob("*.yaml")))
def test_bundled_pipelines_mean_the_same_folders_from_any_directory(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = load_pipeline(ROOT / "pipelines" / name)
    assert p.base == ROOT
    assert p.collection.parent == ROOT / "data"
    assert p.workdir.parent == ROOT / "runs" and p.cache_dir == ROOT / ".cache" / "retrdistill"


def test_the_demos_plan_is_the_same_from_the_repository_and_from_elsewhere(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    here = runner.invoke(app, ["run", "pipelines/msmarco-sample.yaml", "--plan", "-q"], env=WIDE)
    monkeypatch.chdir(tmp_path)
    there = runner.invoke(app, ["run", str(ROOT / "pipelines" / "msmarco-sample.yaml"), "--plan", "-q"], env=WIDE)
    assert here.exit_code == there.exit_code == 0, here.output + there.output
    assert here.stdout == there.stdout and f"artefacts in {ROOT / 'runs' / 'msmarco-sample'}" in here.stdout


# ------------------------------------------------------------------ --collection, --workdir, --set
def test_collection_and_workdir_from_the_command_line_resolve_against_the_current_directory(project, tmp_path,
                                                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = CHAIN.replace("  - {id: i,", "  - {id: j, stage: queries, collection: ../collection}\n  - {id: i,")
    (project / "pipelines" / "p.yaml").write_text(text, encoding="utf-8")
    p = load_pipeline(project / "pipelines" / "p.yaml", collection="mine", workdir="out")
    assert p.collection == tmp_path / "mine" and p.workdir == tmp_path / "out"
    assert p.steps["q"].collection == tmp_path / "mine"  # steps without their own collection take it
    assert p.steps["j"].collection == project / "collection"  # a step's own collection stays


def test_overrides_are_typed_and_put_into_the_step_like_the_files_values(project):
    p = load_pipeline(project / "pipelines" / "p.yaml", overrides=[
        "t.learning_rate=5e-5", "t.epochs=2", "s.options.model=offline:all-MiniLM-L6-v2", "e.systems[1].name=bm25 row",
        "q.options={num_queries: 4, seed: 3}", "m.miner=dense", "m.options.model=offline:all-MiniLM-L6-v2"])
    t = p.steps["t"].config
    assert t.learning_rate == 5e-5 and isinstance(t.learning_rate, float) and t.epochs == 2
    assert p.steps["s"].config.options == {"model": "offline:all-MiniLM-L6-v2"}
    assert [s["name"] for s in p.steps["e"].config.systems] == ["A", "bm25 row"]
    assert p.steps["q"].config.options == {"num_queries": 4, "seed": 3}
    assert p.steps["m"].config.miner == "dense"
    assert p.steps["t2"].config.learning_rate == 3.0e-5  # the step sharing t's anchor is unchanged
    assert load_pipeline(project / "pipelines" / "p.yaml", overrides={"t.learning_rate": 1e-4}).steps["t"].config.learning_rate == 1e-4


@pytest.mark.parametrize("override, message", [
    ("t.learning_rate=fast", r"--set t\.learning_rate: step 't' \(train\)\.learning_rate: expected float, got str 'fast'"),
    ("t.learnin_rate=1.0", r"--set t\.learnin_rate: step 't' \(train\): unknown key 'learnin_rate'; expected one of: .*learning_rate"),
    ("s.options.batch_size=0", r"--set s\.options\.batch_size: .*options\.batch_size: expected an integer ≥ 1, got 0"),
    ("m.miner=lucene", r"--set m\.miner: .*unknown miner 'lucene'; expected one of: bm25"),
    ("e.systems[5].name=x", r"--set e\.systems\[5\]\.name: e\.systems has 2 items"),
    ("x.epochs=1", r"--set x\.epochs: no step 'x' in the pipeline; its steps: q, m, s, t, t2, i, e"),
    ("t.epochs", r"expected STEP\.KEY=VALUE"),
    ("workdir=x", r"set with --collection and --workdir"),
    ("t.micro_batch_size=5", r"--set t\.micro_batch_size: step 't' \(train\): micro_batch_size must divide"),
])
def test_a_bad_override_names_the_set_and_what_is_accepted(project, override, message):
    with pytest.raises(ConfigError, match=message):
        load_pipeline(project / "pipelines" / "p.yaml", overrides=[override])


def test_run_plan_honours_collection_workdir_and_set(project, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(project / "collection", tmp_path / "other")
    args = ["run", str(project / "pipelines" / "p.yaml"), "--plan", "-q", "--collection", "other", "--workdir", "w"]
    done = runner.invoke(app, [*args, "--set", "t.epochs=2"], env=WIDE)
    assert done.exit_code == 0, done.output
    assert f"artefacts in {tmp_path / 'w'}" in done.stdout
    refused = runner.invoke(app, [*args, "--set", "t.epochs=many"], env=WIDE)
    assert refused.exit_code == 2 and "--set t.epochs: step 't' (train).epochs: expected float" in refused.output


# ------------------------------------------------------------------ a corpus with no queries and no judgments
def test_a_corpus_only_collection_makes_training_queries(corpus_only, tmp_path):
    from retrdistill.stages.queries import QueriesConfig, run_queries

    result = run_queries(QueriesConfig(options={"num_queries": 12}), corpus_only, tmp_path / "q",
                         cache_dir=tmp_path / "cache")
    assert result.manifest.counts["queries"] == 12 and "queries" not in result.manifest.inputs


def test_an_eval_step_without_judgments_is_refused_before_anything_runs(project, corpus_only):
    from retrdistill.pipeline import check_judgments

    p = load_pipeline(project / "pipelines" / "p.yaml", collection=corpus_only)
    with pytest.raises(ConfigError, match=r"step 'e' \(eval\) scores judged queries, but .* has no queries\.jsonl "
                                          r"and no qrels/test\.tsv.*--only q --only m --only s --only t --only t2 --only i$"):
        check_judgments(p)
    check_judgments(p, only={"q", "m", "s", "t", "i"})
    check_judgments(load_pipeline(project / "pipelines" / "p.yaml"))  # a BEIR folder with judgments
    refused = runner.invoke(app, ["run", str(project / "pipelines" / "p.yaml"), "--plan", "-q", "--collection",
                                  str(corpus_only)], env=WIDE)
    assert refused.exit_code == 2 and "scores judged queries" in refused.output
    planned = runner.invoke(app, ["run", str(project / "pipelines" / "p.yaml"), "--plan", "-q", "--collection",
                                  str(corpus_only), "--only", "q", "--only", "m"], env=WIDE)
    assert planned.exit_code == 0, planned.output


# ------------------------------------------------------------------ students: pick, and not an index
def _student(folder: Path, value: float | None, step: str) -> Path:
    """A finished student artefact (a model/ folder and a validation record), as a train step writes one."""
    from retrdistill.stages.base import Work

    def body(tmp: Path) -> dict:
        (tmp / "model").mkdir()
        (tmp / "model" / "weights.bin").write_bytes(step.encode())
        if value is None:
            return {}
        curve = [{"step": 5, "epoch": 1.0, "metrics": {"eval_pseudo-mrr@10": value}, "seconds": 1.0}]
        return {"validation": {"metric": "pseudo-mrr@10", "curve": curve, "best": {"step": 5, "value": value},
                               "last_step": 5, "split": {"held_out_fingerprint": "same"}}}

    Work("train", "student", folder, {"step": step}, {}, body, step=step).run()
    return folder


def test_pick_command_copies_the_student_best_on_validation(tmp_path):
    a, b = _student(tmp_path / "a", 0.61, "a"), _student(tmp_path / "b", 0.72, "b")
    done = runner.invoke(app, ["pick", "--students", str(a), "--students", str(b), "--out", str(tmp_path / "p"), "-q"],
                         env=WIDE)
    assert done.exit_code == 0, done.output
    assert json.loads((tmp_path / "p" / "pick.json").read_text())["picked"] == "b"
    assert (tmp_path / "p" / "model" / "weights.bin").read_bytes() == b"b"
    refused = runner.invoke(app, ["pick", "--students", str(a), "--out", str(tmp_path / "q"), "-q"], env=WIDE)
    assert refused.exit_code == 2 and "at least two students" in refused.output


def test_a_student_given_as_an_index_says_how_to_index_it(tmp_path):
    from retrdistill import registry
    from retrdistill.retriever import Retriever

    student = _student(tmp_path / "student", None, "student")
    with pytest.raises(ManifestError, match="is a trained student .*not an index.*retrdistill index --model "
                                            f"{student / 'model'}.*stage: index, model: \"@student\""):
        Retriever.load(student)
    system = registry.build("system", "index", {"path": str(student)})
    with pytest.raises(ConfigError, match="eval system 'index': .* is a trained student .*retrdistill index --model"):
        system.input_fingerprint()


# ------------------------------------------------------------------ search hits
def test_hits_carry_title_and_text_apart(tmp_path):
    import numpy as np

    from retrdistill.data.beir import load_corpus
    from retrdistill.retriever import Hit, Retriever

    (tmp_path / "corpus.jsonl").write_text(
        '{"_id": "d1", "title": "Synapse", "text": "A junction between two neurons."}\n'
        '{"_id": "d2", "text": "Axons carry signals away."}\n', encoding="utf-8")
    corpus = load_corpus(tmp_path / "corpus.jsonl", tmp_path / "cache")

    class Indexer:
        def encode_queries(self, model, queries, info):
            return np.zeros((len(queries), 1), dtype=np.float32)

        def search(self, index, embeddings, k):
            return np.array([[0.9, 0.5][:k]] * len(embeddings)), np.array([[0, 1][:k]] * len(embeddings))

    retriever = Retriever(tmp_path, None, ["d1", "d2"], None, {}, corpus, indexer=Indexer())
    first, second = retriever.search("what is a synapse", k=2)
    assert (first.doc_id, first.title, first.text) == ("d1", "Synapse", "A junction between two neurons.")
    assert first.passage == "Synapse A junction between two neurons." and second.title == ""
    assert second.passage == second.text == "Axons carry signals away."
    assert retriever.batch_search(["q"], k=1, with_text=False) == [[Hit("d1", 0.9)]]
    for documented in (Hit, Retriever.search, Retriever.batch_search):
        doc = documented.__doc__
        assert "Example::" in doc and "Retriever.load(" in doc, documented
    assert "Args:" in Retriever.search.__doc__ and "Returns:" in Retriever.batch_search.__doc__


# ------------------------------------------------------------------ progress
def test_a_nested_bar_is_left_out_of_the_rate_of_the_bar_around_it():
    progress.enable()
    outer = progress.bar(10, "mine (dense)", "q")
    inner = progress.bar(5, "encode model", "psg")
    assert progress.open_labels() == ["mine (dense)", "encode model"]
    started = outer.bar.start_t
    inner.started -= 100  # as if the nested work took 100 s
    inner.close()
    assert outer.bar.start_t >= started + 100  # the outer bar's rate counts its own time only
    assert progress.open_labels() == ["mine (dense)"]
    outer.close()
    assert progress.open_labels() == []


def test_the_trainer_reports_through_a_labelled_bar_and_rounded_log_lines(caplog, monkeypatch):
    from retrdistill.training.fit import LogCallback, StepBar, trainer_kind

    from sentence_transformers import SentenceTransformerTrainer
    from sentence_transformers.sparse_encoder import SparseEncoderTrainer

    assert (trainer_kind(SentenceTransformerTrainer), trainer_kind(SparseEncoderTrainer)) == ("dense", "sparse")
    opened = []
    monkeypatch.setattr(progress, "bar", lambda total, desc, unit="it", initial=0: opened.append((desc, unit, total))
                        or progress._Silent())
    state = SimpleNamespace(is_world_process_zero=True, is_local_process_zero=True, global_step=0, max_steps=114)
    StepBar("train (dense)").on_train_begin(None, state, None)
    assert opened == [("train (dense)", "step", 114)]
    state.global_step = 20
    with caplog.at_level(logging.INFO, logger="retrdistill.training.fit"):
        LogCallback("train (dense)").on_log(None, state, None, logs={
            "loss": 0.412734, "grad_norm": 1.52341, "learning_rate": 2.7e-05, "epoch": 0.3508771929824561})
        LogCallback("train (dense)").on_log(None, state, None, logs={"eval_pseudo-mrr@10": 0.85, "epoch": 0.35})
        LogCallback("train (dense)").on_log(None, state, None, logs={
            "train_runtime": 272.4123, "train_samples_per_second": 0.304, "train_loss": 0.000479763, "epoch": 1.7})
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == [
        "train (dense): step 20/114 (epoch 0.35): loss 0.4127, grad_norm 1.523, learning_rate 2.7e-05",
        "train (dense): done, 20 steps: train_runtime 272.4s, train_loss 0.0004798"]


def test_bars_are_labelled_and_quiet_shows_none(small_collection, tmp_path):
    common = ["--collection", str(small_collection), "--cache-dir", str(tmp_path / "cache")]
    made = runner.invoke(app, ["queries", *common, "--out", str(tmp_path / "q"), "-o", "num_queries=8", "-q"], env=WIDE)
    assert made.exit_code == 0, made.output
    loud = runner.invoke(app, ["mine", *common, "--queries", str(tmp_path / "q"), "--out", str(tmp_path / "m"),
                               "--miner", "bm25"], env=WIDE)
    assert loud.exit_code == 0, loud.output
    assert "mine (bm25): 100%" in loud.stderr and "BM25 tokenise" in loud.stderr
    quiet = runner.invoke(app, ["index", *common, "--model", "offline:tiny-bert-mlm", "--out", str(tmp_path / "i"),
                                "-q"], env=WIDE)
    assert quiet.exit_code == 0, quiet.output
    assert "%|" not in quiet.stderr and "Loading weights" not in quiet.stderr, quiet.stderr
    progress.silence_libraries(False)
    fresh = ["--collection", str(small_collection), "--cache-dir", str(tmp_path / "cache2")]  # encodes again
    shown = runner.invoke(app, ["index", *fresh, "--model", "offline:tiny-bert-mlm", "--out", str(tmp_path / "j")],
                          env=WIDE)
    assert shown.exit_code == 0, shown.output
    assert "encode offline:tiny-bert-mlm" in shown.stderr  # bars come back without -q


def test_log_lines_go_above_open_bars(monkeypatch):
    import io

    from tqdm import tqdm

    written = []
    monkeypatch.setattr(tqdm, "write", classmethod(lambda cls, text, file=None, **kw: written.append(text)))
    stream = io.StringIO()
    handler = progress.LogHandler(stream)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "a log line", None, None)
    handler.emit(record)
    assert stream.getvalue() == "a log line\n" and not written  # no bar open: a plain line
    progress.enable()
    with progress.bar(3, "work", "it"):
        handler.emit(record)
    assert written == ["a log line"] and stream.getvalue() == "a log line\n"  # through tqdm: above the bar
