"""The evaluator a sentence-transformers trainer calls at every evaluation: the label-free metrics of the
student as it is, computed over the whole corpus or over a fixed part of it.

Each call encodes the held-out queries and the whole corpus (or, with ``corpus_sample=N``, a seeded sample of N
corpus passages plus every held-out candidate, the same rows at every call) with the student (through
:func:`retrdistill.encoding.engine.encode_texts`, with a progress bar), searches exactly, computes every
metric part and returns ``{name: value}``; the trainer prefixes the names with ``eval_`` and picks the best
checkpoint on the chosen one (``metric_for_best_model``). When no metric needs a corpus search only the
held-out candidates are encoded. The student's family (:class:`retrdistill.parts.Family`) encodes and searches:
a dense student into embeddings searched by inner product, a sparse one (SPLADE) through its own
``encode_query`` / ``encode_document`` into term vectors searched by exact sparse dot products.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from sentence_transformers.base.evaluation import BaseEvaluator

from retrdistill import progress
from retrdistill.validation.metrics import ValidationView

log = logging.getLogger(__name__)


CORPUS_SLICE = 8192  # passages handed to the engine per call (bounded memory for the texts)


class LabelFreeEvaluator(BaseEvaluator):
    """``evaluator=`` of a sentence-transformers trainer: the ``metrics`` parts on the held-out ``groups``.

    ``primary``: the name the best checkpoint is chosen on (``primary_metric``); ``transform``: applied to the
    model before encoding (the train stage cuts it to ``truncate_dim`` as it will be saved). Every call is
    appended to :attr:`history` as ``{"step", "epoch", "metrics", "seconds"}``. ``teacher_top``: query id -> the
    teacher's top doc ids over the corpus, for metrics that read it (:meth:`ValidationMetric.teacher_depth`).
    ``family``: the registered name of the student's family, which encodes and searches (default dense).
    """

    def __init__(self, groups: list, corpus, metrics: list, primary: str, *, batch_size: int = 64,
                 transform=None, corpus_sample: int | None = None, seed: int = 13,
                 teacher_top: dict[str, list[str]] | None = None, family: str = "dense") -> None:
        from retrdistill import families

        super().__init__()
        self.family = families.get(family)
        if not groups:
            raise ValueError("validation needs at least one held-out group")
        self.groups = list(groups)
        self.corpus = corpus
        self.metrics = list(metrics)
        self.primary_metric = primary
        self.greater_is_better = True
        self.batch_size = batch_size
        self.transform = transform  # model -> the model as it will be saved (e.g. cut to truncate_dim)
        self.history: list[dict[str, Any]] = []
        if teacher_top is None and any(m.teacher_depth() > 0 for m in self.metrics):
            raise ValueError("a validation metric reads the teacher's ranking of the corpus: pass teacher_top")
        self.teacher_top = None if teacher_top is None else [list(teacher_top.get(g.qid, [])) for g in self.groups]
        self.searched_rows = self._searched_rows(corpus_sample, seed)

    def _searched_rows(self, corpus_sample: int | None, seed: int) -> list[int] | None:
        """The corpus rows a search covers: None for the whole corpus, else the held-out groups' candidates, the
        teacher's top passages (when read) and ``corpus_sample`` rows drawn with ``seed`` (fixed for the whole
        fit, so evaluations compare)."""
        n = len(self.corpus)
        if corpus_sample is None or corpus_sample >= n:
            return None
        row = self.corpus.row_index()
        drawn = np.random.default_rng(seed).choice(n, size=corpus_sample, replace=False)
        rows = {int(r) for r in drawn} | {int(row[d]) for g in self.groups for d in g.docids}
        rows = sorted(rows | {int(row[d]) for top in self.teacher_top or [] for d in top})
        log.info("validation searches %d of %d passages (a sample of %d, seed %d, the held-out candidates%s)",
                 len(rows), n, corpus_sample, seed, " and the teacher's top passages" if self.teacher_top else "")
        return rows

    def __call__(self, model, output_path: str | None = None, epoch: float = -1, steps: int = -1) -> dict[str, float]:
        started = time.perf_counter()
        view = self.view(model if self.transform is None else self.transform(model))
        values: dict[str, float] = {}
        for metric in self.metrics:
            values.update(metric.compute(view))
        seconds = time.perf_counter() - started
        step = max(int(steps), 0)
        self.history.append({"step": step, "epoch": None if epoch is None or epoch < 0 else round(float(epoch), 4),
                             "metrics": dict(values), "seconds": round(seconds, 3)})  # the trainer renames its own
        log.info("validation at step %d: %s (%.1fs)", step,
                 ", ".join(f"{k} {v:.4f}" for k, v in values.items()), seconds)
        return values

    def view(self, model) -> ValidationView:
        """The student's embeddings of the held-out queries and of the corpus (or of the candidates only)."""
        corpus = self.corpus
        queries = self._encode(model, [g.query for g in self.groups], "query")
        row = corpus.row_index()
        if any(m.search_depth() > 0 for m in self.metrics):
            if self.searched_rows is None:
                passages = self._encode_rows(model, None, "validation: encoding the corpus")
                return ValidationView(self.groups, queries, passages, row, None, corpus.ids_at,
                                      teacher_top=self.teacher_top, family=self.family)
            rows = self.searched_rows
            passages = self._encode_rows(model, rows, "validation: encoding the corpus sample")
            return ValidationView(self.groups, queries, passages, row, {r: i for i, r in enumerate(rows)},
                                  corpus.ids_at, searched_rows=np.asarray(rows, dtype=np.int64),
                                  teacher_top=self.teacher_top, family=self.family)
        rows = sorted({int(row[d]) for g in self.groups for d in g.docids})
        passages = self._encode_rows(model, rows, "validation: encoding the candidates")
        return ValidationView(self.groups, queries, passages, row, {r: i for i, r in enumerate(rows)}, corpus.ids_at,
                              family=self.family)

    def _encode_rows(self, model, rows: list[int] | None, desc: str) -> Any:
        """Embeddings of corpus ``rows`` in that order (None: the whole corpus in corpus order)."""
        n = len(self.corpus) if rows is None else len(rows)
        bar = progress.bar(n, desc, "passage")
        parts = []
        try:
            for start in range(0, n, CORPUS_SLICE):
                texts = (self.corpus.texts(start, min(n, start + CORPUS_SLICE)) if rows is None
                         else self.corpus.texts_at(rows[start:start + CORPUS_SLICE]))
                parts.append(self._encode(model, texts, "document", on_progress=bar.update))
        finally:
            bar.close()
        return parts[0] if len(parts) == 1 else self.family.stack(parts)

    def _encode(self, model, texts: list[str], role: str, on_progress=None):
        """``texts`` as the student's family encodes them for ``role`` (an array, or a CSR matrix of term weights)."""
        return self.family.encode(model, texts, role=role, batch_size=self.batch_size, on_progress=on_progress)

    def get_config_dict(self) -> dict[str, Any]:
        return {"groups": len(self.groups), "metrics": [m.fingerprint() for m in self.metrics],
                "searched": "corpus" if self.searched_rows is None else len(self.searched_rows)}
