"""Generation rate of an LLM client writing training data on the sample: InPars queries and written negatives.

    python benchmarks/llm_generation.py --model offline:qwen2.5-coder-0.5b-instruct --passages 16 --batch-size 8

Writes ``benchmarks/results/llm-generation-cpu.json``: load time, seconds per generation and generations per second for the
query prompt and the negative prompt, the mean completion length in words, and a few examples. Generations go
to a fresh cache folder, so every one is timed (nothing comes from the cache).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from retrdistill import registry
from retrdistill.data.beir import open_collection
from retrdistill.llm.cache import GenerationCache, generate_cached
from retrdistill.llm.client import GenerationParams
from retrdistill.llm.queries import clean_query
from retrdistill.llm.templates import load_template

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="offline:qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--passages", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "llm-generation-cpu.json"))
    args = ap.parse_args()

    corpus = open_collection(ROOT / "data" / "msmarco-dl-5k").corpus
    rows = random.Random(13).sample(range(len(corpus)), args.passages)
    passages = corpus.texts_at(rows)
    client = registry.build("llm", "transformers", {"model": args.model, "batch_size": args.batch_size,
                                                    "max_input_tokens": 768})
    started = time.perf_counter()
    client.load()
    load_s = time.perf_counter() - started
    report = {"model": args.model, "batch_size": args.batch_size, "passages": args.passages,
              "load_s": round(load_s, 1)}
    with tempfile.TemporaryDirectory() as tmp:
        cache = GenerationCache(tmp)
        started = time.perf_counter()
        queries = generate_cached(client, load_template("inpars"),
                                  [(str(i), {"passage": p[:800]}) for i, p in enumerate(passages)],
                                  GenerationParams(max_new_tokens=24, stop=("\n",)), cache)
        q_s = time.perf_counter() - started
        written = [clean_query(t) for t in queries.texts.values()]
        started = time.perf_counter()
        negatives = generate_cached(client, load_template("negative"),
                                    [(str(i), {"query": q}) for i, q in enumerate(written)],
                                    GenerationParams(max_new_tokens=64), cache)
        n_s = time.perf_counter() - started
    report["queries"] = {"seconds": round(q_s, 1), "per_generation_s": round(q_s / len(passages), 2),
                         "per_s": round(len(passages) / q_s, 3),
                         "mean_words": round(sum(len(q.split()) for q in written) / len(written), 1),
                         "examples": [{"passage": p[:200], "query": q} for p, q in zip(passages[:4], written[:4])]}
    texts = list(negatives.texts.values())
    report["negatives"] = {"seconds": round(n_s, 1), "per_generation_s": round(n_s / len(texts), 2),
                           "per_s": round(len(texts) / n_s, 3),
                           "mean_words": round(sum(len(t.split()) for t in texts) / len(texts), 1),
                           "examples": [{"query": q, "negative": t} for q, t in zip(written[:3], texts[:3])]}
    Path(args.out).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in report.items() if k not in ("queries", "negatives")}))
    print({k: report[k]["per_generation_s"] for k in ("queries", "negatives")})


if __name__ == "__main__":
    main()
