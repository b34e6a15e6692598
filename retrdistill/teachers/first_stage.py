"""The leaderboard row of a teacher that scores given passages but cannot search (a cross-encoder, an LLM judge,
a listwise ranker): a first stage's top passages re-ranked by it."""

from __future__ import annotations

from retrdistill.parts import Run, Teacher


def rerank_first_stage(teacher: Teacher, queries: dict[str, str], depth: int, first_stage: Run | None = None) -> Run:
    """``first_stage``'s top ``depth`` passages per query (BM25 over the teacher's corpus when None), scored by
    ``teacher.score_groups``; the scores are the run."""
    if first_stage is None:
        from retrdistill.miners.bm25 import BM25Miner

        bm25 = BM25Miner(corpus=teacher.corpus, cache_dir=teacher.cache_dir)
        first_stage = {q: dict(h) for q, h in bm25.search(queries, depth).items()}
    groups = {q: sorted(d, key=lambda x: -d[x])[:depth] for q, d in first_stage.items() if d}
    scores = teacher.score_groups(queries, groups)
    return {q: {d: float(s) for d, s in zip(groups[q], scores[q])} for q in groups}
