"""The SPLADE student's objective and trainer: a score loss inside ``SpladeLoss``, FLOPS weights warmed up.

:class:`SpladeObjective` builds, from the registered score loss and the student's options,

``SpladeLoss(model, loss=L, query_regularizer_weight=lambda_q, document_regularizer_weight=lambda_d)``

with ``L`` one of

* ``SparseMarginMSELoss`` (``loss: margin-mse``). Inputs: ``(query, positive, negative_1, ..., negative_n)``;
  labels ``[T(q, pos) - T(q, neg_i) for i in 1..n]`` (the teacher's margins). Student similarity: dot product of
  the sparse embeddings.
* ``SparseDistillKLDivLoss`` (``loss: listwise-kl``). Inputs: the same columns; labels
  ``[T(q, pos), T(q, neg_1), ..., T(q, neg_n)]``. KL(teacher softmax || student softmax), both scores divided by
  the loss part's ``temperature``, passed explicitly: sentence-transformers' sparse default (2.0) is not the
  dense ``DistillKLDivLoss``'s (1.0) nor retrdistill's listwise-kl default (0.05); the value used is recorded
  as ``kl_temperature`` in the counts. SPLADE dot products are far wider than cosines: a small temperature
  makes the student's softmax one-hot, so set ``loss_options: {temperature: ...}`` (and ``teacher_scale``) to
  the scale of the scores.

and FLOPS regularisers (``FlopsLoss``: the squared L2 norm of the batch's mean embedding) on the query column
and on every passage column. The trainer (:func:`splade_trainer`) is ``SparseEncoderTrainer`` with the
regularisers' weights scheduled from 0 to their values over the first ``warmup`` of the steps.

Counts recorded: ``kl_temperature`` (listwise), the weights, the warm-up, what the student's loading found
(``mlm_head``, ``vocab_size``), and after training ``loss_parts_curve`` (the logged score loss and regulariser
terms with the weights in force), ``last_batch_parts`` (the same for the last batch) and ``last_batch_active_dims`` (mean non-zero terms of the last batch's
queries and documents).
"""

from __future__ import annotations

from typing import Any

from retrdistill.errors import ConfigError
from retrdistill.training.objective import Objective

# the registered score losses a SPLADE student trains with, and the sentence-transformers loss that does it
SPARSE_LOSSES = {"margin-mse": "SparseMarginMSELoss", "listwise-kl": "SparseDistillKLDivLoss"}
LOGGED_PARTS = ("base_loss", "document_regularizer_loss", "query_regularizer_loss", "document_regularizer_weight",
                "query_regularizer_weight")


class SpladeObjective:
    """Builds a SPLADE student's loss from the score-loss part, the stage's ``ObjectiveSettings`` and the
    student's regulariser options; refuses, on construction, what it cannot train."""

    def __init__(self, student, loss, settings, inputs) -> None:
        from retrdistill import registry

        self.loss_name = registry.name_of("loss", loss)
        if self.loss_name not in SPARSE_LOSSES:
            raise ConfigError(f"loss {self.loss_name!r}: the SPLADE student trains with "
                              f"{' or '.join(SPARSE_LOSSES)} ({' / '.join(SPARSE_LOSSES.values())} inside "
                              f"SpladeLoss)")
        refused = [name for name, on in (("in_batch_negatives", settings.in_batch_negatives > 0),
                                         ("embedding_distill", settings.embedding_distill > 0),
                                         ("matryoshka_dims", bool(settings.matryoshka_dims))) if on]
        if refused:
            raise ConfigError(f"{', '.join(refused)}: not available to the SPLADE student (one score loss and its "
                              f"FLOPS regularisers); leave {'them' if len(refused) > 1 else 'it'} off")
        if not settings.loss_weight > 0:
            raise ConfigError("loss_weight: the SPLADE student's score loss needs a positive weight")
        self.student = student
        self.score_loss = loss
        self.settings = settings

    def inputs(self) -> dict[str, str]:
        return {}

    def extend_labels(self, rows) -> dict[str, Any]:
        return {}

    def build(self, model, rows) -> Objective:
        o = self.student.options
        counts: dict[str, Any] = {**self.student.load_counts,
                                  "query_regularizer_weight": o.query_regularizer_weight,
                                  "document_regularizer_weight": o.document_regularizer_weight,
                                  "regularizer_warmup": o.regularizer_warmup,
                                  "regularizer_schedule": o.regularizer_schedule}
        if self.loss_name == "listwise-kl":
            from sentence_transformers.sparse_encoder.losses import SparseDistillKLDivLoss

            temperature = float(self.score_loss.options.temperature)
            inner = SparseDistillKLDivLoss(model, temperature=temperature)
            counts["kl_temperature"] = temperature
        else:
            from sentence_transformers.sparse_encoder.losses import SparseMarginMSELoss

            inner = SparseMarginMSELoss(model)
        loss = recording_splade_loss(model, inner, o.query_regularizer_weight, o.document_regularizer_weight,
                                     self.settings.loss_weight)

        def trained_counts() -> dict[str, Any]:
            return {"loss_parts_curve": list(loss.logged), "last_batch_parts": dict(loss.last_parts),
                    "last_batch_active_dims": dict(loss.active_dims)}

        return Objective(loss, counts, "batch_sampler", trained_counts)


def recording_splade_loss(model, inner, query_weight: float, document_weight: float, loss_weight: float = 1.0):
    """``SpladeLoss`` that also keeps the last batch's mean active terms per side (``active_dims``) and a list
    for the trainer's logged parts (``logged``); the score loss is multiplied by ``loss_weight``."""
    import torch
    from sentence_transformers.sparse_encoder.losses import FlopsLoss, SpladeLoss

    class CountingFlops(FlopsLoss):
        """``FlopsLoss`` (threshold off) that records its embeddings' mean number of non-zero terms; across
        processes it is computed over the global batch (:mod:`retrdistill.training.distributed`)."""

        def __init__(self, model, side: str, into: dict[str, float]) -> None:
            super().__init__(model)
            self.side, self.into = side, into

        def compute_loss_from_embeddings(self, embeddings: torch.Tensor) -> torch.Tensor:
            from retrdistill.training.distributed import flops

            self.into[self.side] = float((embeddings.detach() != 0).sum(dim=1).float().mean())
            return flops(embeddings)  # FlopsLoss's term over the global batch under torchrun (one process: the same)

    class RecordingSpladeLoss(SpladeLoss):
        def forward(self, sentence_features, labels=None):
            parts = super().forward(sentence_features, labels)
            if loss_weight != 1.0 and "base_loss" in parts:
                parts["base_loss"] = parts["base_loss"] * loss_weight
            if self.training:
                self.last_parts = {name: float(value.detach()) for name, value in parts.items()}
                self.last_parts.update(document_regularizer_weight=float(self.document_regularizer_weight or 0.0),
                                       query_regularizer_weight=float(self.query_regularizer_weight or 0.0))
            return parts

    active: dict[str, float] = {}
    loss = RecordingSpladeLoss(model, inner, document_regularizer_weight=document_weight,
                               query_regularizer_weight=query_weight,
                               document_regularizer=CountingFlops(model, "document", active),
                               query_regularizer=CountingFlops(model, "query", active))
    loss.active_dims = active
    loss.logged = []
    loss.last_parts = {}
    return loss


def splade_trainer(warmup: float, schedule: str) -> tuple[type, type]:
    """``(SparseEncoderTrainer subclass, SparseEncoderTrainingArguments)``: the subclass schedules the loss's
    regulariser weights (``warmup`` fraction of the steps, ``schedule`` quadratic or linear) and records the
    logged loss parts into the loss's ``logged`` list as ``[step, {part: value}]``."""
    from sentence_transformers.sparse_encoder import SparseEncoderTrainer, SparseEncoderTrainingArguments
    from sentence_transformers.sparse_encoder.callbacks.splade_callbacks import SpladeRegularizerWeightSchedulerCallback
    from transformers import TrainerCallback

    class RecordParts(TrainerCallback):
        def __init__(self, into: list) -> None:
            self.into = into

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "base_loss" in logs:
                self.into.append([int(state.global_step), {k: float(logs[k]) for k in LOGGED_PARTS
                                                           if logs.get(k) is not None}])

    class SpladeTrainer(SparseEncoderTrainer):
        def __init__(self, *args, loss=None, callbacks=None, **kwargs):
            callbacks = list(callbacks or [])
            callbacks.append(SpladeRegularizerWeightSchedulerCallback(loss, scheduler_type=schedule, warmup_ratio=warmup))
            if hasattr(loss, "logged"):
                callbacks.append(RecordParts(loss.logged))
            super().__init__(*args, loss=loss, callbacks=callbacks, **kwargs)

    return SpladeTrainer, SparseEncoderTrainingArguments
