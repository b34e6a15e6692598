"""The training objective of a bi-encoder student: one loss module over one forward pass per batch.

:class:`DistillObjective` assembles, from the registered score loss and the stage's weights,

* the score loss (Margin-MSE, listwise KL, ...; weight ``loss_weight``),
* in-batch negatives (``MultipleNegativesRankingLoss``; weight ``in_batch_negatives``, 0: off),
* in-batch distillation (weight ``in_batch_distill``, 0: off): the teacher's embedding tables price every query
  of a batch against every passage of the batch; the student matches that softmax (KL),
* embedding distillation (weight ``embedding_distill``, 0: off): the teacher's embeddings of every text,
  with a projection started at the least-squares fit when the widths differ
  (:mod:`retrdistill.losses.embedding`),
* Matryoshka widths (``matryoshka_dims``: the score parts also trained on the first ``d`` dimensions),

as :class:`retrdistill.losses.embedding.DistillationObjective`, optionally wrapped in ``MatryoshkaLoss``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from retrdistill.artefacts import fingerprint_obj
from retrdistill.losses.embedding import EmbeddingOptions
from retrdistill.training.data import TrainingInputs, TrainingRows


@dataclass
class ObjectiveSettings:
    """The weights and widths of the objective (``TrainConfig``'s fields of the same names)."""

    loss_weight: float = 1.0
    in_batch_negatives: float = 0.0
    embedding_distill: float = 0.0
    in_batch_distill: float = 0.0
    in_batch_temperature: float = 0.05
    embedding: EmbeddingOptions = field(default_factory=EmbeddingOptions)
    matryoshka_dims: list[int] = field(default_factory=list)
    seed: int = 13  # draws the projection's least-squares sample


@dataclass
class Objective:
    """What an objective builder returns: the loss the trainer minimises, the counts to record now, the batch
    sampler the loss needs, and the counts to record after training."""

    loss: Any  # a torch module: forward(sentence_features, labels) -> scalar
    counts: dict[str, Any] = field(default_factory=dict)
    batch_sampler: str = "batch_sampler"  # sentence-transformers' BatchSamplers value
    trained_counts: Callable[[], dict[str, Any]] = dict  # e.g. the parts of the last batch's loss


class DistillObjective:
    """Builds a bi-encoder student's loss from the score-loss part and :class:`ObjectiveSettings`.

    Inputs: ``loss`` (a registered :class:`retrdistill.parts.Loss`), ``settings``, and ``inputs`` (the scores'
    manifest names the embedding teacher unless ``settings.embedding.teacher`` does; the corpus and cache
    hold its passage embeddings). The embedding teacher is resolved on construction, so :meth:`inputs`
    can key the artefact on it before anything runs.

    Use, in this order (the seeded random streams depend on it):

    1. :meth:`extend_labels` on the training rows, before the student is loaded: appends each row's rows in
       the teacher tables to its label (embedding distillation only); returns counts (``teacher_dim``).
    2. :meth:`build` with the loaded student: returns an :class:`Objective` (loss module, counts such as
       ``projection_fit_cosine``; after training ``last_batch_parts``, the last batch's loss per part).
    """

    def __init__(self, loss, settings: ObjectiveSettings, inputs: TrainingInputs) -> None:
        self.score_loss = loss
        self.settings = settings
        self.inputs_from = inputs
        self.teacher = None
        self.tables = None
        self.score_width: int | None = None  # the score loss's label width, before extend_labels appends rows
        if settings.embedding_distill > 0 or settings.in_batch_distill > 0:
            from retrdistill.losses.embedding import teacher_for_embeddings

            self.teacher = teacher_for_embeddings(inputs.scores_config(), settings.embedding, inputs.corpus,
                                                  inputs.cache_dir, scored_by=inputs.scoring_teacher())

    def inputs(self) -> dict[str, str]:
        """Input fingerprints beyond the scores and the student: the embedding teacher, when there is one."""
        return {"embedding_teacher": fingerprint_obj(self.teacher.fingerprint())} if self.teacher is not None else {}

    def extend_labels(self, rows: TrainingRows) -> dict[str, Any]:
        """Append the teacher-table rows of each row's texts to its label; record the teacher's width."""
        self.score_width = len(rows.columns["label"][0])
        if self.teacher is None:
            return {}
        from retrdistill.losses.embedding import build_teacher_tables, index_label

        columns = rows.columns
        self.tables = build_teacher_tables(self.teacher, columns["query"], [d for ids in rows.docids for d in ids],
                                           self.inputs_from.corpus, self.inputs_from.cache_dir)
        columns["label"] = [label + index_label(self.tables, q, ids)
                            for label, q, ids in zip(columns["label"], columns["query"], rows.docids)]
        return {"teacher_dim": self.tables.dim}

    def build(self, model, rows: TrainingRows) -> Objective:
        """The loss module for ``model`` over ``rows`` (after :meth:`extend_labels`)."""
        from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss, MultipleNegativesRankingLoss

        from retrdistill.losses.embedding import DistillationObjective

        s = self.settings
        parts = [(s.loss_weight, self.score_loss.build(model))]
        if s.in_batch_negatives > 0:
            parts.append((s.in_batch_negatives, MultipleNegativesRankingLoss(model)))
        width = self.score_width if self.score_width is not None else len(rows.columns["label"][0])
        module = DistillationObjective(model, parts, width, embedding_weight=s.embedding_distill,
                                       tables=self.tables, distance=s.embedding.distance,
                                       in_batch_weight=s.in_batch_distill, in_batch_temperature=s.in_batch_temperature)
        counts: dict[str, Any] = {}
        tables = self.tables
        if (tables is not None and s.embedding_distill > 0 and s.embedding.projection_init == "least-squares"
                and tables.dim != model.get_embedding_dimension()):
            texts, targets = projection_sample(rows, tables, s.embedding.projection_sample, s.seed)
            counts["projection_fit_cosine"] = module.fit_projection(texts, targets)
        loss = MatryoshkaLoss(model, module, s.matryoshka_dims) if s.matryoshka_dims else module
        # in-batch negatives: no repeated texts (a duplicate would be a false negative); in-batch distillation
        # prices duplicates with the teacher like any other passage, so it needs no special sampler
        sampler = "no_duplicates" if s.in_batch_negatives > 0 else "batch_sampler"

        def trained_counts() -> dict[str, Any]:
            parts = module.last_parts
            return {"last_batch_parts": parts} if len(parts) > 1 or s.matryoshka_dims else {}

        return Objective(loss, counts, sampler, trained_counts)


def projection_sample(rows: TrainingRows, tables, size: int, seed: int):
    """Up to ``size`` training texts (half queries, half positives, seeded) and their teacher embeddings."""
    import numpy as np

    columns, docids = rows.columns, rows.docids
    picked = random.Random(seed).sample(range(len(docids)), min(len(docids), max(1, size // 2)))
    texts = [columns["query"][i] for i in picked] + [columns["positive"][i] for i in picked]
    targets = np.concatenate([tables.queries[[tables.query_row[columns["query"][i]] for i in picked]],
                              tables.passages[[tables.passage_row[docids[i][0]] for i in picked]]])
    return texts, targets
