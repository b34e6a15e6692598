"""The validation split of a train step: a seeded fraction of the scored groups, held out by query id.

Settings come from ``TrainConfig.validation`` (a mapping; empty: validation off)::

    validation: {fraction: 0.1, seed: 13, metric: pseudo-mrr@10, every: epoch}

The held-out query ids are drawn from the sorted distinct query ids of the scores artefact with
``random.Random(seed)``, so the split depends only on the seed, the fraction and the set of query ids. Every
group of a held-out query id is held out, so no training group shares a query id with a validation group.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrdistill import registry
from retrdistill.artefacts import fingerprint_obj
from retrdistill.errors import ConfigError
from retrdistill.kinds import ScoredGroup, read_scores, scored_row, write_rows


@dataclass
class ValidationSettings:
    """``TrainConfig.validation``.

    fraction: share of the distinct training query ids held out (at least one is held out, one kept).
    seed: draws the held-out ids.
    metrics: registered ``validation_metric`` parts computed at each evaluation.
    metric_options: options per metric part, e.g. ``{teacher-agreement: {correlation: kendall}}``.
    metric: the value the kept checkpoint is best on; one of the parts' names (``pseudo-mrr@10``,
        ``pseudo-recall@100``, ``teacher-ndcg@10``, ``teacher-spearman``, ...).
    every: ``"epoch"`` or a number of optimiser steps between evaluations (and checkpoints).
    at_start: also evaluate the model before training (a point of the curve, not a candidate checkpoint).
    keep_checkpoints: also write every evaluated checkpoint to ``checkpoints/step-N/`` in the artefact.
    batch_size: encoding batch size of the evaluations.
    corpus_sample: search metrics (``pseudo-mrr@10``, ``pseudo-recall@100``) search a fixed part of the corpus:
        this many passages drawn with ``seed`` plus every held-out candidate (None: the whole corpus at every
        evaluation). A cheaper check on a large corpus; the metric's scale changes, the chosen checkpoint is
        what matters (benchmarks/validation_sample.py measures both).
    """

    fraction: float = 0.1
    seed: int = 13
    metrics: list[str] = field(default_factory=lambda: ["pseudo-positive", "teacher-agreement"])
    metric_options: dict[str, dict[str, Any]] = field(default_factory=dict, metadata={
        "part": {"kind": "validation_metric", "by_name": True}})
    metric: str = "pseudo-mrr@10"
    every: str | int = field(default="epoch", metadata={"min": 1})
    at_start: bool = False
    keep_checkpoints: bool = False
    batch_size: int = field(default=64, metadata={"min": 1})
    corpus_sample: int | None = field(default=None, metadata={"min": 1})

    def __post_init__(self) -> None:
        if not (isinstance(self.fraction, (int, float)) and 0 < self.fraction < 1):
            raise ValueError(f"validation.fraction must be in (0, 1), got {self.fraction!r}")
        if self.every != "epoch" and not (isinstance(self.every, int) and not isinstance(self.every, bool)
                                          and self.every > 0):
            raise ValueError(f"validation.every must be 'epoch' or a positive number of steps, got {self.every!r}")
        if not self.metrics:
            raise ValueError("validation.metrics must name at least one validation metric")
        unknown = sorted(set(self.metric_options) - set(self.metrics))
        if unknown:
            raise ValueError(f"validation.metric_options names metrics not in validation.metrics: {', '.join(unknown)}")
        names = [n for part in self.parts() for n in part.names()]
        if self.metric not in names:
            raise ValueError(f"validation.metric {self.metric!r} is not computed; expected one of: {', '.join(names)}")
        if self.batch_size < 1:
            raise ValueError("validation.batch_size must be positive")
        if self.corpus_sample is not None and (isinstance(self.corpus_sample, bool) or
                                               not isinstance(self.corpus_sample, int) or self.corpus_sample < 1):
            raise ValueError(f"validation.corpus_sample must be a positive number of passages or null, "
                             f"got {self.corpus_sample!r}")

    def parts(self) -> list:
        """The metric parts, built from the registry (unknown names list the registered ones)."""
        return [registry.build("validation_metric", name, self.metric_options.get(name, {})) for name in self.metrics]

    def fingerprint(self) -> dict[str, Any]:
        out = {"fraction": self.fraction, "seed": self.seed, "metrics": [p.fingerprint() for p in self.parts()]}
        if self.corpus_sample is not None:  # which passages are searched: changes the curve and the checkpoint
            out["corpus_sample"] = self.corpus_sample
        return out


def validation_settings(raw: dict[str, Any]) -> ValidationSettings | None:
    """The settings from ``TrainConfig.validation``; None when it is empty (validation off)."""
    if not raw:
        return None
    return registry.make_options(_Holder, dict(raw), label="train validation")


class _Holder:
    Options = ValidationSettings


@dataclass
class ValidationSplit:
    """The query ids kept for training and held out, and what the manifest records about them."""

    train: set[str]
    held_out: set[str]
    fraction: float
    seed: int

    def record(self, groups_held_out: int) -> dict[str, Any]:
        return {"fraction": self.fraction, "seed": self.seed, "train_queries": len(self.train),
                "held_out_queries": len(self.held_out), "held_out_groups": groups_held_out,
                "held_out_fingerprint": held_out_fingerprint(self.held_out)}


def held_out_fingerprint(qids: set[str] | list[str]) -> str:
    """The fingerprint of a set of held-out query ids (sorted), to tell whether two runs validated alike."""
    return fingerprint_obj(sorted(qids))


def split_queries(qids: list[str] | set[str], fraction: float, seed: int) -> ValidationSplit:
    """Hold out ``round(fraction * n)`` of the ``n`` distinct ``qids`` (at least 1, at most n - 1), seeded."""
    distinct = sorted(set(qids))
    if len(distinct) < 2:
        raise ConfigError(f"train validation: {len(distinct)} training query(ies); a validation split needs 2 or more")
    n = min(len(distinct) - 1, max(1, math.floor(fraction * len(distinct) + 0.5)))
    held = set(random.Random(seed).sample(distinct, n))
    return ValidationSplit(set(distinct) - held, held, fraction, seed)


def split_scores(scores_dir: Path, out_dir: Path, settings: ValidationSettings
                 ) -> tuple[ValidationSplit, list[ScoredGroup], dict[str, Any]]:
    """Write the training groups of ``scores_dir`` to ``out_dir/scores.jsonl`` and return the split, the
    held-out groups (in file order) and the record for the manifest."""
    split = split_queries([g.qid for g in read_scores(scores_dir)], settings.fraction, settings.seed)
    held: list[ScoredGroup] = []

    def kept():
        for group in read_scores(scores_dir):
            if group.qid in split.held_out:
                held.append(group)
            else:
                yield scored_row(group)

    out_dir.mkdir(parents=True, exist_ok=True)
    train_groups = write_rows(out_dir / "scores.jsonl", kept())
    return split, held, {**split.record(len(held)), "train_groups": train_groups}
