"""What every embedding student trains with: a sentence-transformers trainer, rows
``query, positive, negative_1..n, label`` and the distillation objective of :mod:`retrdistill.training`.

:class:`BiEncoderStudent` is the base of the dense students (``dense``, ``pruned``) and of SPLADE, which keeps
its rows and names its own trainer and objective.
"""

from __future__ import annotations

from typing import Any

from retrdistill.parts import Loss, Student


class BiEncoderStudent(Student):
    """A student that embeds queries and passages on their own (a ``SentenceTransformer`` by default)."""

    def trainer_classes(self) -> tuple[type, type]:
        from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

        return SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    def training_data(self) -> Any:
        from retrdistill.training.data import ScoredRows

        return ScoredRows()

    def objective(self, loss: Loss, settings: Any, inputs: Any) -> Any:
        from retrdistill.training.objective import DistillObjective

        return DistillObjective(loss, settings, inputs)

    def truncate(self, model: Any, dim: int) -> Any:
        from retrdistill.training.fit import truncated

        return truncated(model, dim)
