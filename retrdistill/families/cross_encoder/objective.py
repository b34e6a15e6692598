"""The cross-encoder student's training rows and objective.

:class:`CrossEncoderRows` builds the bi-encoder rows (:class:`retrdistill.training.data.ScoredRows`: columns
``query, positive, negative_1..n``, label the teacher's ``n+1`` raw scores, the loss part's label) from each scored
group's positive and ``n`` negatives: its first ``n - deep`` (best-ranked) and its last ``deep`` (deepest-ranked)
candidates, in the group's order.

:class:`CrossEncoderObjective` then lays the rows out as the chosen loss reads them (its ``layout``; see
:mod:`retrdistill.losses.cross_encoder`), in :meth:`~CrossEncoderObjective.extend_labels`, before the dataset is
made:

* ``columns`` (``ce-margin-mse``): as built;
* ``list`` (the listwise losses): ``query``, ``documents`` (the ``n+1`` passages), ``label`` (their scores);
* ``pairs`` (``ce-mse``): one row ``query, passage, label`` per candidate (so ``batch_size`` counts pairs there,
  queries elsewhere).

Counts recorded: ``layout``, ``pairs_per_row``, ``deep_negatives``, what loading the student found (``head``:
``fresh`` or ``checkpoint``, ``parameters``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from retrdistill.errors import ConfigError
from retrdistill.kinds import ScoredGroup
from retrdistill.training.data import ScoredRows, TrainingInputs, TrainingRows
from retrdistill.training.objective import Objective


class CrossEncoderRows:
    """The rows of :class:`ScoredRows`, each group's negatives its best ``n - deep`` and its deepest ``deep``."""

    def __init__(self, deep_negatives: int = 0) -> None:
        self.deep = deep_negatives

    def build(self, inputs: TrainingInputs, *, negatives: int,
              label: Callable[[list[float]], list[float]]) -> TrainingRows:
        if self.deep > negatives:
            raise ConfigError(f"deep_negatives {self.deep} is more than the {negatives} negatives per query")
        rows = ScoredRows().build(_Picking(inputs, negatives, self.deep), negatives=negatives, label=label)
        rows.counts["deep_negatives"] = self.deep
        return rows


class _Picking:
    """``inputs`` whose groups keep, after their positives, the first ``n - deep`` and the last ``deep``
    negatives (a group with fewer than ``n`` negatives is passed on as it is, for the rows builder to skip)."""

    def __init__(self, inputs: TrainingInputs, n: int, deep: int) -> None:
        self._inputs, self._n, self._deep = inputs, n, deep

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inputs, name)

    def groups(self):
        n, deep = self._n, self._deep
        for group in self._inputs.groups():
            p = group.positives
            negatives = len(group.docids) - p
            if deep == 0 or negatives < n:
                yield group
                continue
            keep = list(range(p)) + list(range(p, p + n - deep)) + list(range(len(group.docids) - deep,
                                                                               len(group.docids)))
            yield ScoredGroup(group.qid, group.query, [group.docids[i] for i in keep],
                              [group.scores[i] for i in keep], p)


class CrossEncoderObjective:
    """Builds a cross-encoder student's loss from a cross-encoder loss part (the train stage has refused a loss of
    another family); refuses, on construction, the bi-encoder objective's extras (in-batch negatives, embedding
    distillation, Matryoshka widths, a loss weight other than 1)."""

    def __init__(self, student, loss, settings) -> None:
        refused = [name for name, on in (("in_batch_negatives", settings.in_batch_negatives > 0),
                                         ("embedding_distill", settings.embedding_distill > 0),
                                         ("matryoshka_dims", bool(settings.matryoshka_dims))) if on]
        if refused:
            raise ConfigError(f"{', '.join(refused)}: not available to the cross-encoder student (one score loss "
                              f"over pair logits); leave {'them' if len(refused) > 1 else 'it'} off")
        if settings.loss_weight != 1.0:
            raise ConfigError("loss_weight: the cross-encoder student has one loss; leave loss_weight at 1")
        self.student = student
        self.score_loss = loss

    def inputs(self) -> dict[str, str]:
        return {}

    def extend_labels(self, rows: TrainingRows) -> dict[str, Any]:
        """Lay ``rows`` (bi-encoder columns, label the n+1 scores) out as the loss reads them, in place."""
        layout = self.score_loss.layout
        columns = rows.columns
        width = len(columns["label"][0])
        if layout == "list":
            documents = [list(texts) for texts in zip(*[columns[c] for c in _passage_columns(columns)])]
            rows.columns = {"query": columns["query"], "documents": documents, "label": columns["label"]}
        elif layout == "pairs":
            passages = [list(texts) for texts in zip(*[columns[c] for c in _passage_columns(columns)])]
            out: dict[str, list] = {"query": [], "passage": [], "label": []}
            docids: list[list[str]] = []
            for query, texts, scores, ids in zip(columns["query"], passages, columns["label"], rows.docids):
                for text, score, doc in zip(texts, scores, ids):
                    out["query"].append(query)
                    out["passage"].append(text)
                    out["label"].append(float(score))
                    docids.append([doc])
            rows.columns, rows.docids = out, docids
        return {"layout": layout, "pairs_per_row": 1 if layout == "pairs" else width, "training_rows": len(rows)}

    def build(self, model, rows: TrainingRows) -> Objective:
        return Objective(self.score_loss.build(model), dict(self.student.load_counts), "batch_sampler")


def _passage_columns(columns: dict[str, list]) -> list[str]:
    return ["positive"] + sorted((c for c in columns if c.startswith("negative_")), key=lambda c: int(c.split("_")[1]))
