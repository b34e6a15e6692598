"""Training data: the scored groups of a ``scores`` artefact and the corpus texts, as the trainer's dataset."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrdistill.errors import ConfigError
from retrdistill.kinds import read_scores

log = logging.getLogger(__name__)


@dataclass
class TrainingInputs:
    """Where a training run reads from: the scores folder, the collection and the shared cache folder.

    ``manifest_dir``: the scores artefact whose manifest :meth:`scores_config` reads, when ``scores_dir`` holds
    only part of its groups (the training groups of a validation split); None: ``scores_dir`` itself.
    ``teacher_scale``: how :meth:`groups` rescales the teacher's scores
    (:class:`retrdistill.training.teacher_scale.TeacherScale`; None: as scored).
    """

    scores_dir: Path
    collection_dir: Path
    cache_dir: Path
    manifest_dir: Path | None = None
    teacher_scale: Any = None

    def __post_init__(self) -> None:
        self.scores_dir, self.collection_dir, self.cache_dir = map(Path, (self.scores_dir, self.collection_dir,
                                                                          self.cache_dir))

    @functools.cached_property
    def corpus(self):
        """The collection's corpus (opened once, on first use), overlaid with the generated passages the scores
        carry (:mod:`retrdistill.llm.passages`; training only)."""
        from retrdistill.data.beir import open_collection
        from retrdistill.llm.passages import with_generated

        corpus = open_collection(self.collection_dir, self.cache_dir / "corpora").corpus
        return with_generated(corpus, self.manifest_dir or self.scores_dir)

    @functools.cached_property
    def manifest(self):
        """The scores' manifest (None when there is none), read once."""
        from retrdistill.artefacts import read_manifest

        return read_manifest(self.manifest_dir or self.scores_dir)

    def scores_config(self) -> dict[str, Any]:
        """The config recorded in the scores' manifest (it names the teacher that scored the data)."""
        manifest = self.manifest
        if manifest is None:
            return {}
        # a select (or other derived scores) step records the scoring step's config as counts.scored_by
        return manifest.counts.get("scored_by", manifest.settings or manifest.config)

    def scoring_teacher(self) -> str | None:
        """The fingerprint of the teacher that scored the data, as the score step keyed it (a derived artefact
        carries it as counts.scored_by_teacher); None when the manifest does not record it."""
        manifest = self.manifest
        if manifest is None:
            return None
        return manifest.counts.get("scored_by_teacher") or manifest.inputs.get("teacher")

    def groups(self):
        """The scored groups of ``scores_dir`` (positives first), their teacher scores rescaled by
        ``teacher_scale``. Every training-data builder reads its groups here, so the rescaling is one setting for
        every student."""
        for group in read_scores(self.scores_dir):
            yield group if self.teacher_scale is None else self.teacher_scale.group(group)

    def holding(self, scores_dir: Path) -> "TrainingInputs":
        """The same inputs reading the scored groups of ``scores_dir`` (a subset of this one's), the corpus
        shared (not opened again) and the manifest still this one's."""
        other = TrainingInputs(scores_dir, self.collection_dir, self.cache_dir, self.manifest_dir or self.scores_dir,
                               self.teacher_scale)
        if "corpus" in self.__dict__:
            other.__dict__["corpus"] = self.__dict__["corpus"]
        return other


@dataclass
class TrainingRows:
    """Training rows as columns, with the doc ids behind each row's passages.

    ``columns``: column name -> one value per row, in the order the trainer reads them (the last one,
    ``label``, is the loss's label). ``docids``: per row, the doc ids of its passage columns in column order.
    ``counts``: what the builder records (``rows``, ``groups_skipped``).
    """

    columns: dict[str, list]
    docids: list[list[str]]
    counts: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.docids)

    def dataset(self):
        """The rows as a ``datasets.Dataset``, columns in order."""
        import datasets

        return datasets.Dataset.from_dict(self.columns)


class ScoredRows:
    """One row ``query, positive, negative_1 .. negative_n, label`` per scored group (bi-encoder layout).

    Inputs: the scored groups of ``inputs`` (:meth:`TrainingInputs.groups`: positives first, teacher scores
    rescaled as configured),
    the corpus texts, ``negatives`` (n) and ``label``, which maps the teacher's ``[positive, negative_1..n]``
    scores to the row's label (the loss part's :meth:`~retrdistill.parts.Loss.label`).

    Output: :class:`TrainingRows`; the positive is the group's first, the negatives its first ``n``. Groups
    with no positive or fewer than ``n`` negatives are skipped and counted (``groups_skipped``); no row at
    all is a ConfigError.
    """

    def build(self, inputs: TrainingInputs, *, negatives: int,
              label: Callable[[list[float]], list[float]]) -> TrainingRows:
        corpus = inputs.corpus
        row = corpus.row_index()
        n = negatives
        columns: dict[str, list] = {"query": [], "positive": [], **{f"negative_{i}": [] for i in range(1, n + 1)},
                                    "label": []}
        docids: list[list[str]] = []
        skipped = 0
        for group in inputs.groups():
            if group.positives < 1 or len(group.docids) - group.positives < n:
                skipped += 1
                continue
            ids = [group.docids[0]] + group.docids[group.positives:group.positives + n]
            scores = [group.scores[0]] + group.scores[group.positives:group.positives + n]
            texts = corpus.texts_at([row[d] for d in ids])
            columns["query"].append(group.query)
            columns["positive"].append(texts[0])
            for i, text in enumerate(texts[1:], start=1):
                columns[f"negative_{i}"].append(text)
            columns["label"].append(label(scores))
            docids.append(ids)
        if skipped:
            log.warning("train: skipped %d groups with no positive or fewer than %d negatives", skipped, n)
        if not docids:
            raise ConfigError(f"train: no usable training rows in {inputs.scores_dir} (need a positive and {n} "
                              f"negatives per query)")
        return TrainingRows(columns, docids, {"rows": len(docids), "groups_skipped": skipped})
