"""Peak memory of the corpus-sized steps, measured at growing corpus sizes.

    nice -n 19 python benchmarks/memory.py                       # 100k and 1M passages (see --help)
    nice -n 19 python benchmarks/memory.py --sizes 20000 --encode-sizes 20000 --out /tmp/m.json   # smoke run

A synthetic corpus is generated deterministically (words drawn from a fixed vocabulary with a Zipf-like
distribution, 30-80 words per passage). Every step runs in a fresh Python process so that one step's peak
does not hide another's; each child reports:

* ``peak_rss_mb``: the process's peak resident set (``getrusage`` ``ru_maxrss``), everything included;
* ``peak_anon_mb``: the peak of anonymous memory (``RssAnon`` sampled every 20 ms), i.e. excluding pages of
  memory-mapped files (the Arrow corpus, ``embeddings.npy``), which the kernel can drop at any time;
* ``baseline_rss_mb``: RSS after the step's imports, before any work;
* ``data_mb``: the bytes the step is allowed to hold because they are its product or its input
  (embeddings for encoding, embeddings + FAISS index for the index build, the BM25 index arrays for BM25, the
  id -> row table for ``rows``);
* ``overhead_mb``: ``peak_rss_mb - baseline_rss_mb - data_mb``, which should stay flat as the corpus grows.

The result is written atomically to ``benchmarks/results/memory.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = "offline:tiny-bert-mlm"
MAX_SEQ_LENGTH = 32
BATCH_SIZE = 256
VOCAB_SIZE = 30_000
MB = 1 << 20


# ------------------------------------------------------------------ synthetic data
def vocabulary(size: int = VOCAB_SIZE) -> list[str]:
    """A fixed list of pronounceable pseudo-words (the same on every machine)."""
    onsets = ["b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z", "br", "st", "tr"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ou"]
    codas = ["", "n", "r", "s", "t", "l", "m", "x"]
    syllables = [o + v + c for o in onsets for v in vowels for c in codas]  # 1,120
    words = list(syllables)
    i = 0
    while len(words) < size:
        a, b = divmod(i, len(syllables))
        words.append(syllables[a % len(syllables)] + syllables[b])
        i += 7919  # a prime stride spreads the two-syllable words over the syllable grid
    return words[:size]


def generate_corpus(path: Path, n: int, seed: int = 0) -> None:
    """``n`` passages, ids ``doc0000000``..., 30-80 words each, Zipf-like word frequencies."""
    import numpy as np

    from retrdistill.artefacts import atomic_path

    words = np.array(vocabulary(), dtype=object)
    weights = 1.0 / np.arange(1, len(words) + 1) ** 1.05
    cdf = np.cumsum(weights) / weights.sum()
    rng = np.random.default_rng(seed)
    chunk = 10_000
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for start in range(0, n, chunk):
            size = min(chunk, n - start)
            lengths = rng.integers(30, 81, size=size)
            picks = np.searchsorted(cdf, rng.random(int(lengths.sum())))
            offset = 0
            lines = []
            for i, length in enumerate(lengths):
                text = " ".join(words[picks[offset:offset + length]])
                title = " ".join(words[picks[offset:offset + 3]]).title()
                offset += length
                lines.append(json.dumps({"_id": f"doc{start + i:07d}", "title": title, "text": text}) + "\n")
            fh.writelines(lines)


def generate_queries(n: int, seed: int = 1) -> dict[str, str]:
    import numpy as np

    words = vocabulary()
    rng = np.random.default_rng(seed)
    return {f"q{i:05d}": " ".join(words[j] for j in rng.integers(0, 3000, size=int(rng.integers(3, 9)))) for i in range(n)}


# ------------------------------------------------------------------ measuring inside a child
class PeakSampler:
    """Samples RssAnon / RssFile from /proc/self/status in a thread; keeps the maxima."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak_anon = 0
        self.peak_file = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def read() -> dict[str, int]:
        out = {}
        try:
            with open("/proc/self/status", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith(("RssAnon:", "RssFile:", "VmRSS:")):
                        key, value, _unit = line.split()
                        out[key[:-1]] = int(value) * 1024
        except OSError:
            pass
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            now = self.read()
            self.peak_anon = max(self.peak_anon, now.get("RssAnon", 0))
            self.peak_file = max(self.peak_file, now.get("RssFile", 0))
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        now = self.read()
        self.peak_anon = max(self.peak_anon, now.get("RssAnon", 0))
        self.peak_file = max(self.peak_file, now.get("RssFile", 0))


def _rss_now() -> int:
    return PeakSampler.read().get("VmRSS", 0)


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def child(step: str, n: int, work: Path) -> dict:
    """Run one step on the first ``n`` passages; return its measurements."""
    import numpy as np  # noqa: F401 - imported before the baseline like every step's libraries

    from retrdistill.data.beir import load_corpus

    corpus_file = work / f"corpus-{n}" / "corpus.jsonl"
    cache = work / f"cache-{n}"
    extra: dict = {}
    # What a step measures must be built by it, not found in the cache of an earlier run of the benchmark.
    if step == "load":
        shutil.rmtree(cache / "corpora", ignore_errors=True)
    if step == "bm25-build":
        shutil.rmtree(cache / "bm25", ignore_errors=True)
    if step == "encode":
        shutil.rmtree(cache / "embeddings", ignore_errors=True)
    if step in ("encode", "index"):
        import faiss  # noqa: F401
        import torch  # noqa: F401
        import sentence_transformers  # noqa: F401

        from retrdistill.encoding.corpus import EncodeSettings, corpus_embeddings
    if step in ("bm25-build", "bm25-search"):
        import bm25s  # noqa: F401

        from retrdistill.miners.bm25 import BM25Miner
    import datasets  # noqa: F401
    import pyarrow  # noqa: F401
    baseline = _rss_now()
    baseline_anon = PeakSampler.read().get("RssAnon", 0)
    started = time.perf_counter()
    data_bytes = 0
    anon_data_bytes = 0  # the part of data_bytes held in anonymous memory (a FAISS index being built)
    with PeakSampler() as sampler:
        if step == "load":
            corpus = load_corpus(corpus_file, cache / "corpora")
            extra["arrow_mb"] = round(_dir_bytes(cache / "corpora") / MB, 1)
        elif step == "encode":
            corpus = load_corpus(corpus_file, cache / "corpora")
            settings = EncodeSettings(batch_size=BATCH_SIZE, max_seq_length=MAX_SEQ_LENGTH)
            store = corpus_embeddings(MODEL, corpus, cache, settings)
            data_bytes = store.embeddings.nbytes
            extra["embeddings_mb"] = round(store.embeddings.nbytes / MB, 1)
            extra["passages_per_s"] = None  # filled below
        elif step == "index":
            from retrdistill.stages.index import IndexConfig, run_index

            result = run_index(IndexConfig(batch_size=BATCH_SIZE, max_seq_length=MAX_SEQ_LENGTH), corpus_file.parent,
                               MODEL, work / f"index-{n}", cache_dir=cache, force=True)
            index_bytes = result.manifest.counts["index_bytes"]
            emb_bytes = n * result.manifest.counts["dim"] * 4
            data_bytes = index_bytes + emb_bytes
            anon_data_bytes = index_bytes
            extra.update(index_mb=round(index_bytes / MB, 1), embeddings_mb=round(emb_bytes / MB, 1))
        elif step in ("bm25-build", "bm25-search"):
            corpus = load_corpus(corpus_file, cache / "corpora")
            miner = BM25Miner(BM25Miner.Options(), corpus, cache)
            if step == "bm25-build":
                miner._load()  # builds the index once (cached by corpus and options), then opens it
            else:
                queries = generate_queries(1000)
                qids = list(queries)
                hits = {}
                for s in range(0, len(qids), 256):  # the mine stage's default batch
                    hits.update(miner.search({q: queries[q] for q in qids[s:s + 256]}, 100))
                extra["queries"] = len(hits)
                extra["mean_hits"] = round(sum(len(h) for h in hits.values()) / len(hits), 1)
            data_bytes = _dir_bytes(miner.index_dir)
            anon_data_bytes = 0  # written through memory-mapped files by the streamed build; searched memory-mapped
            extra["bm25_index_mb"] = round(data_bytes / MB, 1)
        elif step == "rows":
            import random

            corpus = load_corpus(corpus_file, cache / "corpora")
            for stale in (cache / "corpora").glob("*.rows.npy"):
                stale.unlink()
            lookup = corpus.row_index()  # builds the id -> row table, then memory-maps it
            picked = random.Random(0).sample(range(n), 10_000)
            ids = corpus.ids_at(sorted(picked))
            assert lookup.rows_of(ids).tolist() == sorted(picked)
            data_bytes = sum(p.stat().st_size for p in (cache / "corpora").glob("*.rows.npy"))
            extra.update(lookups=len(ids), rows_table_mb=round(data_bytes / MB, 1))
        else:
            raise SystemExit(f"unknown step {step!r}")
    seconds = time.perf_counter() - started
    if step == "encode":
        extra["passages_per_s"] = round(n / seconds, 1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "step": step,
        "passages": n,
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(peak / MB, 1),
        "peak_anon_mb": round(sampler.peak_anon / MB, 1),
        "peak_file_backed_mb": round(sampler.peak_file / MB, 1),
        "baseline_rss_mb": round(baseline / MB, 1),
        "data_mb": round(data_bytes / MB, 1),
        "overhead_mb": round((peak - baseline - data_bytes) / MB, 1),
        "baseline_anon_mb": round(baseline_anon / MB, 1),
        "anon_overhead_mb": round((sampler.peak_anon - baseline_anon - anon_data_bytes) / MB, 1),
        **extra,
    }


# ------------------------------------------------------------------ driver
def run_child(step: str, n: int, work: Path) -> dict:
    out = work / f"result-{step}-{n}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", step, "--n", str(n), "--work", str(work),
           "--child-out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return {"step": step, "passages": n, "error": done.stderr.strip()[-2000:]}
    return json.loads(out.read_text())


def prepare(work: Path, sizes: list[int]) -> dict[int, float]:
    """The largest corpus is generated once; each smaller one is its first n lines."""
    largest = max(sizes)
    seconds = {}
    big = work / f"corpus-{largest}" / "corpus.jsonl"
    if not big.is_file():
        started = time.perf_counter()
        big.parent.mkdir(parents=True, exist_ok=True)
        generate_corpus(big, largest)
        seconds[largest] = round(time.perf_counter() - started, 1)
    for n in sizes:
        path = work / f"corpus-{n}" / "corpus.jsonl"
        if path.is_file():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(big, "rb") as src, open(path, "wb") as dst:
            for i, line in enumerate(src):
                if i >= n:
                    break
                dst.write(line)
    return seconds


def machine() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine()}
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / (1 << 30), 1)
    except ImportError:
        pass
    try:
        info["affinity_cpus"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    from importlib import metadata

    for name in ("torch", "sentence-transformers", "faiss-cpu", "bm25s", "datasets", "pyarrow", "numpy"):
        try:
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100000,1000000", help="corpus sizes for load, BM25 (comma-separated)")
    ap.add_argument("--encode-sizes", default="100000,300000",
                    help="corpus sizes for encoding and the index build (1M encoding with the tiny model takes "
                         "longer than the benchmark's budget on 2 cores)")
    ap.add_argument("--steps", default="load,rows,encode,index,bm25-build,bm25-search")
    ap.add_argument("--work", default="/tmp/retrdistill-memory-bench", help="scratch folder (several GB at 1M)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "memory.json"))
    ap.add_argument("--reuse", help="an earlier result JSON: its rows for (step, size) pairs not run now are kept")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    work = Path(args.work)
    if args.child:
        from retrdistill.artefacts import write_json_atomic

        write_json_atomic(args.child_out, child(args.child, args.n, work))
        return 0

    from retrdistill.artefacts import write_json_atomic

    sizes = sorted(int(s) for s in args.sizes.split(","))
    encode_sizes = sorted(int(s) for s in args.encode_sizes.split(",")) if args.encode_sizes else []
    steps = args.steps.split(",")
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    generated = prepare(work, sorted(set(sizes) | set(encode_sizes)))
    results = []
    for n in sorted(set(sizes) | set(encode_sizes)):
        for step in steps:
            wanted = encode_sizes if step in ("encode", "index") else sizes
            if n not in wanted:
                continue
            row = run_child(step, n, work)
            results.append(row)
            sys.stderr.write(json.dumps(row) + "\n")
    if args.reuse:
        earlier = json.loads(Path(args.reuse).read_text())
        fresh = {(r["step"], r["passages"]) for r in results}
        results = [r for r in earlier["steps"] if (r["step"], r["passages"]) not in fresh] + results
        results.sort(key=lambda r: (r["passages"], steps.index(r["step"]) if r["step"] in steps else 99))
        sizes = sorted(set(sizes) | set(earlier.get("sizes", [])))
        encode_sizes = sorted(set(encode_sizes) | set(earlier.get("encode_sizes", [])))
        generated = {**earlier.get("generation_seconds", {}), **{str(k): v for k, v in generated.items()}}
        started -= earlier.get("seconds_total", 0.0)  # the total covers both runs
    report = {
        "benchmark": "memory",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": MODEL,
        "encode_settings": {"max_seq_length": MAX_SEQ_LENGTH, "batch_size": BATCH_SIZE},
        "sizes": sizes,
        "encode_sizes": encode_sizes,
        "generation_seconds": generated,
        "machine": machine(),
        "steps": results,
        "seconds_total": round(time.perf_counter() - started, 1),
        "notes": [
            "each step runs in a fresh process; peak_rss_mb includes pages of memory-mapped files",
            "overhead_mb = peak_rss_mb - baseline_rss_mb - data_mb (data: embeddings / FAISS index / BM25 index)",
        ],
    }
    write_json_atomic(args.out, report)
    sys.stderr.write(f"wrote {args.out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
