"""Crash safety: a stage killed with SIGKILL part-way leaves no visible artefact, and its re-run reuses every
finished piece, recomputes only the rest, cleans the dead run's temporaries and writes exactly what an
uninterrupted run writes.

The stage runs in a child process with a hook that, at a chosen point (after N committed score batches or N
finished embedding shards, while a temporary file or folder is open), writes a marker file and waits; the test
then kills the child with SIGKILL from outside.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from killing import run_until_marker_then_kill

from retrdistill.artefacts import atomic_dir, atomic_path, remove_stale_temps

ROOT = Path(__file__).resolve().parents[1]
MODEL = "offline:tiny-bert-mlm"


def _visible(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if not p.name.startswith(".")}


def _hidden(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.name.startswith(".")}


# ------------------------------------------------------------------ scoring
SCORE_OPTIONS = {"model": MODEL, "encode_corpus": False, "max_seq_length": 64, "batch_size": 32}


@pytest.fixture(scope="module")
def candidates(small_collection, tmp_path_factory):
    """Training queries and mined candidates on the small real collection (BM25: no model needed)."""
    from retrdistill.stages.mine import MineConfig, run_mine
    from retrdistill.stages.queries import QueriesConfig, run_queries

    work = tmp_path_factory.mktemp("crash-upstream")
    cache = work / "cache"
    run_queries(QueriesConfig(options={"num_queries": 40}), small_collection, work / "queries", cache_dir=cache)
    run_mine(MineConfig(negatives=4, depth=30, rank_max=30), small_collection, work / "queries", work / "candidates",
             cache_dir=cache)
    return work / "candidates"


@pytest.mark.slow  # a child process imports torch and loads a model: ~20-60 s on 2 shared cores
def test_killed_scoring_resumes_from_cache_and_matches_an_uninterrupted_run(small_collection, candidates, tmp_path):
    from retrdistill.kinds import read_candidates
    from retrdistill.stages.score import ScoreConfig, run_score

    groups = list(read_candidates(candidates))
    batch_queries, batches_before_kill = 4, 3
    pairs = [len(g.positives) + len(g.negatives) for g in groups]
    pairs_before_kill = sum(pairs[:batch_queries * batches_before_kill])
    assert len(groups) > batch_queries * (batches_before_kill + 2)

    work, cache, marker = tmp_path / "run", tmp_path / "cache", tmp_path / "killed-here"
    work.mkdir()
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from retrdistill.score_cache import ScoreCache
        from retrdistill.stages.score import ScoreConfig, run_score

        put, calls = ScoreCache.put, []
        def put_then_hang(self, rows):
            put(self, rows)                     # this batch is committed...
            calls.append(1)
            if len(calls) == {batches_before_kill}:
                Path({str(marker)!r}).touch()  # ...and the stage's temporary folder holds a partial scores.jsonl
                time.sleep(3600)
        ScoreCache.put = put_then_hang
        cfg = ScoreConfig(teacher="bi-encoder", options={SCORE_OPTIONS!r}, batch_queries={batch_queries})
        run_score(cfg, {str(small_collection)!r}, {str(candidates)!r}, {str(work / 'scores')!r}, cache_dir={str(cache)!r})
    """)
    run_until_marker_then_kill(script, marker)

    # Killed: no scores artefact is visible, only the dead run's dot-prefixed temporary folder.
    assert _visible(work) == set()
    # ...and the dead run's lock file, which no process holds any more (the operating system released it)
    stale = _hidden(work) - {".scores.lock"}
    assert stale and all(name.startswith(".scores.") and name.endswith(".tmp") for name in stale)
    with sqlite3.connect(cache / "scores.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM scores").fetchone()[0] == pairs_before_kill

    cfg = ScoreConfig(teacher="bi-encoder", options=dict(SCORE_OPTIONS), batch_queries=batch_queries)
    resumed = run_score(cfg, small_collection, candidates, work / "scores", cache_dir=cache)
    assert resumed.manifest.counts == {"groups": len(groups), "pairs_from_cache": pairs_before_kill,
                                       "pairs_scored": sum(pairs) - pairs_before_kill}
    assert _visible(work) == {"scores"} and _hidden(work) == set(), "the re-run must remove the dead run's temporaries"

    reference = run_score(cfg, small_collection, candidates, tmp_path / "reference" / "scores",
                          cache_dir=tmp_path / "reference-cache")
    assert reference.manifest.counts["pairs_scored"] == sum(pairs)
    assert (work / "scores" / "scores.jsonl").read_bytes() == (tmp_path / "reference" / "scores" / "scores.jsonl").read_bytes()
    assert resumed.manifest.outputs == reference.manifest.outputs


# ------------------------------------------------------------------ corpus encoding
@pytest.mark.slow  # a child process imports torch and loads a model: ~20-60 s on 2 shared cores
def test_killed_encoding_resumes_at_the_first_missing_shard(small_collection, tmp_path, monkeypatch):
    import retrdistill.encoding.corpus as corpus_mod
    from retrdistill.data.beir import load_corpus
    from retrdistill.encoding.corpus import EncodeSettings, corpus_embeddings

    settings = EncodeSettings(batch_size=32, max_seq_length=32, shard_size=64)
    cache, marker = tmp_path / "cache", tmp_path / "killed-here"
    corpus = load_corpus(small_collection / "corpus.jsonl", cache / "corpora")
    n, shards_before_kill = len(corpus), 3
    assert n > settings.shard_size * (shards_before_kill + 2)

    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        import numpy as np
        from retrdistill.data.beir import load_corpus
        from retrdistill.encoding.corpus import EncodeSettings, corpus_embeddings

        save, calls = np.save, []
        def save_half_then_hang(fh, arr, *args, **kwargs):
            if "shards-" not in str(getattr(fh, "name", "")):
                return save(fh, arr, *args, **kwargs)
            calls.append(1)
            if len(calls) <= {shards_before_kill}:
                return save(fh, arr, *args, **kwargs)
            fh.write(b"\\x93NUMPY half a shard")   # the next shard is half written into its temporary file
            fh.flush()
            Path({str(marker)!r}).touch()
            time.sleep(3600)
        np.save = save_half_then_hang
        corpus = load_corpus({str(small_collection / 'corpus.jsonl')!r}, {str(cache / 'corpora')!r})
        corpus_embeddings({MODEL!r}, corpus, {str(cache)!r}, EncodeSettings(**{settings.__dict__!r}))
    """)
    run_until_marker_then_kill(script, marker)

    [folder] = list((cache / "embeddings").iterdir())
    assert not (folder / "meta.json").exists() and not (folder / "embeddings.npy").exists()
    shards = folder / f"shards-{settings.shard_size}"
    finished = sorted(p.name for p in shards.iterdir() if not p.name.startswith("."))
    assert finished == [f"{i * settings.shard_size:012d}.npy" for i in range(shards_before_kill)]
    assert len(_hidden(shards)) == 1, "the half-written shard is a dot-prefixed temporary, never a shard file"
    finished_mtimes = {name: (shards / name).stat().st_mtime_ns for name in finished}

    encoded: list[int] = []
    real_encode = corpus_mod.encode_texts

    def counting_encode(model, texts, **kwargs):
        encoded.append(len(texts))
        if shards.exists():  # the shards finished before the kill are the same files: read, never rewritten
            assert {name: (shards / name).stat().st_mtime_ns for name in finished} == finished_mtimes
        return real_encode(model, texts, **kwargs)

    monkeypatch.setattr(corpus_mod, "encode_texts", counting_encode)
    resumed = corpus_embeddings(MODEL, corpus, cache, settings)
    assert sum(encoded) == n - shards_before_kill * settings.shard_size
    assert len(encoded) == -(-n // settings.shard_size) - shards_before_kill
    assert not shards.exists(), "shards (and the dead run's temporary) are removed once embeddings.npy is joined"
    assert _hidden(folder) == set()

    encoded.clear()
    reference = corpus_embeddings(MODEL, corpus, tmp_path / "reference-cache", settings)
    assert sum(encoded) == n
    assert resumed.embeddings.shape == reference.embeddings.shape == (n, reference.embeddings.shape[1])
    assert np.array_equal(np.asarray(resumed.embeddings), np.asarray(reference.embeddings))
    assert json.loads((folder / "meta.json").read_text())["documents"] == n


# ------------------------------------------------------------------ temporaries of dead processes
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temporaries_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    dead, alive = _dead_pid(), os.getppid()
    target = tmp_path / "stage"
    stale_dir = tmp_path / f".stage.{dead}-abc123.tmp"
    stale_dir.mkdir()
    (stale_dir / "partial.jsonl").write_text("half")
    stale_trash = tmp_path / f".stage.old-{dead}"
    stale_trash.mkdir()
    live_dir = tmp_path / f".stage.{alive}-def456.tmp"  # a concurrent run: must survive
    live_dir.mkdir()
    other = tmp_path / f".stage.jsonl.{dead}-x.tmp"  # another name's temporary: not this target's to judge
    other.write_text("x")
    with atomic_dir(target) as tmp:
        (tmp / "data.txt").write_text("ok")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["stage", live_dir.name, other.name])

    file_target = tmp_path / "embeddings.npy"
    stale_file = tmp_path / f".embeddings.npy.{dead}-zz.tmp"
    stale_file.write_bytes(b"x" * 1000)
    with atomic_path(file_target) as tmp:
        tmp.write_bytes(b"new")
    assert not stale_file.exists() and file_target.read_bytes() == b"new"
    assert remove_stale_temps(target) == 0
