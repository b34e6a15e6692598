"""Score-distillation losses. Each adapter says which columns and labels it expects and builds the
sentence-transformers loss that does the work.

Inputs (both): a dataset with columns ``query, positive, negative_1 .. negative_n`` and ``label``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


class MarginMSE:
    """Margin-MSE (Hofstätter et al., 2020) via ``MarginMSELoss``.

    Label: the teacher's margins ``[T(q,pos) - T(q,neg_i) for i in 1..n]``. Student similarity: dot product
    (equal to cosine for normalised students such as all-MiniLM-L6-v2).
    """

    @dataclass
    class Options:
        pass

    def __init__(self, options: Options | None = None) -> None:
        self.options = options

    @classmethod
    def from_options(cls, options: Options | None, **_: object) -> "MarginMSE":
        return cls(options)

    @staticmethod
    def label(teacher_scores: list[float]) -> list[float]:
        pos = teacher_scores[0]
        return [pos - s for s in teacher_scores[1:]]

    def build(self, model) -> nn.Module:
        from sentence_transformers.sentence_transformer.losses import MarginMSELoss

        return MarginMSELoss(model)


class ListwiseKL:
    """Listwise KL distillation via ``DistillKLDivLoss``: KL(teacher softmax || student softmax) over
    ``[pos, neg_1..neg_n]``, both divided by ``temperature``.

    Label: the teacher's raw scores ``[T(q,pos), T(q,neg_1), ..., T(q,neg_n)]``. Cosine-scale teachers and
    students need a small temperature (default 0.05) for a non-flat distribution.
    """

    @dataclass
    class Options:
        temperature: float = 0.05

        def __post_init__(self) -> None:
            if self.temperature <= 0:
                raise ValueError("temperature must be positive")

    def __init__(self, options: Options) -> None:
        self.options = options

    @classmethod
    def from_options(cls, options: Options, **_: object) -> "ListwiseKL":
        return cls(options)

    @staticmethod
    def label(teacher_scores: list[float]) -> list[float]:
        return list(teacher_scores)

    def build(self, model) -> nn.Module:
        from sentence_transformers.sentence_transformer.losses import DistillKLDivLoss

        return DistillKLDivLoss(model, temperature=self.options.temperature)


class WeightedSum(nn.Module):
    """Weighted sum of sentence-transformers losses over the same batch (e.g. distillation + in-batch negatives)."""

    def __init__(self, model, parts: list[tuple[float, nn.Module]]) -> None:
        super().__init__()
        self.model = model
        self.weights = [w for w, _ in parts]
        self.parts = nn.ModuleList([loss for _, loss in parts])

    def forward(self, sentence_features, labels: torch.Tensor) -> torch.Tensor:
        from sentence_transformers.base.losses.merged_forward import embed_columns

        embeddings = embed_columns(self.model, sentence_features)  # once, shared by every part
        return sum(w * loss.compute_loss_from_embeddings(embeddings, labels) for w, loss in zip(self.weights, self.parts))
