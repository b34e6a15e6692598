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
