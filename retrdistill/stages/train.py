"""Stage ``train``: a student learns the teacher's scores through a sentence-transformers trainer.

The stage only wires parts; each piece is built by its own part (see :mod:`retrdistill.training`):

* the **student** (:class:`retrdistill.parts.Student`, registered as ``student``) loads the model and names
  the rest: its trainer classes, its training-data builder, its objective builder, how it is cut and saved;
* the **training data** (:class:`retrdistill.training.data.ScoredRows` for bi-encoders): one row
  ``query, positive, negative_1..negative_n, label`` per scored group, the label being what the registered
  loss expects (teacher margins for Margin-MSE, raw scores for listwise KL);
* the **objective** (:class:`retrdistill.training.objective.DistillObjective` for bi-encoders): the score loss
  (weight ``loss_weight``), in-batch negatives (``in_batch_negatives``, 0: off), embedding distillation
  (``embedding_distill``, 0: off; teacher from the scores' manifest unless ``embedding_options`` names one),
  in-batch distillation (``in_batch_distill``, 0: off; every query against every passage of the batch, priced
  by that same teacher's embeddings, at ``in_batch_temperature``),
  Matryoshka widths (``matryoshka_dims``);
* the **fit** (:func:`retrdistill.training.fit.fit`): the trainer run, silent, with its logged loss curve.

``truncate_dim`` makes the saved model output only its first ``truncate_dim`` dimensions. ``save_untrained``
also writes the student as declared, before training and before any seeding, to ``untrained/`` (the
undistilled baseline of its shape, ``@step.untrained``). The checkpoint is saved under ``model/``. The whole
config keys the artefact.

``teacher_scale`` (``{mode: none|factor|standardise, factor: 1.0}``; empty: none) rescales the teacher's scores
of each query before any student's labels are made (:mod:`retrdistill.training.teacher_scale`).

``validation`` (off when empty; see :mod:`retrdistill.validation`) holds out a seeded fraction of the scored
groups by query id, evaluates the student on them with label-free metrics at the end of every epoch (or every
N steps) and keeps the checkpoint best on ``validation.metric``, so ``epochs`` is an upper bound; the manifest's
``counts.validation`` records the split (counts, seed, the held-out ids' fingerprint), the whole curve and
which checkpoint was kept. Off, the step trains exactly as without it, and its key is unchanged.
"""

from __future__ import annotations

import contextlib
import logging
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrdistill import registry
from retrdistill.artefacts import fingerprint_obj, upstream
from retrdistill.errors import ConfigError
from retrdistill.stages.base import (
    StageResult,
    StageSpec,
    StepInput,
    Work,
    config_dict,
    distributed_rank,
    keyed_part_config,
)
from retrdistill.validate import check_ranges

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    student: str = "dense"
    options: dict[str, Any] = field(default_factory=dict, metadata={"part": {"kind": "student", "name": "student"}})
    loss: str = "margin-mse"
    loss_options: dict[str, Any] = field(default_factory=dict, metadata={"part": {"kind": "loss", "name": "loss"}})
    # weight of MultipleNegativesRankingLoss; 0 turns it off
    in_batch_negatives: float = field(default=0.0, metadata={"min": 0})
    negatives_per_query: int = field(default=4, metadata={"min": 1})
    epochs: float = field(default=1.0, metadata={"min": 0, "exclusive_min": True})
    max_steps: int = field(default=-1, metadata={"min": -1})  # -1: as many as the epochs take
    batch_size: int = field(default=32, metadata={"min": 1})
    micro_batch_size: int | None = field(default=None, metadata={
        "help": "Rows per forward pass (gradients accumulated to batch_size rows per step): bounds the activation "
                "memory. Only for objectives without batch-level terms (no in-batch negatives, no FLOPS).",
        "omit_default": True, "min": 1})
    learning_rate: float = field(default=2e-5, metadata={"help": "Peak learning rate.", "min": 0,
                                                         "exclusive_min": True})
    warmup_ratio: float = field(default=0.1, metadata={"min": 0, "max": 1, "exclusive_max": True})
    weight_decay: float = field(default=0.01, metadata={"min": 0})
    seed: int = 13
    # weight of the score loss; 0 with embedding_distill > 0 distils embeddings only
    loss_weight: float = field(default=1.0, metadata={"min": 0})
    # weight of embedding-level distillation; 0 turns it off
    embedding_distill: float = field(default=0.0, metadata={"min": 0})
    # weight of in-batch distillation (every query against every passage of the batch, priced by the embedding
    # teacher's tables); 0 turns it off
    in_batch_distill: float = field(default=0.0, metadata={"min": 0, "omit_default": True})
    in_batch_temperature: float = field(default=0.05, metadata={"min": 0, "exclusive_min": True, "omit_default": True})
    embedding_options: dict[str, Any] = field(default_factory=dict, metadata={  # distance, teacher, teacher_options
        "part": {"target": "retrdistill.losses.embedding:EmbeddingDistill"}})
    # also train the score parts at these widths
    matryoshka_dims: list[int] = field(default_factory=list, metadata={"min": 1})
    # the saved student outputs its first truncate_dim dimensions
    truncate_dim: int | None = field(default=None, metadata={"min": 1})
    save_untrained: bool = False  # also write the declared student before training to untrained/ (@step.untrained)
    validation: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "Label-free validation, e.g. fraction=0.1 metric=pseudo-mrr@10 every=epoch (empty: off).",
        "omit_default": True,  # left out of the artefact's key while empty: existing artefacts stay current
        "part": {"target": "retrdistill.validation.split:ValidationSettings"}})
    teacher_scale: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "Rescale teacher scores before labels: mode=none|factor|standardise factor=1.0 (empty: none).",
        "omit_default": True,  # see retrdistill.training.teacher_scale; canonical form, empty while none
        "part": {"target": "retrdistill.training.teacher_scale:TeacherScale"}})
    checkpoint_steps: int = field(default=0, metadata={
        "help": "Save a resumable checkpoint every N steps; a killed run resumes from the last one (0: none).",
        "omit_default": True, "min": 0})  # not part of the key: it does not change the trained weights

    def __post_init__(self) -> None:
        registry.entry("student", self.student)
        registry.entry("loss", self.loss)
        if self.negatives_per_query < 1:
            raise ValueError("negatives_per_query must be at least 1")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio is a fraction of the training steps in [0, 1), got {self.warmup_ratio}")
        for name in ("in_batch_negatives", "loss_weight", "embedding_distill", "in_batch_distill"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} is a weight and cannot be negative")
        if self.in_batch_temperature <= 0:
            raise ValueError("in_batch_temperature must be positive")
        if (self.loss_weight == 0 and self.in_batch_negatives == 0 and self.embedding_distill == 0
                and self.in_batch_distill == 0):
            raise ValueError("every loss weight is 0: set loss_weight, in_batch_negatives, embedding_distill or "
                             "in_batch_distill")
        self.embedding_settings()  # validates the options now, with the list of known keys on a typo
        self.validation_settings()
        self.teacher_scale = self.teacher_scale_settings().as_config()  # canonical: {} or both keys
        if any(not isinstance(d, int) or isinstance(d, bool) or d < 1 for d in self.matryoshka_dims):
            raise ValueError(f"matryoshka_dims must be positive widths, got {self.matryoshka_dims!r}")
        if self.truncate_dim is not None and self.truncate_dim < 1:
            raise ValueError("truncate_dim must be a positive width")
        if self.micro_batch_size is not None:
            if self.micro_batch_size < 1 or self.batch_size % self.micro_batch_size:
                raise ValueError(f"micro_batch_size must divide batch_size {self.batch_size}, "
                                 f"got {self.micro_batch_size}")
            if self.in_batch_negatives or self.in_batch_distill:
                raise ValueError("micro_batch_size cannot be combined with in_batch_negatives or in_batch_distill: "
                                 "both read the other rows of the whole batch")
        if self.checkpoint_steps < 0 or (self.checkpoint_steps and self.validation):
            raise ValueError("checkpoint_steps must be >= 0, and is not combined with validation (which saves its own)")
        check_ranges(self, "train")
        if self.truncate_dim is not None and self.matryoshka_dims and self.truncate_dim not in self.matryoshka_dims:
            log.warning("truncate_dim %d is not one of matryoshka_dims %s: that width was not trained",
                        self.truncate_dim, self.matryoshka_dims)

    def embedding_settings(self):
        from retrdistill.losses.embedding import EmbeddingDistill

        return registry.make_options(EmbeddingDistill, self.embedding_options, label="embedding_options")

    def validation_settings(self):
        """The validation settings (:class:`retrdistill.validation.split.ValidationSettings`), None when off."""
        from retrdistill.validation.split import validation_settings

        return validation_settings(self.validation)

    def teacher_scale_settings(self):
        """How teacher scores are rescaled before the labels (:class:`retrdistill.training.teacher_scale.TeacherScale`)."""
        from retrdistill.training.teacher_scale import teacher_scale

        return teacher_scale(self.teacher_scale)

    def objective_settings(self):
        from retrdistill.training.objective import ObjectiveSettings

        return ObjectiveSettings(loss_weight=self.loss_weight, in_batch_negatives=self.in_batch_negatives,
                                 embedding_distill=self.embedding_distill, embedding=self.embedding_settings(),
                                 in_batch_distill=self.in_batch_distill,
                                 in_batch_temperature=self.in_batch_temperature,
                                 matryoshka_dims=list(self.matryoshka_dims), seed=self.seed)

    def fit_settings(self):
        from retrdistill.training.fit import FitSettings

        return FitSettings(epochs=self.epochs, max_steps=self.max_steps, batch_size=self.batch_size,
                           micro_batch_size=self.micro_batch_size,
                           learning_rate=self.learning_rate, warmup_ratio=self.warmup_ratio,
                           weight_decay=self.weight_decay, seed=self.seed, checkpoint_steps=self.checkpoint_steps)


LOSS_TRAINS = {"embedding": "a bi-encoder or SPLADE student (it compares embeddings)",
               "cross-encoder": "a cross-encoder student (pair logits)"}


def _check_loss_fits(loss, student) -> None:
    """ConfigError unless ``loss`` trains what the student's family trains with (:attr:`Family.trains_with`)."""
    from retrdistill import families

    wanted = families.get(student.family).trains_with
    if loss.student_family != wanted:
        trains = LOSS_TRAINS.get(loss.student_family, f"a {loss.student_family} student")
        raise ConfigError(f"loss {registry.name_of('loss', loss)!r} trains {trains}; the "
                          f"{registry.name_of('student', student)!r} student ({student.family} family) takes one "
                          f"of: {', '.join(families.losses_for(wanted))}")


def run_train(cfg: TrainConfig, scores_dir: str | Path, collection_dir: str | Path, out_dir: str | Path, *,
              cache_dir: str | Path, force: bool = False) -> StageResult:
    return prepare_train(cfg, scores_dir, collection_dir, out_dir, cache_dir=cache_dir).run(force=force)


def prepare_train(cfg: TrainConfig, scores_dir: str | Path, collection_dir: str | Path, out_dir: str | Path, *,
                  cache_dir: str | Path) -> Work:
    from retrdistill.evaluation.mining import negatives_record
    from retrdistill.training.data import TrainingInputs

    student = registry.build("student", cfg.student, cfg.options)
    student.check_config(cfg)
    if cfg.micro_batch_size is not None and not student.batch_separable:
        raise ConfigError(f"micro_batch_size: the {cfg.student!r} student's objective has batch-level terms "
                          f"(e.g. a FLOPS regulariser over the batch), so smaller forward passes would change it")
    loss = registry.build("loss", cfg.loss, cfg.loss_options)
    _check_loss_fits(loss, student)
    sources = TrainingInputs(Path(scores_dir), Path(collection_dir), Path(cache_dir),
                             teacher_scale=cfg.teacher_scale_settings())
    objective = student.objective(loss, cfg.objective_settings(), sources)
    scores_manifest = upstream(scores_dir, "scores")
    # the corpus the passage texts are read from is an input (scores name passages by id only)
    inputs = {"scores": scores_manifest.fingerprint, "student": fingerprint_obj(student.fingerprint()),
              "corpus": sources.corpus.fingerprint, **objective.inputs()}
    validation = cfg.validation_settings()

    def body(tmp: Path) -> dict[str, Any]:
        from transformers import set_seed

        from retrdistill.training.fit import fit
        from retrdistill.training.window import passage_window, warn_if_cut

        if cfg.save_untrained:  # before any seeding: loading it must not move the seeded streams
            student.save(student.load(), tmp / "untrained")
        set_seed(cfg.seed)
        random.seed(cfg.seed)
        rows_from, checking = sources, None
        if validation is not None:  # the held-out groups never reach the training rows
            rows_from, checking = _validation_split(validation, sources, tmp)
        rows = student.training_data().build(rows_from, negatives=cfg.negatives_per_query, label=loss.label)
        counts = {**rows.counts, **objective.extend_labels(rows)}
        dataset = rows.dataset()
        model = student.load()
        window = passage_window(model, sources.corpus, seed=cfg.seed)
        warn_if_cut(window)
        if window is not None:  # a record only: what the student reads of the corpus
            counts["passage_window"] = window
        built = objective.build(model, rows)
        counts.update(built.counts)
        fit_validation = None if checking is None else _fit_validation(validation, checking, student, cfg, sources, tmp)
        settings = cfg.fit_settings()
        settings.checkpoint_dir = checkpoints  # beside the output, not in tmp: it outlives a killed run
        counts.update(fit(student.trainer_classes(), model, built.loss, dataset, settings, tmp / ".trainer",
                          batch_sampler=built.batch_sampler, validation=fit_validation))
        if distributed_rank() == 0:
            shutil.rmtree(checkpoints, ignore_errors=True)
            with contextlib.suppress(OSError):  # the folder of every key's checkpoints, once empty
                checkpoints.parent.rmdir()
        if checking is not None:
            counts["validation"]["split"] = checking["record"]
            shutil.rmtree(tmp / ".validation", ignore_errors=True)
        counts.update(built.trained_counts())
        counts["negatives"] = negatives_record(scores_manifest)  # what the negatives were (leaderboard figure)
        if cfg.truncate_dim is not None:
            model = student.truncate(model, cfg.truncate_dim)
        student.save(model, tmp / "model")
        if hasattr(model, "get_embedding_dimension"):
            counts["dim"] = int(model.get_embedding_dimension())
        return counts

    config = keyed_part_config(config_dict(cfg), "options")  # the student's fingerprint keys its options
    config.pop("checkpoint_steps", None)  # how often to checkpoint does not change the weights
    work = Work("train", "student", Path(out_dir), config, inputs, body, distributed=True, settings=config_dict(cfg))
    # every rank of a torchrun job names the same folder; keyed, so a changed config never resumes a stale one
    checkpoints = work.out_dir.parent / f".{work.out_dir.name}.checkpoints" / work.key[:16]
    return work


def _validation_split(settings, sources, tmp: Path):
    """The training inputs without the held-out groups, and what validating needs (groups, record)."""
    from retrdistill.validation.split import split_scores

    split, held, record = split_scores(sources.scores_dir, tmp / ".validation", settings)
    log.info("train: validation holds out %d of %d queries (%d groups, seed %d)", len(split.held_out),
             len(split.held_out) + len(split.train), len(held), settings.seed)
    return sources.holding(tmp / ".validation"), {"groups": held, "record": record}


def _fit_validation(settings, checking: dict[str, Any], student, cfg: TrainConfig, sources, tmp: Path):
    from retrdistill.training.fit import FitValidation
    from retrdistill.validation.evaluator import LabelFreeEvaluator

    def as_saved(model):  # the model as the artefact will hold it (cut to truncate_dim when asked)
        return model if cfg.truncate_dim is None else student.truncate(model, cfg.truncate_dim)

    parts = settings.parts()
    depth = max(part.teacher_depth() for part in parts)
    evaluator = LabelFreeEvaluator(checking["groups"], sources.corpus, parts, settings.metric,
                                   batch_size=settings.batch_size, transform=as_saved,
                                   corpus_sample=settings.corpus_sample, seed=settings.seed,
                                   teacher_top=_teacher_top(checking["groups"], sources, depth) if depth else None,
                                   family=student.family)
    keep = tmp / "checkpoints" if settings.keep_checkpoints else None
    return FitValidation(evaluator, settings.metric, settings.every, settings.at_start, keep,
                         lambda model, folder: student.save(as_saved(model), folder))


def _teacher_top(groups: list, sources, depth: int) -> dict[str, list[str]]:
    """The scoring teacher's own top ``depth`` passages of the corpus for each held-out query (its ``retrieve``:
    exact search of its cached corpus embeddings for a bi-encoder, a re-ranked first stage for a pair teacher)."""
    config = sources.scores_config()
    teacher = registry.build("teacher", config["teacher"], config.get("options") or {}, corpus=sources.corpus,
                             cache_dir=Path(sources.cache_dir))
    queries = {g.qid: g.query for g in groups}
    log.info("train: validation asks the teacher (%s) for its top %d of the corpus for %d held-out queries",
             config["teacher"], depth, len(queries))
    run = teacher.retrieve(queries, depth)
    return {q: [d for d, _ in sorted(hits.items(), key=lambda kv: -kv[1])] for q, hits in run.items()}


STAGE = StageSpec(
    name="train", config=TrainConfig, output="student",
    inputs={"scores": StepInput(("scores",), "the teacher scores to distil")},
    prepare=lambda cfg, refs, ctx: prepare_train(cfg, refs["scores"], ctx.collection, ctx.out_dir,
                                                 cache_dir=ctx.cache_dir),
    summary="a registered student learns the teacher's scores",
)
