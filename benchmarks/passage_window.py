"""How much of the student's gap to its teacher lies beyond the student's passage window? (label-free)

    nice -n 10 python benchmarks/passage_window.py                       # scifact-adapt's queries and chosen teacher
    nice -n 10 python benchmarks/passage_window.py --lengths 256,512     # the student encoding passages at each length

Reads a ``queries`` artefact of inverse-cloze pseudo-queries (each a sentence of its positive passage; default
``runs/scifact-adapt/queries``) and a ``rate-teachers`` choice (default ``runs/scifact-adapt/rate``). For every
pseudo-query it finds where its sentence starts in the passage and splits the queries in two: the sentence ends
inside the student's ``--window`` (its training length, in the student's tokens, special tokens included) or beyond
it. For each half it reports pseudo-MRR@10 of the positive passage, searched over the whole corpus, for the chosen
teacher (at its own length) and for the student encoding the corpus at each of ``--lengths``. No judgment is read:
a corpus whose relevant text lies past the student's window shows it here before anything is trained.

Corpus embeddings come from the shared cache (``--cache``). Writes ``benchmarks/results/passage-window-<dataset>.json``
(or ``--out``).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
log = logging.getLogger("passage_window")


def reciprocal_rank_at_10(corpus_emb, query_emb, positive_row: int) -> float:
    """1/rank of ``positive_row`` among all passages by inner product (ties rank above it), 0 beyond rank 10."""
    scores = corpus_emb @ query_emb
    rank = int((scores > scores[positive_row]).sum()) + 1
    return 1.0 / rank if rank <= 10 else 0.0


def sentence_start(text: str, query: str) -> int | None:
    """Character offset in ``text`` where the pseudo-query's sentence starts (its first words, punctuation-blind)."""
    words = query.split()[:4]
    if not words:
        return None
    hit = re.search(r"\W+".join(map(re.escape, words)), text)
    return hit.start() if hit else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=Path, default=ROOT / "runs" / "scifact-adapt" / "queries")
    ap.add_argument("--choice", type=Path, default=ROOT / "runs" / "scifact-adapt" / "rate")
    ap.add_argument("--collection", type=Path, default=ROOT / "data" / "scifact")
    ap.add_argument("--cache", type=Path, default=ROOT / ".cache" / "retrdistill")
    ap.add_argument("--student", default="offline:all-MiniLM-L6-v2")
    ap.add_argument("--window", type=int, default=256, help="the student's training length (tokens)")
    ap.add_argument("--lengths", default="256,512", help="student passage lengths to encode the corpus at")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    import numpy as np

    from retrdistill import registry
    from retrdistill.artefacts import write_json_atomic
    from retrdistill.data.beir import open_collection
    from retrdistill.encoding.corpus import EncodeSettings, corpus_embeddings
    from retrdistill.encoding.engine import encode_texts
    from retrdistill.encoding.prompts import prompted
    from retrdistill.kinds import read_queries
    from retrdistill.models import load_sentence_transformer
    from retrdistill.training.window import passage_window

    started = time.time()
    collection = open_collection(args.collection, args.cache / "corpora")
    corpus = collection.corpus
    row = corpus.row_index()
    train = read_queries(args.queries)
    teacher = registry.build("teacher", "chosen", {"choice": str(args.choice)}, corpus=corpus,
                             cache_dir=args.cache).resolved()
    student = load_sentence_transformer(args.student)
    tokenizer = student.tokenizer

    qids = [q for q in train.queries if train.positives.get(q)]
    texts = [train.queries[q] for q in qids]
    positives = [row[next(iter(train.positives[q]))] for q in qids]
    sides: list[str | None] = []
    for query, passage in zip(texts, corpus.texts_at(positives)):
        start = sentence_start(passage, query)
        if start is None:
            sides.append(None)
            continue
        before = len(tokenizer(passage[:start], add_special_tokens=False)["input_ids"])
        length = len(tokenizer(query, add_special_tokens=False)["input_ids"])
        sides.append("inside" if before + length + 2 <= args.window else "beyond")

    log.info("teacher encodes %d pseudo-queries", len(texts))
    teacher_queries = np.asarray(teacher.encode_queries(texts), dtype=np.float32)
    teacher_corpus = np.asarray(teacher.corpus_embeddings().embeddings, dtype=np.float32)
    student_queries = encode_texts(student, prompted(student, texts, "query"), batch_size=64, normalize=True)
    lengths = [int(x) for x in args.lengths.split(",") if x]
    student_corpus = {n: np.asarray(corpus_embeddings(args.student, corpus, args.cache,
                                                      EncodeSettings(max_seq_length=n)).embeddings, dtype=np.float32)
                      for n in lengths}

    halves: dict[str, dict] = {}
    for side in ("inside", "beyond"):
        picked = [i for i, s in enumerate(sides) if s == side]
        entry = {"queries": len(picked),
                 "teacher_mrr@10": round(float(np.mean([reciprocal_rank_at_10(teacher_corpus, teacher_queries[i],
                                                                            positives[i]) for i in picked])), 4)}
        for n in lengths:
            entry[f"student_{n}_mrr@10"] = round(float(np.mean([
                reciprocal_rank_at_10(student_corpus[n], student_queries[i], positives[i]) for i in picked])), 4)
        halves[side] = entry
    student.max_seq_length = args.window  # what the train step records, over the whole corpus
    window = passage_window(student, corpus, sample=len(corpus))
    out = {
        "what": "pseudo-MRR@10 of each inverse-cloze query's own passage over the whole corpus, split by whether the "
                "query's sentence ends inside the student's window",
        "measured": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average": os.getloadavg()},
        "queries": str(args.queries), "choice": str(args.choice), "collection": args.collection.name,
        "teacher": teacher.fingerprint(), "student": args.student, "window": args.window,
        "not_located": sum(s is None for s in sides),
        "passage_window": window,
        "halves": halves,
        "seconds": round(time.time() - started, 1),
    }
    path = args.out or ROOT / "benchmarks" / "results" / f"passage-window-{args.collection.name}.json"
    write_json_atomic(path, out)
    log.info("wrote %s: %s", path, halves)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
