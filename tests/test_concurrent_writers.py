"""Several writers on one cache: two real processes encoding the same corpus into the same embedding cache (or
the same sparse postings cache) both finish with identical results, and neither removes what the other is still
writing; the LLM generation cache removes only the temporaries this host's dead processes left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from retrdistill.artefacts import host_tag

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "msmarco-dl-5k"


# ------------------------------------------------------------------ the LLM generation cache's temporaries
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_generation_cache_removes_only_this_hosts_dead_temporaries(tmp_path):
    from retrdistill.llm.cache import GenerationCache

    cache = GenerationCache(tmp_path / "gen")
    namespace = tmp_path / "gen" / "ns"
    namespace.mkdir(parents=True)
    shard = "00000001700000000000-4242-000000.jsonl"
    dead, here = _dead_pid(), host_tag()
    other_host = f".{shard}.@{here}-elsewhere.{dead}-a1b2c3.tmp"  # another machine's: its pids are not ours
    live_local = f".{shard}.@{here}.{os.getppid()}-d4e5f6.tmp"  # a live process here (this test's parent)
    dead_local = f".{shard}.@{here}.{dead}-g7h8i9.tmp"  # a killed process here: abandoned
    legacy_dead = f".{shard}.{dead}-j0k1l2.tmp"  # named before hosts were recorded: judged as this host's
    for name in (other_host, live_local, dead_local, legacy_dead):
        (namespace / name).write_text('{"input": "x", "text": "half a row', encoding="utf-8")
    (namespace / shard).write_text(json.dumps({"input": "k", "text": "done"}) + "\n", encoding="utf-8")

    assert cache.lookup(namespace, {"k"}) == {"k": "done"}
    left = {p.name for p in namespace.iterdir()}
    assert other_host in left and live_local in left
    assert dead_local not in left and legacy_dead not in left
    assert shard in left


# ------------------------------------------------------------------ two processes, one encoding cache
WORKER = r'''
import glob, logging, os, sys, time
import numpy as np
import torch

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")  # into the writer's log
torch.set_num_threads(1)
kind, model_ref, corpus_dir, cache, ready, go, wait_glob, wait_count, out = sys.argv[1:]
from retrdistill.data.beir import load_corpus

corpus = load_corpus(corpus_dir, cache_dir=os.path.join(cache, "corpora"))
if kind == "dense":
    from retrdistill.encoding.corpus import EncodeSettings, corpus_embeddings, load_encoder

    settings = EncodeSettings(batch_size=8, shard_size=8)
    model = load_encoder(model_ref, settings)
else:
    from retrdistill.encoding.sparse import SparseSettings, corpus_postings, load_sparse_encoder, sparse_dim

    settings = SparseSettings(batch_size=8, shard_size=8)
    model = load_sparse_encoder(model_ref)
    sparse_dim(model)
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.01)
while len(glob.glob(wait_glob)) < int(wait_count):  # start once the other writer has written this many shards
    time.sleep(0.005)
if kind == "dense":
    result = corpus_embeddings(model_ref, corpus, cache, settings, model=model)
    np.savez(out, embeddings=np.asarray(result.embeddings))
else:
    result = corpus_postings(model_ref, corpus, cache, settings, model=model)
    np.savez(out, **{name: np.load(result.folder / name) for name in
                     ("postings.data.npy", "postings.indices.npy", "postings.indptr.npy")})
'''


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> Path:
    """96 passages of the sample: 12 shards of 8, so each writer spends a while inside the encoding."""
    folder = tmp_path_factory.mktemp("corpus-96")
    lines = (SAMPLE / "corpus.jsonl").read_text(encoding="utf-8").rstrip("\n").split("\n")[:96]
    (folder / "corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _two_writers(kind: str, model_ref: str, corpus_dir: Path, tmp_path: Path, pattern: str) -> list[dict]:
    """Run two writer processes on one cache: the second starts encoding once the first has written two shards
    (so the first finishes while the second is still at work). Their results, first writer's first."""
    from retrdistill.data.beir import load_corpus

    cache = tmp_path / "cache"
    load_corpus(corpus_dir, cache_dir=cache / "corpora")  # the Arrow copy built once, before both start
    script = tmp_path / "writer.py"
    script.write_text(WORKER, encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    go = tmp_path / "go"
    procs, outs, logs = [], [], []
    for name, wait_count in (("first", 0), ("second", 2)):
        outs.append(tmp_path / f"{name}.npz")
        logs.append(tmp_path / f"{name}.log")
        with open(logs[-1], "wb") as log:
            procs.append(subprocess.Popen(
                [sys.executable, str(script), kind, model_ref, str(corpus_dir), str(cache), str(tmp_path / name),
                 str(go), str(cache / pattern), str(wait_count), str(outs[-1])],
                stdout=log, stderr=subprocess.STDOUT, env=env))
    try:
        deadline = time.monotonic() + 300
        while not all((tmp_path / name).exists() for name in ("first", "second")):  # both models loaded
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
                [log.read_text()[-3000:] for log in logs]
            time.sleep(0.05)
        go.touch()
        for proc in procs:
            proc.wait(timeout=300)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, log in zip(procs, logs):
        assert proc.returncode == 0, log.read_text()[-4000:]
    results = []
    for out in outs:
        with np.load(out) as z:
            results.append({k: z[k] for k in z.files})
    return results


def _leftovers(folder: Path) -> list[str]:
    """Shards, temporaries and claims left in a finished cache folder."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.name.startswith("shards-"))


def test_two_processes_encode_one_corpus_into_one_embedding_cache(small_corpus, minilm, tmp_path):
    first, second = _two_writers("dense", minilm, small_corpus, tmp_path, "embeddings/*/shards-8/*.npy")
    assert first["embeddings"].shape == (96, 384)
    assert np.array_equal(first["embeddings"], second["embeddings"])
    (folder,) = (tmp_path / "cache" / "embeddings").iterdir()
    assert (folder / "meta.json").is_file() and _leftovers(folder) == []  # the last writer out cleaned up


def test_two_processes_build_one_sparse_postings_cache(small_corpus, tiny_sparse_encoder, tmp_path):
    first, second = _two_writers("sparse", tiny_sparse_encoder, small_corpus, tmp_path, "sparse/*/shards-8/*.npz")
    assert first["postings.indptr.npy"][-1] == len(first["postings.data.npy"]) > 0
    for name in first:
        assert np.array_equal(first[name], second[name]), name
    (folder,) = (tmp_path / "cache" / "sparse").iterdir()
    assert (folder / "meta.json").is_file() and _leftovers(folder) == []


def test_a_finished_writer_leaves_the_shards_to_writers_still_at_work(small_corpus, minilm, tmp_path):
    from retrdistill.data.beir import load_corpus
    from retrdistill.encoding.corpus import EncodeSettings, corpus_embeddings, embeddings_key

    corpus = load_corpus(small_corpus, cache_dir=tmp_path / "corpora")
    settings = EncodeSettings(batch_size=32, shard_size=32)
    dead, here = _dead_pid(), host_tag()
    results = []
    for name, claims, kept in (("live", [f".writer.@{here}.{os.getppid()}-abc123.tmp"], True),
                               ("other-host", [f".writer.@{here}-elsewhere.{dead}-abc123.tmp"], True),
                               ("dead", [f".writer.@{here}.{dead}-abc123.tmp"], False)):
        cache = tmp_path / name
        folder = cache / "embeddings" / embeddings_key(minilm, corpus, settings)[:24]
        folder.mkdir(parents=True)
        for claim in claims:  # another writer's claim on the folder, as it holds one while it encodes
            (folder / claim).touch()
        results.append(np.asarray(corpus_embeddings(minilm, corpus, cache, settings).embeddings))
        shards = folder / "shards-32"
        assert (folder / "meta.json").is_file()
        if kept:  # the other writer may still be reading them
            assert sorted(p.name for p in shards.iterdir()) == [f"{i:012d}.npy" for i in (0, 32, 64)], name
            assert _leftovers(folder) == sorted(["shards-32", *claims]), name  # its claim untouched, ours gone
        else:  # a killed writer's claim: abandoned, removed with the shards
            assert _leftovers(folder) == [], name
    assert all(np.array_equal(results[0], r) for r in results[1:])
