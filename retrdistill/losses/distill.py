"""Score-distillation losses. Each adapter says which columns and labels it expects and builds the
sentence-transformers loss that does the work.

Inputs (both): a dataset with columns ``query, positive, negative_1 .. negative_n`` and ``label``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from retrdistill.parts import Loss


class MarginMSE(Loss):
    """Margin-MSE (Hofstätter et al., 2020) via ``MarginMSELoss``.

    Label: the teacher's margins ``[T(q,pos) - T(q,neg_i) for i in 1..n]``. Student similarity: dot product
    (equal to cosine for normalised students such as all-MiniLM-L6-v2).
    """

    @staticmethod
    def label(teacher_scores: list[float]) -> list[float]:
        pos = teacher_scores[0]
        return [pos - s for s in teacher_scores[1:]]

    def build(self, model) -> nn.Module:
        from sentence_transformers.sentence_transformer.losses import MarginMSELoss

        return MarginMSELoss(model)


class ListwiseKL(Loss):
    """Listwise KL distillation via ``DistillKLDivLoss``: KL(teacher softmax || student softmax) over
    ``[pos, neg_1..neg_n]``, both divided by ``temperature``.

    Label: the teacher's raw scores ``[T(q,pos), T(q,neg_1), ..., T(q,neg_n)]``. Cosine-scale teachers and
    students need a small temperature (default 0.05) for a non-flat distribution.
    """

    @dataclass
    class Options:
        temperature: float = field(default=0.05, metadata={"min": 0, "exclusive_min": True})

        def __post_init__(self) -> None:
            if self.temperature <= 0:
                raise ValueError("temperature must be positive")

    @staticmethod
    def label(teacher_scores: list[float]) -> list[float]:
        return list(teacher_scores)

    def build(self, model) -> nn.Module:
        from sentence_transformers.sentence_transformer.losses import DistillKLDivLoss

        return DistillKLDivLoss(model, temperature=self.options.temperature)

