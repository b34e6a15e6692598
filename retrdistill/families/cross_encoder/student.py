"""A cross-encoder (re-ranker) student: the teacher's cached scores distilled into a sentence-transformers
``CrossEncoder`` through ``CrossEncoderTrainer``.

The student is any encoder checkpoint read as ``AutoModelForSequenceClassification`` with one output logit: a
checkpoint without a classification head (``offline:all-MiniLM-L6-v2``, a bi-encoder) gets a freshly
initialised one (seeded by the train step's ``seed``), on top of the encoder's pooled ``[CLS]`` output. No
relevance-trained cross-encoder exists offline, so this is how the sample's chain starts. The logit is the score:
no sigmoid in training nor in the saved model (``activation_fn`` Identity, saved in its config), so the scores
keep the scale the loss taught (the teacher's own for the pointwise and margin losses).

Training (through the :class:`retrdistill.parts.Student` hooks; the train stage is the other students'):

* rows: the bi-encoder rows of each scored group (:class:`retrdistill.training.data.ScoredRows`), the positive
  and ``negatives_per_query`` negatives, of which the last ``deep_negatives`` are the group's deepest-ranked
  candidates (the mine step's order) and the others its best-ranked ones, so the student sees candidates from deep
  in the ranking as well as the top (a re-ranker scores all of a first stage's top 100, not only its hard head);
* objective (:class:`retrdistill.families.cross_encoder.objective.CrossEncoderObjective`): one of the
  cross-encoder losses of :mod:`retrdistill.losses.cross_encoder` (``ce-mse``, ``ce-margin-mse``, ``ce-listnet``,
  ``ce-lambda``, ``ce-ranknet``, ``ce-plistmle``, ``ce-adrmse``), the rows laid out as that loss reads them;
* trainer: ``CrossEncoderTrainer`` with ``CrossEncoderTrainingArguments``.

Settings it cannot honour fail before anything runs (:meth:`CrossEncoderStudent.check_config`): a bi-encoder
loss, in-batch negatives, embedding distillation, Matryoshka widths, ``truncate_dim``, label-free validation
(its metrics search the corpus with embeddings), ``deep_negatives`` above ``negatives_per_query``. The saved
folder loads as ``CrossEncoder(path)``, so it is a teacher like any other (``teacher: cross-encoder, options:
{model: "@step"}``) and a re-ranker (:mod:`retrdistill.rerank`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from retrdistill.errors import ConfigError
from retrdistill.models import model_fingerprint, resolve_model
from retrdistill.parts import Student

log = logging.getLogger(__name__)


class CrossEncoderStudent(Student):
    """A one-logit ``CrossEncoder`` from an encoder checkpoint (a fresh head where it has none)."""

    family: ClassVar[str] = "cross-encoder"

    @dataclass
    class Options:
        model: str = "offline:all-MiniLM-L6-v2"
        max_length: int | None = field(default=256, metadata={"min": 8})  # tokens of query and passage together
        # of the negatives per query, this many are the group's deepest-ranked ones
        deep_negatives: int = field(default=0, metadata={"min": 0})
        # Hugging Face config values set when the checkpoint is loaded, e.g. {attention_probs_dropout_prob: 0.0}
        config_overrides: dict[str, Any] = field(default_factory=dict)

        def __post_init__(self) -> None:
            if self.max_length is not None and self.max_length < 8:
                raise ValueError("max_length must be at least 8 tokens (query and passage together)")
            if self.deep_negatives < 0:
                raise ValueError("deep_negatives is a count and cannot be negative")

    example_variants: ClassVar[dict[str, Any]] = {"config_overrides": {"attention_probs_dropout_prob": 0.0}}

    def setup(self) -> None:
        self.path = Path(resolve_model(self.options.model))
        self.load_counts: dict[str, Any] = {}

    def fingerprint(self) -> dict:
        o = self.options
        out = {"student": "cross-encoder", "model": model_fingerprint(o.model), "max_length": o.max_length,
               "deep_negatives": o.deep_negatives}
        if o.config_overrides:
            out["config_overrides"] = dict(o.config_overrides)
        return out

    def load(self):
        from sentence_transformers.cross_encoder import CrossEncoder
        from torch import nn

        o = self.options
        config = {**o.config_overrides}
        model = CrossEncoder(str(self.path), num_labels=1, max_length=o.max_length, activation_fn=nn.Identity(),
                             config_kwargs=config or None)
        head = "checkpoint" if _has_head(self.path) else "fresh"
        self.load_counts = {"head": head, "parameters": int(sum(p.numel() for p in model.parameters()))}
        log.info("cross-encoder student from %s: %d parameters, one-logit head: %s", o.model,
                 self.load_counts["parameters"], head)
        return model

    def trainer_classes(self) -> tuple[type, type]:
        from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments

        return CrossEncoderTrainer, CrossEncoderTrainingArguments

    def training_data(self) -> Any:
        from retrdistill.families.cross_encoder.objective import CrossEncoderRows

        return CrossEncoderRows(self.options.deep_negatives)

    def objective(self, loss, settings, inputs):
        from retrdistill.families.cross_encoder.objective import CrossEncoderObjective

        return CrossEncoderObjective(self, loss, settings)

    def check_config(self, cfg: Any) -> None:
        refused = [name for name, on in (("truncate_dim", getattr(cfg, "truncate_dim", None) is not None),
                                         ("validation", bool(getattr(cfg, "validation", None)))) if on]
        if refused:
            raise ConfigError(f"{', '.join(refused)}: not available to the cross-encoder student (it scores pairs: it "
                              f"has no embedding to cut, and label-free validation searches the corpus with "
                              f"embeddings); leave {'them' if len(refused) > 1 else 'it'} unset")
        n = getattr(cfg, "negatives_per_query", None)
        if n is not None and self.options.deep_negatives > n:
            raise ConfigError(f"deep_negatives {self.options.deep_negatives} is more than negatives_per_query {n}: "
                              f"the deep ones are part of the negatives per query")

    def truncate(self, model: Any, dim: int) -> Any:
        raise ConfigError("truncate_dim: a cross-encoder student outputs one score, not an embedding to cut")


def _has_head(path: Path) -> bool:
    """Whether the checkpoint's config says it is a sequence-classification model (its head is then loaded)."""
    import json

    config = path / "config.json"
    if not config.is_file():
        return False
    architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
    return any(a.endswith("ForSequenceClassification") for a in architectures)
