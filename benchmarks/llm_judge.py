"""The LLM judge as a teacher on the sample: re-ranking the bi-encoder teacher's top 20 on the test queries.

    nice -n 10 python benchmarks/llm_judge.py                        # 1.5B judge, queries that fit the budget
    nice -n 10 python benchmarks/llm_judge.py --queries 43           # every judged test query (slow on 2 cores)

all-mpnet-base-v2 (the demo's teacher) retrieves its top ``--depth`` (20) for each judged test query of the
sample; the LLM judge (teacher ``llm``, default ``offline:qwen2.5-coder-1.5b-instruct``, logit difference of
yes against no) scores those pairs through the score cache, and an ensemble of the two (teacher ``ensemble``,
members min-max normalised per query, equal weights) re-ranks them too. Reported: nDCG@10 (ranx) of the
bi-encoder's own order, the judge's, and the ensemble's over the same queries and passages, with z-score and rank
normalisation and the judge's P(yes) (sigmoid of the cached logit difference) beside them for reference; the
judge's pairs/s, measured first on ``--rate-pairs`` (20) fresh pairs with the model loaded, then over every pair
scored; model load time and peak resident memory.

The test queries are for reporting only: every setting here is the teacher's default, chosen before any of these
numbers were seen. When ``--queries`` is 0 the number of queries is the most that the measured rate lets the
judge score within ``--budget-minutes``; they are the first judged test queries by id (no choice by result).
Judge scores are cached (``--cache``/scores.sqlite, keyed on the judge's fingerprint), so a killed run resumes
and a re-run with more queries scores only the new ones. Writes ``benchmarks/results/llm-judge-cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

log = logging.getLogger("llm_judge")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--collection", default=str(ROOT / "data" / "msmarco-dl-5k"))
    ap.add_argument("--cache", default=str(ROOT / ".cache" / "retrdistill"))
    ap.add_argument("--judge", default="offline:qwen2.5-coder-1.5b-instruct")
    ap.add_argument("--teacher", default="offline:all-mpnet-base-v2")
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--rate-pairs", type=int, default=20)
    ap.add_argument("--budget-minutes", type=float, default=35.0)
    ap.add_argument("--queries", type=int, default=0, help="0: as many as fit the budget at the measured rate")
    ap.add_argument("--known-rate", type=float, default=0.0,
                    help="pairs/s measured by an earlier run (its log): skip the fresh measurement (with --queries)")
    ap.add_argument("--known-load-seconds", type=float, default=0.0)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--dtype", default="bfloat16", help="the judge's dtype (bfloat16: AMX CPUs run it ~2x faster)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "llm-judge-cpu.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from retrdistill import progress, registry
    from retrdistill.artefacts import fingerprint_obj, write_json_atomic
    from retrdistill.data.beir import open_collection
    from retrdistill.evaluation import evaluate
    from retrdistill.score_cache import SCORES_FILE, CachedScorer, ScoreCache
    from retrdistill.teachers.ensemble import normalise

    progress.enable()
    cache_dir = Path(args.cache)
    collection = open_collection(args.collection, cache_dir / "corpora")
    corpus, queries = collection.corpus, collection.queries
    qrels, _ = collection.qrels("test")
    judged = sorted(q for q, docs in qrels.items() if any(g >= 1 for g in docs.values()))

    teacher_options = {"model": args.teacher, "batch_size": 32}
    judge_options = {"model": args.judge, "batch_size": args.batch_size, "dtype": args.dtype}
    bi = registry.build("teacher", "bi-encoder", teacher_options, corpus=corpus, cache_dir=cache_dir)
    first = bi.retrieve({q: queries[q] for q in judged}, args.depth)
    top = {q: sorted(first[q], key=lambda d: -first[q][d]) for q in judged}

    judge = registry.build("teacher", "llm", judge_options, corpus=corpus, cache_dir=cache_dir)
    started = time.perf_counter()
    if not args.known_rate:  # a resumed run whose pairs are all cached never needs the model
        judge.model  # noqa: B018 - loaded outside every timing
    load_s = time.perf_counter() - started
    judge_fp = fingerprint_obj(judge.fingerprint())

    # the rate: fresh pairs (the first query's), scored with the model loaded; kept in the cache
    q0 = judged[0]
    rate_docs = top[q0][: args.rate_pairs]
    if args.known_rate:  # measured by an earlier run of this script (resumed from the cache)
        rate, rate_s, load_s = args.known_rate, len(rate_docs) / args.known_rate, args.known_load_seconds or load_s
    else:
        started = time.perf_counter()
        fresh = judge.score_groups({q0: queries[q0]}, {q0: rate_docs})
        rate_s = time.perf_counter() - started
        rate = len(rate_docs) / rate_s
        cache = ScoreCache(cache_dir / SCORES_FILE, judge_fp)
        cache.put([(q0, queries[q0], d, float(s)) for d, s in zip(rate_docs, fresh[q0])])
        cache.close()
    n = args.queries or max(1, min(len(judged), int(args.budget_minutes * 60 * rate / args.depth)))
    chosen = judged[:n]
    log.info("judge: %.3f pairs/s on %d pairs (load %.0f s): %d of %d queries x %d fit %.0f min", rate,
             len(rate_docs), load_s, n, len(judged), args.depth, args.budget_minutes)

    scorer = CachedScorer(cache_dir / SCORES_FILE)
    judge_scores: dict[str, np.ndarray] = {}
    scoring_s = 0.0
    for q in chosen:  # one query at a time: each committed, so a killed run resumes
        before = scorer.scored
        started = time.perf_counter()
        judge_scores.update(scorer.scores(judge, {q: queries[q]}, {q: top[q]}))
        if scorer.scored > before:
            scoring_s += time.perf_counter() - started
    judge_new = scorer.scored
    scorer.close()

    def ensemble(normalise_with: str) -> tuple[dict[str, np.ndarray], int]:
        members = [{"teacher": "bi-encoder", "options": teacher_options}, {"teacher": "llm", "options": judge_options}]
        ens = registry.build("teacher", "ensemble", {"members": members, "normalise": normalise_with},
                             corpus=corpus, cache_dir=cache_dir)
        if judge._model is not None:  # the loaded judge (same fingerprint), should a pair be missing
            ens.teachers[1]._model, ens.teachers[1]._chat = judge._model, judge._chat
        before = ens.teachers[1].pairs_scored
        got = ens.score_groups({q: queries[q] for q in chosen}, {q: top[q] for q in chosen})
        return got, ens.teachers[1].pairs_scored - before

    ensembles, rescored = {}, {}
    for method in ("minmax", "zscore", "rank"):
        ensembles[method], rescored[method] = ensemble(method)
    bi_scores = {q: np.array([first[q][d] for d in top[q]]) for q in chosen}
    p_yes = {q: 1.0 / (1.0 + np.exp(-judge_scores[q].astype(np.float64))) for q in chosen}
    ens_p = {q: 0.5 * normalise(bi_scores[q], "minmax") + 0.5 * normalise(p_yes[q], "minmax") for q in chosen}

    def as_run(scores: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
        return {q: {d: float(s) for d, s in zip(top[q], scores[q])} for q in chosen}

    sub_qrels = {q: qrels[q] for q in chosen}
    systems = {
        "all-mpnet-base-v2 (teacher, its top 20)": as_run(bi_scores),
        "LLM judge (re-ranks the teacher's top 20)": as_run(judge_scores),
        "ensemble judge + teacher (min-max, mean)": as_run(ensembles["minmax"]),
        "ensemble judge + teacher (z-score, mean)": as_run(ensembles["zscore"]),
        "ensemble judge + teacher (rank, mean)": as_run(ensembles["rank"]),
        "ensemble P(yes) + teacher (min-max, mean)": as_run(ens_p),
    }
    results = {name: evaluate(sub_qrels, run, ["ndcg@10"]) for name, run in systems.items()}
    ndcg = {name: round(float(r.mean["ndcg@10"]), 4) for name, r in results.items()}
    per_query = {name: {q: round(float(v["ndcg@10"]), 4) for q, v in r.per_query.items()} for name, r in results.items()}
    all_teacher = evaluate(qrels, first, ["ndcg@10"]).mean["ndcg@10"]
    pairs = sum(len(top[q]) for q in chosen)
    out = {
        "machine": {"cpus": os.cpu_count(), "load_average_at_end": list(os.getloadavg()),
                    "note": "shared with other jobs; rates are lower bounds for an idle machine"},
        "judge": args.judge, "teacher": args.teacher, "depth": args.depth,
        "judge_options": judge.fingerprint()["options"], "template": judge.options.template,
        "queries_judged": len(judged), "queries_used": len(chosen), "query_ids": chosen, "pairs": pairs,
        "judge_load_seconds": round(load_s, 1),
        "pairs_per_s_first": {"pairs": len(rate_docs), "seconds": round(rate_s, 1), "pairs_per_s": round(rate, 4)},
        "pairs_per_s_run": (round((judge_new) / scoring_s, 4) if judge_new and scoring_s else None),
        "pairs_scored_this_run": judge_new + (0 if args.known_rate else len(rate_docs)),
        "rate_from_earlier_run": bool(args.known_rate),
        "ensemble_pairs_rescored_by_judge": rescored,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "ndcg@10": ndcg,
        "teacher_ndcg@10_all_judged_queries_top20": round(float(all_teacher), 4),
        "per_query_ndcg@10": per_query,
    }
    write_json_atomic(Path(args.out), out)
    log.info("wrote %s: %s", args.out, json.dumps(ndcg, indent=1))


if __name__ == "__main__":
    main()
