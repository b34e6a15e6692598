"""Generation rate of an LLM client writing training data on the sample: InPars queries and written negatives.

    python benchmarks/llm_generation.py --model offline:qwen2.5-coder-0.5b-instruct --passages 16 --batch-size 8
    python benchmarks/llm_generation.py --client openai --base-url http://127.0.0.1:8088/v1 \
        --model qwen2.5-coder-0.5b-instruct --passages 8 --concurrency 2      # e.g. a llama-server (docs/llm.md)

Writes ``benchmarks/results/llm-generation-cpu.json`` (``--client transformers``, the model loaded here) or
``benchmarks/results/llm-generation-openai.json`` (``--client openai``: a running OpenAI-compatible server,
``--model`` its served name): load time (local client only), seconds per generation and generations per second
for the query prompt and the negative prompt, the mean completion length in words, a few examples, and the
machine's load average before and after. Generations go to a fresh cache folder, so every one is timed (nothing
comes from the cache). With the same ``--passages`` both clients get the same prompts; ``--compare`` names
another result file whose per-generation times the report divides by its own (``speedup``).
"""

from __future__ import annotations

import argparse
import json
import os
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
    ap.add_argument("--client", choices=("transformers", "openai"), default="transformers")
    ap.add_argument("--model", default="offline:qwen2.5-coder-0.5b-instruct",
                    help="the local model, or with --client openai the name the server serves")
    ap.add_argument("--passages", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8, help="local client only")
    ap.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="openai client only")
    ap.add_argument("--concurrency", type=int, default=4, help="openai client only: requests at once")
    ap.add_argument("--server", default="", help="openai client only: how the server was started, for the report")
    ap.add_argument("--compare", default=str(ROOT / "benchmarks" / "results" / "llm-generation-cpu.json"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    out = args.out or str(ROOT / "benchmarks" / "results" / (
        "llm-generation-cpu.json" if args.client == "transformers" else "llm-generation-openai.json"))

    corpus = open_collection(ROOT / "data" / "msmarco-dl-5k").corpus
    rows = random.Random(13).sample(range(len(corpus)), args.passages)
    passages = corpus.texts_at(rows)
    load_before = [round(x, 2) for x in os.getloadavg()]
    if args.client == "transformers":
        client = registry.build("llm", "transformers", {"model": args.model, "batch_size": args.batch_size,
                                                        "max_input_tokens": 768})
        started = time.perf_counter()
        client.load()
        report = {"client": "transformers", "model": args.model, "batch_size": args.batch_size,
                  "passages": args.passages, "load_s": round(time.perf_counter() - started, 1)}
    else:
        client = registry.build("llm", "openai", {"base_url": args.base_url, "model": args.model,
                                                  "concurrency": args.concurrency, "timeout_s": 600})
        report = {"client": "openai", "base_url": args.base_url, "model": args.model,
                  "concurrency": args.concurrency, "server": args.server, "passages": args.passages}
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
    report["load_average"] = {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()],
                              "cpus": os.cpu_count()}
    if args.compare and Path(args.compare).is_file() and Path(args.compare).resolve() != Path(out).resolve():
        other = json.loads(Path(args.compare).read_text(encoding="utf-8"))
        report["speedup"] = {"versus": Path(args.compare).name, "same_prompts": other.get("passages") == args.passages,
                             **{k: round(other[k]["per_generation_s"] / report[k]["per_generation_s"], 1)
                                for k in ("queries", "negatives") if k in other}}
    Path(out).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in report.items() if k not in ("queries", "negatives")}))
    print({k: report[k]["per_generation_s"] for k in ("queries", "negatives")})


if __name__ == "__main__":
    main()
