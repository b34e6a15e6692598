"""Score-distillation losses of a cross-encoder student: adapters over sentence-transformers' CrossEncoder losses.

Every one takes the teacher's raw scores of a query's candidates ``[T(q, pos), T(q, neg_1), ..., T(q, neg_n)]``
as its label (:meth:`CrossEncoderLoss.label`) and declares the row layout its module reads (``layout``):

=================  ===============  =========================================================================
name               module           rows (``layout``)
=================  ===============  =========================================================================
``ce-mse``         ``MSELoss``      ``pairs``: one row ``(query, passage)`` per candidate, label ``T(q, d)``
``ce-margin-mse``  ``MarginMSELoss`` ``columns``: ``(query, positive, negative_1..n)``, label the n+1 scores
                                     (the loss takes the margins ``T(q,pos) - T(q,neg_i)``)
``ce-listnet``     ``ListNetLoss``  ``list``: ``(query, [pos, neg_1..n])``, label the n+1 scores
``ce-lambda``      ``LambdaLoss``   ``list``
``ce-ranknet``     ``RankNetLoss``  ``list``
``ce-plistmle``    ``PListMLELoss`` ``list`` (candidates ordered by the teacher's scores)
``ce-adrmse``      ``ADRMSELoss``   ``list``
=================  ===============  =========================================================================

They are registered under their own names, not the bi-encoder losses' (``margin-mse``, ``listwise-kl``): the
modules, rows and labels differ, and each student refuses, before anything runs, a loss of the other family
(:attr:`retrdistill.parts.Loss.student_family`).

Scale: the student's logits are unbounded (no sigmoid in training or in the saved model), so the pointwise and
margin losses teach it the teacher's own scale (a cosine-scale teacher gives a cosine-scale cross-encoder, whose
scores can teach a bi-encoder with the same loss settings as the teacher's). ListNet softmaxes the labels as
they are: for a cosine-scale teacher set the train step's ``teacher_scale`` (e.g. ``{mode: factor, factor: 20}``,
a temperature of 0.05). LambdaLoss reads the labels as gains ``2^label - 1`` with negative labels clamped to 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn

from retrdistill.parts import Loss

LAYOUTS = ("pairs", "columns", "list")
LAMBDA_WEIGHTINGS = ("ndcg-loss2pp", "ndcg-loss2", "ndcg-loss1", "lambdarank", "none")


class CrossEncoderLoss(Loss):
    """A loss over a ``CrossEncoder``'s logits; the label is the teacher's raw scores of ``[pos, neg_1..n]``."""

    student_family: ClassVar[str] = "cross-encoder"
    layout: ClassVar[str] = "list"

    @staticmethod
    def label(teacher_scores: list[float]) -> list[float]:
        return [float(s) for s in teacher_scores]


class CrossEncoderMSE(CrossEncoderLoss):
    """Pointwise: MSE between the student's logit and the teacher's score of each (query, passage) pair."""

    layout: ClassVar[str] = "pairs"

    def build(self, model) -> nn.Module:
        from sentence_transformers.cross_encoder.losses import MSELoss

        return MSELoss(model)


class CrossEncoderMarginMSE(CrossEncoderLoss):
    """Margin-MSE: MSE between the student's and the teacher's margins ``s(q,pos) - s(q,neg_i)``."""

    layout: ClassVar[str] = "columns"

    def build(self, model) -> nn.Module:
        from sentence_transformers.cross_encoder.losses import MarginMSELoss

        return MarginMSELoss(model)


class CrossEncoderListNet(CrossEncoderLoss):
    """ListNet: cross-entropy between the softmax of the teacher's scores and of the student's logits."""

    def build(self, model) -> nn.Module:
        from sentence_transformers.cross_encoder.losses import ListNetLoss

        return ListNetLoss(model)


class CrossEncoderLambda(CrossEncoderLoss):
    """LambdaLoss: pairwise logistic terms weighted by their effect on nDCG (``weighting``), top ``k`` only
    when given."""

    @dataclass
    class Options:
        weighting: str = "ndcg-loss2pp"
        k: int | None = field(default=None, metadata={"min": 1})
        sigma: float = field(default=1.0, metadata={"min": 0, "exclusive_min": True})

        def __post_init__(self) -> None:
            if self.weighting not in LAMBDA_WEIGHTINGS:
                raise ValueError(f"weighting must be one of {', '.join(LAMBDA_WEIGHTINGS)}, got {self.weighting!r}")
            if self.k is not None and self.k < 1:
                raise ValueError("k must be a positive rank cut-off (or null: the whole list)")
            if self.sigma <= 0:
                raise ValueError("sigma must be positive")

    example_variants: ClassVar[dict[str, Any]] = {"weighting": "lambdarank"}

    def build(self, model) -> nn.Module:
        from sentence_transformers.cross_encoder import losses

        schemes = {"ndcg-loss2pp": losses.NDCGLoss2PPScheme, "ndcg-loss2": losses.NDCGLoss2Scheme,
                   "ndcg-loss1": losses.NDCGLoss1Scheme, "lambdarank": losses.LambdaRankScheme,
                   "none": losses.NoWeightingScheme}
        o = self.options
        return losses.LambdaLoss(model, weighting_scheme=schemes[o.weighting](), k=o.k, sigma=o.sigma)


class CrossEncoderRankNet(CrossEncoderLoss):
    """RankNet: logistic loss on every candidate pair the teacher orders."""

    @dataclass
    class Options:
        sigma: float = field(default=1.0, metadata={"min": 0, "exclusive_min": True})

        def __post_init__(self) -> None:
            if self.sigma <= 0:
                raise ValueError("sigma must be positive")

    def build(self, model) -> nn.Module:
        from sentence_transformers.cross_encoder.losses import RankNetLoss

        return RankNetLoss(model, sigma=self.options.sigma)


class CrossEncoderPListMLE(CrossEncoderLoss):
    """Position-aware ListMLE: likelihood of the teacher's ordering of the candidates, top positions weighted."""

    def build(self, model) -> nn.Module:
        from sentence_transformers.cross_encoder.losses import PListMLELoss

        # the rows hold the positive first, not the teacher's order: the loss sorts by the teacher's scores
        return PListMLELoss(model, respect_input_order=False)


class CrossEncoderADRMSE(CrossEncoderLoss):
    """ADR-MSE: squared error between the teacher's ranks and the student's differentiable approximate ranks."""

    @dataclass
    class Options:
        alpha: float = field(default=1.0, metadata={"min": 0, "exclusive_min": True})

        def __post_init__(self) -> None:
            if self.alpha <= 0:
                raise ValueError("alpha must be positive")

    def build(self, model) -> nn.Module:
        from sentence_transformers.cross_encoder.losses import ADRMSELoss

        return ADRMSELoss(model, alpha=self.options.alpha)
