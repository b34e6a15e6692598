"""The LLM judge locally and over HTTP, side by side: the same pairs, the same prompts, speed and agreement.

    nice -n 10 python benchmarks/llm_http_judge.py                                   # SmolLM2-135M, 24 pairs
    nice -n 10 python benchmarks/llm_http_judge.py --model offline:qwen2.5-coder-1.5b-instruct --queries 4 \
        --passages 5 --llama-server llama-build/bin/llama-server                     # + llama.cpp's server

Pairs: the first ``--queries`` judged test queries of the sample (by id), each with its BM25 top ``--passages``.
Judged three or four ways, one after the other on the same machine:

* ``local``: the ``llm`` teacher loading the model here (transformers, float32, dequantised from GGUF where the
  model is one), batch ``--batch-size``;
* ``serve-llm``: ``retrdistill serve-llm`` in a child process on loopback (the same weights and precision), the
  ``llm`` teacher with ``llm: openai`` asking for the top 20 first-token log-probabilities;
* ``llama-server`` (with ``--llama-server``): llama.cpp's server on the model folder's GGUF as it is (quantised),
  ``-np`` slots, ``--no-repack`` (docs/llm.md), the same HTTP teacher.

Reported per way: seconds to load (to the first answer for servers), pairs/s over all pairs (model loaded), the
log-odds, and against ``local``: mean and largest absolute difference, Spearman correlation, pairs within 5e-5,
answers with an answer word outside the top 20. Machine, threads and load averages are recorded.
Writes ``benchmarks/results/llm-http-judge-cpu.json`` (or ``--out``), atomically.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
log = logging.getLogger("llm_http_judge")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, logfile: Path, timeout: float = 900.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited (rc {proc.returncode}):\n{logfile.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"server at {url} did not come up in {timeout:.0f}s")


def judge_pairs(teacher, pairs: list[tuple[str, str]]) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    scores = teacher.score_pairs(pairs)
    return scores, time.perf_counter() - started


def compare(reference: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    from scipy import stats

    d = np.abs(reference - scores)
    return {"mean_abs_difference": round(float(d.mean()), 5), "max_abs_difference": round(float(d.max()), 5),
            "spearman": round(float(stats.spearmanr(reference, scores).statistic), 4),
            "within_5e-5": int((d < 5e-5).sum())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--collection", default=str(ROOT / "data" / "msmarco-dl-5k"))
    ap.add_argument("--cache", default=str(ROOT / ".cache" / "retrdistill"))
    ap.add_argument("--model", default="offline:smollm2-135m-instruct")
    ap.add_argument("--queries", type=int, default=4)
    ap.add_argument("--passages", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2, help="torch threads here and in serve-llm; llama.cpp's -t")
    ap.add_argument("--concurrency", type=int, default=4, help="the HTTP client's parallel requests (and -np)")
    ap.add_argument("--llama-server", default="", help="a built llama-server binary (docs/llm.md); skipped if empty")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "llm-http-judge-cpu.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    import torch

    from retrdistill import registry
    from retrdistill.artefacts import write_json_atomic
    from retrdistill.data.beir import open_collection
    from retrdistill.models import gguf_file, resolve_model

    torch.set_num_threads(args.threads)
    cache_dir = Path(args.cache)
    collection = open_collection(args.collection, cache_dir / "corpora")
    corpus = collection.corpus
    qrels, _ = collection.qrels("test")
    judged = sorted(q for q, docs in qrels.items() if any(g >= 1 for g in docs.values()))[:args.queries]
    bm25 = registry.build("miner", "bm25", {}, corpus=corpus, cache_dir=cache_dir)
    hits = bm25.search({q: collection.queries[q] for q in judged}, args.passages)
    row = corpus.row_index()
    pairs = [(collection.queries[q], text) for q in judged
             for text in corpus.texts_at([row[d] for d, _ in hits[q]])]
    log.info("%d pairs (%d queries x %d passages)", len(pairs), len(judged), args.passages)
    load_before = os.getloadavg()
    ways: dict[str, Any] = {}

    started = time.perf_counter()
    local = registry.build("teacher", "llm", {"model": args.model, "batch_size": args.batch_size},
                           corpus=corpus, cache_dir=cache_dir)
    local.model  # noqa: B018 - load before timing
    loaded = time.perf_counter() - started
    reference, seconds = judge_pairs(local, pairs)
    ways["local"] = {"how": f"transformers in this process, float32, batch {args.batch_size}, "
                            f"{args.threads} torch threads",
                     "load_seconds": round(loaded, 1), "seconds": round(seconds, 1),
                     "pairs_per_s": round(len(pairs) / seconds, 3), "scores": [round(float(s), 5) for s in reference]}
    del local

    def over_http(name: str, command: list[str], served_name: str, logfile: Path, how: str) -> None:
        port = int(command[command.index("--port") + 1])
        base = f"http://127.0.0.1:{port}"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        began = time.perf_counter()
        with open(logfile, "wb") as fh:
            proc = subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT, env=env)
        try:
            wait_for(f"{base}/v1/models", proc, logfile)
            up = time.perf_counter() - began
            judge = registry.build("teacher", "llm", {
                "model": args.model, "llm": "openai",
                "llm_options": {"base_url": f"{base}/v1", "model": served_name, "concurrency": args.concurrency}},
                corpus=corpus, cache_dir=cache_dir)
            scores, took = judge_pairs(judge, pairs)
            ways[name] = {"how": how, "load_seconds": round(up, 1), "seconds": round(took, 1),
                          "pairs_per_s": round(len(pairs) / took, 3),
                          "answers_outside_top": judge.answers_outside_top,
                          "scores": [round(float(s), 5) for s in scores], "against_local": compare(reference, scores)}
            log.info("%s: %.3f pairs/s, %s", name, len(pairs) / took, ways[name]["against_local"])
        finally:
            proc.terminate()
            proc.wait(timeout=60)

    logs = Path(args.cache) / "bench-logs"
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    over_http("serve-llm", [sys.executable, "-m", "retrdistill.cli.app", "serve-llm", args.model, "--port", str(port),
                            "--threads", str(args.threads), "--batch-size", str(args.batch_size), "--quiet"],
              args.model, logs / "serve-llm.log",
              f"retrdistill serve-llm, float32, batch {args.batch_size}, {args.threads} torch threads; client "
              f"concurrency {args.concurrency}")
    if args.llama_server:
        path = resolve_model(args.model)
        gguf = gguf_file(path)
        if not gguf:
            raise SystemExit(f"{args.model}: no GGUF file for llama-server")
        port = free_port()
        over_http("llama-server", [args.llama_server, "-m", str(Path(path) / gguf), "--port", str(port),
                                   "-t", str(args.threads), "-np", str(args.concurrency), "-c", str(2048 * args.concurrency),
                                   "--no-repack"], Path(gguf).stem, logs / "llama-server.log",
                  f"llama.cpp llama-server on {gguf} as it is, {args.threads} threads, {args.concurrency} slots, "
                  f"--no-repack")

    report = {
        "model": args.model, "pairs": len(pairs), "queries": judged, "passages_per_query": args.passages,
        "ways": ways, "measured": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__},
        "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
    }
    write_json_atomic(Path(args.out), report)
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
