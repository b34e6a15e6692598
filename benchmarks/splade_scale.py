"""The score scale of a SPLADE student before training, beside the standardised teacher's, on training groups.

    python benchmarks/splade_scale.py runs/msmarco-sample/splade-d1/untrained    # the splade-sample start

Margin-MSE on dot products asks the student to reproduce the teacher's margins on the student's own scale: if
the teacher's standardised margins are far smaller than the start's, the student meets them by shrinking every
term weight and its vectors collapse (what the first splade-sample run did). This script reads a seeded sample
of the *training* groups of a scores artefact (never test queries), scores each group's first ``--docs``
passages with the untrained model, and reports the median per-query standard deviation and positive-minus-
negatives margin of the student's scores beside the teacher's z-scored margin: the ``factor`` of
``teacher_scale: {mode: standardise, factor: F}`` that puts the teacher on the student's scale is the student's
median standard deviation. Writes ``benchmarks/results/splade-start-scale.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="the untrained SPLADE folder (a train step's `untrained` part)")
    ap.add_argument("--scores", default=str(ROOT / "runs" / "msmarco-sample" / "scores" / "scores.jsonl"))
    ap.add_argument("--collection", default=str(ROOT / "data" / "msmarco-dl-5k"))
    ap.add_argument("--groups", type=int, default=150)
    ap.add_argument("--docs", type=int, default=4, help="the positive and the first negatives of each group")
    ap.add_argument("--max-seq-length", type=int, default=64)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "splade-start-scale.json"))
    args = ap.parse_args()
    from sentence_transformers import SparseEncoder

    from retrdistill.artefacts import write_json_atomic

    corpus = {}
    with open(Path(args.collection) / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)
            corpus[doc["_id"]] = (doc.get("title", "") + " " + doc["text"]).strip()
    with open(args.scores, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    pick = np.random.default_rng(args.seed).choice(len(rows), min(args.groups, len(rows)), replace=False)
    model = SparseEncoder(args.model, device="cpu")
    model.max_seq_length = args.max_seq_length
    stds, margins, teacher_margins = [], [], []
    for i in pick:
        row = rows[int(i)]
        docs = row["docids"][: args.docs]
        q = model.encode_query([row["query"]], convert_to_tensor=True).to_dense()
        p = model.encode_document([corpus[d] for d in docs], convert_to_tensor=True).to_dense()
        s = (q @ p.T).numpy()[0]
        t = np.asarray(row["scores"][: args.docs], dtype=np.float64)
        z = (t - t.mean()) / (t.std() + 1e-9)
        stds.append(float(s.std()))
        margins.append(float(s[0] - s[1:].mean()))
        teacher_margins.append(float(z[0] - z[1:].mean()))
    report = {"model": args.model, "scores": args.scores, "groups": len(pick), "docs_per_group": args.docs,
              "max_seq_length": args.max_seq_length, "seed": args.seed,
              "student_score_std_median": float(np.median(stds)),
              "student_margin_median": float(np.median(margins)),
              "teacher_z_margin_median": float(np.median(teacher_margins)),
              "suggested_factor": round(float(np.median(stds)), 1),
              "machine": {"python": platform.python_version()}}
    write_json_atomic(Path(args.out), report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
