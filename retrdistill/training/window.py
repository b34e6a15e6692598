"""How much of each passage the student reads: the share of the corpus longer than its ``max_seq_length``.

A student trains on and indexes only the first ``max_seq_length`` tokens of a passage, while a teacher may read
far more (EmbeddingGemma-300M reads 2,048). When much of the corpus is longer than the student's window, the
teacher's preferences rest on text the student never sees, which no amount of distillation can teach. The train
stage records :func:`passage_window` in its manifest (``counts.passage_window``) and warns past
:data:`WARN_SHARE`; ``benchmarks/passage_window.py`` measures what it costs on pseudo-queries.
"""

from __future__ import annotations

import logging
import random
import statistics
from typing import Any

log = logging.getLogger(__name__)

WARN_SHARE = 0.25  # warn when more than this share of the sampled passages is cut


def passage_window(model: Any, corpus: Any, *, sample: int = 2000, seed: int = 13) -> dict[str, Any] | None:
    """Of a seeded sample of up to ``sample`` passages of ``corpus``: how many of the student's tokens each takes
    (special tokens included) against ``model.max_seq_length``. None when the model names no tokenizer or window.

    Returns ``max_seq_length``, ``sampled``, ``share_longer`` (passages cut by the window) and ``median_tokens``.
    """
    tokenizer = getattr(model, "tokenizer", None)
    window = getattr(model, "max_seq_length", None) or getattr(model, "max_length", None)
    if tokenizer is None or not window or len(corpus) == 0:
        return None
    rows = sorted(random.Random(seed).sample(range(len(corpus)), min(sample, len(corpus))))
    encoded = tokenizer(corpus.texts_at(rows), add_special_tokens=True, truncation=False, verbose=False)
    lengths = [len(ids) for ids in encoded["input_ids"]]
    longer = sum(n > window for n in lengths) / len(lengths)
    return {"max_seq_length": int(window), "sampled": len(lengths), "share_longer": round(longer, 4),
            "median_tokens": float(statistics.median(lengths))}


def warn_if_cut(record: dict[str, Any] | None, step: str = "train") -> None:
    """Log a warning when the record says more than :data:`WARN_SHARE` of the passages are cut."""
    if record is None or record["share_longer"] <= WARN_SHARE:
        return
    log.warning("%s: %.0f%% of the corpus passages (a sample of %d) are longer than the student's max_seq_length "
                "%d (median %.0f tokens): it trains on and indexes only their beginning, while the teacher may read "
                "further. Raise the student's max_seq_length if its position embeddings allow it, or split the "
                "passages", step, 100 * record["share_longer"], record["sampled"], record["max_seq_length"],
                record["median_tokens"])
