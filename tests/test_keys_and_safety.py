"""Step keys cover what changes a step's output and nothing else, and artefacts are never silently stale or
overwritten: a real pipeline (queries -> mine -> score -> train -> index -> eval) on a sub-collection of the
sample with the tiny bundled BERT, in a project folder with relative paths."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from retrdistill.artefacts import LockedError, artefact_lock, read_manifest
from retrdistill.errors import ManifestError
from retrdistill.pipeline import load_pipeline, plan_pipeline, run_pipeline
from retrdistill.stages.base import Work, execute

TINY = "offline:tiny-bert-mlm"
STEPS = ["q", "neg", "s", "t", "idx", "board"]


def _pipeline_text(*, batch_size: int = 32, shard_size: int = 4096, learning_rate: str = "1.0e-4") -> str:
    return f"""
name: keys
collection: collection
workdir: runs/keys
cache_dir: cache
steps:
  - {{id: q, stage: queries, options: {{num_queries: 12, seed: 13}}}}
  - {{id: neg, stage: mine, queries: "@q", miner: bm25, depth: 20, negatives: 3, rank_max: 20}}
  - {{id: s, stage: score, candidates: "@neg", teacher: bi-encoder,
     options: {{model: "{TINY}", max_seq_length: 48, batch_size: {batch_size}}}}}
  - id: t
    stage: train
    scores: "@s"
    student: pruned
    options: {{model: "{TINY}", max_seq_length: 48}}
    negatives_per_query: 2
    max_steps: 2
    batch_size: 4
    seed: 13
    learning_rate: {learning_rate}
  - {{id: idx, stage: index, model: "@t", max_seq_length: 48, options: {{shard_size: {shard_size}}}}}
  - id: board
    stage: eval
    metrics: [ndcg@10]
    measure_cost: false
    systems:
      - {{name: student, type: index, options: {{path: "@idx"}}}}
      - {{name: base, type: dense, options: {{model: "{TINY}", max_seq_length: 48, batch_size: {batch_size}}}}}
"""


def _write(project: Path, **kw) -> Path:
    path = project / "pipeline.yaml"
    path.write_text(_pipeline_text(**kw), encoding="utf-8")
    return path


def _load(project: Path):
    return load_pipeline(project / "pipeline.yaml", base_dir=project)


def _states(project: Path, **kw) -> dict[str, str]:
    return {p.id: p.state for p in plan_pipeline(_load(project), **kw)}


@pytest.fixture(scope="module")
def project(tmp_path_factory, small_collection) -> Path:
    """A finished project folder: the pipeline file, its collection, workdir and cache, all relative."""
    root = tmp_path_factory.mktemp("project") / "proj"
    root.mkdir()
    shutil.copytree(small_collection, root / "collection")
    _write(root)
    run_pipeline(_load(root))
    assert set(_states(root).values()) == {"current"}
    return root


def _copy(project: Path, tmp_path: Path) -> Path:
    other = tmp_path / "copied-elsewhere"
    shutil.copytree(project, other, symlinks=True)
    return other


def test_output_neutral_options_leave_every_step_current(project, tmp_path):
    """batch_size of the teacher and of an eval system, shard_size of the indexer change no output: no step
    reruns (before, the score step reran from cache and marked the train step stale)."""
    copy = _copy(project, tmp_path)
    _write(copy, batch_size=16, shard_size=1024)
    assert _states(copy) == dict.fromkeys(STEPS, "current")
    runs = run_pipeline(_load(copy))
    assert all(r.skipped for r in runs)


def test_output_changing_option_is_still_keyed(project, tmp_path):
    copy = _copy(project, tmp_path)
    _write(copy, learning_rate="2.0e-4")
    states = _states(copy)
    assert states["t"] == "stale" and states["idx"] == "stale" and states["board"] == "stale"
    assert states["q"] == states["neg"] == states["s"] == "current"


def test_copied_project_folder_is_current(project, tmp_path):
    """Keys hold no absolute path: a project folder copied elsewhere plans every step current."""
    copy = _copy(project, tmp_path)
    assert _states(copy) == dict.fromkeys(STEPS, "current")
    for step in STEPS:
        manifest = read_manifest(copy / "runs" / "keys" / step)
        assert str(project) not in json.dumps(manifest.config), f"{step}'s keyed config holds an absolute path"


def test_retrained_student_is_never_searched_through_its_old_index(project, tmp_path):
    """A student retrained in place (--only the train step): the index refuses its new model, naming both
    fingerprints, and the eval is stale rather than 'up to date' (which searched old passage vectors with new
    query vectors)."""
    from retrdistill.retriever import Retriever

    copy = _copy(project, tmp_path)
    _write(copy, learning_rate="3.0e-4")
    run_pipeline(_load(copy), only={"t"})
    index = copy / "runs" / "keys" / "idx"
    with pytest.raises(ManifestError, match="fingerprint") as refused:
        Retriever.load(index)
    assert "rebuild the index" in str(refused.value)
    assert _states(copy, only={"board"})["board"] == "stale"
    with pytest.raises(ManifestError, match="rebuild the index"):
        run_pipeline(_load(copy), only={"board"})
    run_pipeline(_load(copy))  # the whole pipeline rebuilds the index, then evaluates
    Retriever.load(index)
    assert _states(copy) == dict.fromkeys(STEPS, "current")


def test_train_key_covers_the_corpus_texts(project, tmp_path):
    """Scores name passages by id: rewriting a passage's text (same ids, same scores) changes the training rows,
    so it must change the train step's key."""
    from retrdistill.stages.train import TrainConfig, prepare_train

    scores = project / "runs" / "keys" / "s"
    other = tmp_path / "collection"
    shutil.copytree(project / "collection", other)
    lines = (other / "corpus.jsonl").read_text(encoding="utf-8").rstrip("\n").split("\n")
    doc = json.loads(lines[0])
    doc["text"] = "rewritten: " + doc["text"]
    lines[0] = json.dumps(doc)
    (other / "corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = TrainConfig(student="pruned", options={"model": TINY, "max_seq_length": 48}, max_steps=2, batch_size=4)
    cache = tmp_path / "cache"
    same = prepare_train(cfg, scores, project / "collection", tmp_path / "a", cache_dir=cache).key
    changed = prepare_train(cfg, scores, other, tmp_path / "a", cache_dir=cache).key
    assert same != changed


def test_queries_key_covers_the_filter_teachers_weights(project, tmp_path):
    """The LLM query source's filter teacher decides which queries are kept: a byte of its weights flipped
    changes the queries step's key (plan and run share it), not only the plan's."""
    from retrdistill.models import resolve_model
    from retrdistill.stages.queries import QueriesConfig, prepare_queries

    teacher = tmp_path / "filter-teacher"
    shutil.copytree(resolve_model(TINY), teacher)
    cfg = QueriesConfig(source="llm", options={
        "llm_options": {"model": resolve_model(TINY)}, "num_passages": 4,
        "filter_teacher": "bi-encoder", "filter_teacher_options": {"model": str(teacher)}})
    cache = tmp_path / "cache"

    def key() -> str:
        return prepare_queries(cfg, project / "collection", tmp_path / "q", cache_dir=cache).key

    before = key()
    weights = next(p for p in teacher.iterdir() if p.suffix in (".safetensors", ".bin"))
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stat = weights.stat()
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert key() != before


def _body(text: str):
    def body(tmp: Path) -> dict:
        (tmp / "data.txt").write_text(text)
        return {}
    return body


def test_a_plain_file_at_an_output_path_is_refused_and_kept(tmp_path):
    out = tmp_path / "stage"
    out.write_text("the user's notes")
    with pytest.raises(ManifestError, match="not an artefact folder"):
        execute("mine", "candidates", out, {"a": 1}, {}, _body("x"))
    assert out.read_text() == "the user's notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage"]


def test_a_link_at_an_output_path_is_refused(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "stage").symlink_to(target)
    with pytest.raises(ManifestError, match="not an artefact folder"):
        execute("mine", "candidates", tmp_path / "stage", {"a": 1}, {}, _body("x"))
    assert not any(target.iterdir())


@pytest.mark.parametrize("umask, mode", [(0o022, 0o755), (0o002, 0o775)])
def test_artefact_folders_follow_the_users_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        execute("mine", "candidates", tmp_path / "stage", {"a": 1}, {}, _body("x"))
    finally:
        os.umask(old)
    assert (tmp_path / "stage").stat().st_mode & 0o777 == mode
    assert (tmp_path / "stage" / "data.txt").stat().st_mode & 0o777 == mode & 0o666


def test_keys_follow_major_versions_of_the_model_libraries(tmp_path, monkeypatch):
    """A major version of sentence-transformers or transformers changes the key (weights as saved, scores and
    embeddings may change); a minor or patch version does not, and the plan says why it is stale."""
    import importlib.metadata as metadata

    real = metadata.version
    installed = {"sentence-transformers": "5.1.0", "transformers": "5.2.0"}
    monkeypatch.setattr(metadata, "version", lambda name: installed.get(name) or real(name))
    work = Work("score", "scores", tmp_path / "stage", {"a": 1}, {}, _body("x"))
    first = work.key
    work.run()
    installed["transformers"] = "5.9.3"
    assert work.key == first and work.status()[0] == "current"
    installed["sentence-transformers"] = "6.0.0"
    assert work.key != first
    assert work.status() == ("stale", "library major version changed: sentence-transformers")


_HOLD = """
import sys, time
from retrdistill.artefacts import artefact_lock
with artefact_lock(sys.argv[1], what="pipeline's workdir"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_run_of_one_workdir_is_refused_naming_the_holder(project, tmp_path):
    copy = _copy(project, tmp_path)
    pipeline = _load(copy)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(pipeline.workdir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match=f"pid {holder.pid}"):
            run_pipeline(pipeline)
    finally:
        holder.kill()
        holder.wait()
    assert all(r.skipped for r in run_pipeline(pipeline))  # released when the holder died


def test_a_second_writer_of_one_artefact_is_refused(tmp_path):
    out = tmp_path / "stage"
    with artefact_lock(out):
        with pytest.raises(LockedError, match=f"pid {os.getpid()}"):
            execute("mine", "candidates", out, {"a": 1}, {}, _body("x"))
    execute("mine", "candidates", out, {"a": 1}, {}, _body("x"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage"]
    started = time.monotonic()
    with artefact_lock(out):  # free again at once
        assert time.monotonic() - started < 1
