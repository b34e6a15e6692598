"""A learned sparse (SPLADE) student: the teacher's cached scores distilled into a ``SparseEncoder``.

The backbone is any masked-LM checkpoint (``backbone: masked``, default): sentence-transformers'
``Transformer(..., transformer_task="fill-mask")`` followed by ``SpladePooling(pooling_strategy="max")``, i.e.
a text's weight for vocabulary term *t* is ``max over positions of log(1 + ReLU(MLM logit_t))``. A checkpoint
without an MLM head (``offline:all-MiniLM-L6-v2``) gets one tied to its input embeddings
(:mod:`retrdistill.families.sparse.mlm_head`; logged, and ``mlm_head`` in the train manifest's counts), unless
``tie_mlm_head: false``, which makes it a ConfigError. ``backbone: causal`` takes a decoder-only LM instead
(a transformers folder, or a GGUF checkpoint such as ``offline:gemma-3-270m``), its LM head's logits giving
the term weights, optionally reading the text twice (``echo: true``; :mod:`retrdistill.families.sparse.causal_lm`).

Training (through the :class:`retrdistill.parts.Student` hooks; the train stage is the dense students'):

* rows: the bi-encoder rows ``query, positive, negative_1..n, label`` (:class:`retrdistill.training.data.ScoredRows`);
* objective (:class:`retrdistill.families.sparse.objective.SpladeObjective`): ``SpladeLoss`` around
  ``SparseMarginMSELoss`` (``loss: margin-mse``) or ``SparseDistillKLDivLoss`` (``loss: listwise-kl``, with the
  loss part's temperature passed explicitly), FLOPS regularisers on queries and documents with their own weights
  (``query_regularizer_weight``, ``document_regularizer_weight``);
* trainer: ``SparseEncoderTrainer``, with the regularisers' weights warmed up from 0 over the first
  ``regularizer_warmup`` of the steps (``SpladeRegularizerWeightSchedulerCallback``, ``regularizer_schedule``
  quadratic or linear).

Settings it cannot honour fail before anything runs: a loss other than those two, in-batch negatives,
embedding distillation, Matryoshka widths, ``truncate_dim``. The saved folder loads as
``SparseEncoder(path)`` (``trust_remote_code=True`` for a causal backbone, whose input module is retrdistill's).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from retrdistill.errors import ConfigError
from retrdistill.families.dense.bi_encoder import BiEncoderStudent
from retrdistill.models import gguf_file, model_fingerprint, resolve_model

log = logging.getLogger(__name__)

BACKBONES = ("masked", "causal")
SCHEDULES = ("quadratic", "linear")


class SpladeStudent(BiEncoderStudent):
    """A SPLADE ``SparseEncoder`` from a masked-LM (or causal-LM) checkpoint."""

    family: ClassVar[str] = "sparse"

    @dataclass
    class Options:
        model: str = "offline:tiny-bert-mlm"
        backbone: str = "masked"  # masked: fill-mask Transformer; causal: a decoder-only LM's head
        echo: bool = False  # causal only: feed the text twice, pool the second copy
        max_seq_length: int | None = field(default=256, metadata={"min": 4})
        tie_mlm_head: bool = True  # a checkpoint without an MLM head gets one tied to its input embeddings
        # FLOPS weight on the query embeddings (lambda_q)
        query_regularizer_weight: float = field(default=5e-5, metadata={"min": 0})
        # FLOPS weight on positive and negative passages (lambda_d)
        document_regularizer_weight: float = field(default=3e-5, metadata={"min": 0})
        # fraction of the steps over which both weights rise from 0
        regularizer_warmup: float = field(default=1 / 3, metadata={"min": 0, "exclusive_min": True, "max": 1})
        regularizer_schedule: str = "quadratic"  # or linear

        def __post_init__(self) -> None:
            if self.backbone not in BACKBONES:
                raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, got {self.backbone!r}")
            if self.echo and self.backbone != "causal":
                raise ValueError("echo repeats the text for a causal backbone; set backbone: causal or echo: false")
            if self.max_seq_length is not None and self.max_seq_length < 4:
                raise ValueError("max_seq_length must be at least 4 tokens")
            for name in ("query_regularizer_weight", "document_regularizer_weight"):
                if getattr(self, name) < 0:
                    raise ValueError(f"{name} is a weight and cannot be negative")
            if not 0 < self.regularizer_warmup <= 1:
                raise ValueError(f"regularizer_warmup is a fraction of the training steps in (0, 1], "
                                 f"got {self.regularizer_warmup}")
            if self.regularizer_schedule not in SCHEDULES:
                raise ValueError(f"regularizer_schedule must be one of {', '.join(SCHEDULES)}, "
                                 f"got {self.regularizer_schedule!r}")

    # the contract tests toggle each option alone: from a causal example, echo and backbone can both flip
    example_options: ClassVar[dict[str, Any]] = {"backbone": "causal"}
    example_variants: ClassVar[dict[str, Any]] = {"backbone": "masked", "regularizer_schedule": "linear"}

    def setup(self) -> None:
        """Check the checkpoint against the backbone now (config and tensor names only), so a model that cannot
        work is a ConfigError before any training."""
        self.path = Path(resolve_model(self.options.model))
        self.gguf = gguf_file(self.path)
        self.head = None
        self.load_counts: dict[str, Any] = {}
        if self.options.backbone == "masked":
            if self.gguf:
                raise ConfigError(f"student model {self.options.model}: a GGUF checkpoint is a decoder-only LM; "
                                  f"set backbone: causal")
            from retrdistill.families.sparse.mlm_head import check_head

            self.head = check_head(self.path, tie=self.options.tie_mlm_head)
        else:
            _check_causal(self.path, self.gguf, self.options.model)

    def fingerprint(self) -> dict:
        o = self.options_dict()
        return {"student": "splade", **o, "model": model_fingerprint(self.options.model)}

    def load(self):
        import torch
        from sentence_transformers import SparseEncoder
        from sentence_transformers.sparse_encoder.modules import SpladePooling, Transformer

        o = self.options
        if o.backbone == "masked":
            first = Transformer(str(self.path), transformer_task="fill-mask", max_seq_length=o.max_seq_length)
            counts: dict[str, Any] = {"mlm_head": "checkpoint"}
            if not self.head.in_checkpoint:
                from retrdistill.families.sparse.mlm_head import tie_head

                counts.update(tie_head(first.auto_model, self.head))
        else:
            from retrdistill.families.sparse.causal_lm import CausalTermLogits

            first = CausalTermLogits(str(self.path), echo=o.echo, max_seq_length=o.max_seq_length,
                                     gguf_file=self.gguf, model_kwargs={"dtype": torch.float32})
            counts = {"mlm_head": "causal-lm-head", "echo": o.echo}
        vocab = int(first.auto_model.get_output_embeddings().weight.shape[0])
        model = SparseEncoder(modules=[first, SpladePooling(pooling_strategy="max", embedding_dimension=vocab)])
        self.load_counts = {**counts, "backbone": o.backbone, "vocab_size": vocab}
        log.info("splade student from %s (%s backbone%s): %d-term vocabulary, %d parameters, MLM head: %s",
                 o.model, o.backbone, ", echo" if o.echo else "", vocab, sum(p.numel() for p in model.parameters()),
                 counts["mlm_head"])
        return model

    def trainer_classes(self) -> tuple[type, type]:
        from retrdistill.families.sparse.objective import splade_trainer

        return splade_trainer(self.options.regularizer_warmup, self.options.regularizer_schedule)

    def objective(self, loss, settings, inputs):
        from retrdistill.families.sparse.objective import SpladeObjective

        return SpladeObjective(self, loss, settings, inputs)

    batch_separable = False  # the FLOPS regulariser squares the batch's mean activation per term

    def check_config(self, cfg: Any) -> None:
        if getattr(cfg, "truncate_dim", None) is not None:
            raise ConfigError("truncate_dim: a SPLADE student's dimensions are its vocabulary's terms and cannot "
                              "be cut; leave truncate_dim unset")

    def truncate(self, model: Any, dim: int) -> Any:
        raise ConfigError("truncate_dim: a SPLADE student's dimensions are its vocabulary's terms and cannot be cut")


def _check_causal(path: Path, gguf: str | None, ref: str) -> None:
    """ConfigError unless transformers has a causal-LM class for the checkpoint (GGUF needs the gguf package)."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if gguf:
        try:
            import gguf as _  # noqa: F401
        except ImportError:
            raise ConfigError(f"student model {ref} is a GGUF checkpoint: reading it needs the gguf package "
                              f"(pip install 'retrdistill[llm]')") from None
    config = AutoConfig.from_pretrained(str(path), **({"gguf_file": gguf} if gguf else {}))
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ConfigError(f"student model {ref}: transformers has no causal-LM class for a {config.model_type!r} "
                          f"checkpoint; use backbone: masked for an encoder")
