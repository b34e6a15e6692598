"""Stage ``train``: a student learns the teacher's scores through sentence-transformers' trainer.

Each scored group becomes one row ``query, positive, negative_1..negative_n, label``; the label is what the
chosen loss expects (teacher margins for Margin-MSE, raw scores for listwise KL). The objective is a weighted
sum over one forward pass per batch (:class:`retrdistill.losses.embedding.DistillationObjective`):

* the score loss, weight ``loss_weight`` (1);
* in-batch negatives (``MultipleNegativesRankingLoss``), weight ``in_batch_negatives`` (0: off);
* embedding distillation, weight ``embedding_distill`` (0: off): distance between the student's and the
  teacher's embeddings of every column, the teacher being the one that scored the data (recorded in the scores'
  manifest) unless ``embedding_options`` names another; the row label then also carries each text's row in the
  teacher tables (see :mod:`retrdistill.losses.embedding`).

``matryoshka_dims`` wraps the objective in ``MatryoshkaLoss`` (the score parts are also trained on the first
``d`` dimensions); ``truncate_dim`` then makes the saved model output only its first ``truncate_dim`` dimensions
(a fixed slicing ``Dense`` module before the final ``Normalize``, so every encoder path honours it).
``save_untrained`` also writes the student as declared, before training: the undistilled baseline of its shape.
The checkpoint is saved under ``model/`` with the manifest.

Options left at their defaults are not part of the stage key, so artefacts trained before they existed stay current.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrdistill import progress, registry
from retrdistill.artefacts import fingerprint_obj
from retrdistill.data.beir import open_collection
from retrdistill.stages.base import StageResult, config_dict, execute, upstream
from retrdistill.errors import ConfigError
from retrdistill.stages.score import read_scores

log = logging.getLogger(__name__)

# Fields added after the first release, with the defaults that reproduce the earlier behaviour; a field at its
# default is left out of the stage key. ``save_untrained`` never changes the trained model, so never counts.
_LATER_DEFAULTS: dict[str, Any] = {
    "loss_weight": 1.0,
    "embedding_distill": 0.0,
    "embedding_options": {},
    "matryoshka_dims": [],
    "truncate_dim": None,
}
_NOT_IN_KEY = ("save_untrained",)


@dataclass
class TrainConfig:
    student: str = "dense"
    options: dict[str, Any] = field(default_factory=dict)
    loss: str = "margin-mse"
    loss_options: dict[str, Any] = field(default_factory=dict)
    in_batch_negatives: float = 0.0  # weight of MultipleNegativesRankingLoss; 0 turns it off
    negatives_per_query: int = 4
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 32
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    seed: int = 13
    loss_weight: float = 1.0  # weight of the score loss; 0 with embedding_distill > 0 distils embeddings only
    embedding_distill: float = 0.0  # weight of embedding-level distillation; 0 turns it off
    embedding_options: dict[str, Any] = field(default_factory=dict)  # distance, teacher, teacher_options
    matryoshka_dims: list[int] = field(default_factory=list)  # also train the score parts at these widths
    truncate_dim: int | None = None  # the saved student outputs its first truncate_dim dimensions
    save_untrained: str | None = None  # folder for the declared student before training (undistilled baseline)

    def __post_init__(self) -> None:
        registry.entry("student", self.student)
        registry.entry("loss", self.loss)
        if self.negatives_per_query < 1:
            raise ValueError("negatives_per_query must be at least 1")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio is a fraction of the training steps in [0, 1), got {self.warmup_ratio}")
        for name in ("in_batch_negatives", "loss_weight", "embedding_distill"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} is a weight and cannot be negative")
        if self.loss_weight == 0 and self.in_batch_negatives == 0 and self.embedding_distill == 0:
            raise ValueError("every loss weight is 0: set loss_weight, in_batch_negatives or embedding_distill")
        self.embedding_settings()  # validates the options now, with the list of known keys on a typo
        if any(not isinstance(d, int) or isinstance(d, bool) or d < 1 for d in self.matryoshka_dims):
            raise ValueError(f"matryoshka_dims must be positive widths, got {self.matryoshka_dims!r}")
        if self.truncate_dim is not None and self.truncate_dim < 1:
            raise ValueError("truncate_dim must be a positive width")
        if self.truncate_dim is not None and self.matryoshka_dims and self.truncate_dim not in self.matryoshka_dims:
            log.warning("truncate_dim %d is not one of matryoshka_dims %s: that width was not trained",
                        self.truncate_dim, self.matryoshka_dims)

    def embedding_settings(self):
        from retrdistill.losses.embedding import EmbeddingDistill

        return registry.make_options(EmbeddingDistill, self.embedding_options, label="embedding_options")

    def key_config(self) -> dict[str, Any]:
        """The config recorded in (and keying) the artefact: later fields only when they differ from their default."""
        config = config_dict(self)
        for name, default in _LATER_DEFAULTS.items():
            if config.get(name) == default:
                config.pop(name)
        for name in _NOT_IN_KEY:
            config.pop(name, None)
        return config


def build_rows(cfg: TrainConfig, scores_dir: str | Path, collection_dir: str | Path, cache_dir: str | Path,
               label_fn) -> tuple[dict[str, list], dict[str, int]]:
    """Training columns from the scored groups; groups with too few negatives are skipped and counted."""
    columns, counts, _ = _rows(cfg, scores_dir, collection_dir, cache_dir, label_fn)
    return columns, counts


def _rows(cfg: TrainConfig, scores_dir: str | Path, collection_dir: str | Path, cache_dir: str | Path,
          label_fn) -> tuple[dict[str, list], dict[str, int], list[list[str]]]:
    """:func:`build_rows` plus each row's doc ids ``[positive, negative_1..n]``."""
    corpus = open_collection(collection_dir, Path(cache_dir) / "corpora").corpus
    row = corpus.row_index()
    n = cfg.negatives_per_query
    columns: dict[str, list] = {"query": [], "positive": [], **{f"negative_{i}": [] for i in range(1, n + 1)}, "label": []}
    docids: list[list[str]] = []
    skipped = 0
    for group in read_scores(scores_dir):
        if group.positives < 1 or len(group.docids) - group.positives < n:
            skipped += 1
            continue
        pos_id, pos_score = group.docids[0], group.scores[0]
        negs = list(zip(group.docids[group.positives:], group.scores[group.positives:]))[:n]
        texts = corpus.texts_at([row[pos_id]] + [row[d] for d, _ in negs])
        columns["query"].append(group.query)
        columns["positive"].append(texts[0])
        for i, text in enumerate(texts[1:], start=1):
            columns[f"negative_{i}"].append(text)
        columns["label"].append(label_fn([pos_score] + [s for _, s in negs]))
        docids.append([pos_id] + [d for d, _ in negs])
    if skipped:
        log.warning("train: skipped %d groups with no positive or fewer than %d negatives", skipped, n)
    return columns, {"rows": len(columns["query"]), "groups_skipped": skipped}, docids


def _embedding_teacher(cfg: TrainConfig, scores_dir: str | Path, collection_dir: str | Path, cache_dir: str | Path):
    from retrdistill.artefacts import read_manifest
    from retrdistill.losses.embedding import teacher_for_embeddings

    corpus = open_collection(collection_dir, Path(cache_dir) / "corpora").corpus
    manifest = read_manifest(scores_dir)
    return teacher_for_embeddings(manifest.config if manifest else {}, cfg.embedding_settings(), corpus, Path(cache_dir))


def _projection_sample(columns: dict[str, list], docids: list[list[str]], tables, size: int, seed: int):
    """Up to ``size`` training texts (half queries, half positives, seeded) and their teacher embeddings."""
    import numpy as np

    picked = random.Random(seed).sample(range(len(docids)), min(len(docids), max(1, size // 2)))
    texts = [columns["query"][i] for i in picked] + [columns["positive"][i] for i in picked]
    targets = np.concatenate([tables.queries[[tables.query_row[columns["query"][i]] for i in picked]],
                              tables.passages[[tables.passage_row[docids[i][0]] for i in picked]]])
    return texts, targets


def truncated(model, dim: int):
    """``model`` followed by a fixed slice to its first ``dim`` output dimensions, then ``Normalize``.

    Equal to sentence-transformers' Matryoshka truncation (keep the first ``dim`` values, re-normalise), but as
    modules in the model, so every encoding path (and the saved folder) gives ``dim``-wide embeddings.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize

    width = model.get_embedding_dimension()
    if dim > width:
        raise ConfigError(f"truncate_dim {dim} is wider than the student's {width}-d embeddings")
    chain = list(model)
    while chain and isinstance(chain[-1], Normalize):
        chain.pop()
    weight = torch.eye(width)[:dim].clone()
    chain += [Dense(width, dim, bias=False, activation_function=None, init_weight=weight), Normalize()]
    out = SentenceTransformer(modules=chain, device=str(model.device))
    out.max_seq_length = model.max_seq_length
    return out


def run_train(cfg: TrainConfig, scores_dir: str | Path, collection_dir: str | Path, out_dir: str | Path, *,
              cache_dir: str | Path, force: bool = False) -> StageResult:
    student = registry.build("student", cfg.student, cfg.options)
    loss_adapter = registry.build("loss", cfg.loss, cfg.loss_options)
    inputs = {"scores": upstream(scores_dir, "score").fingerprint, "student": fingerprint_obj(student.fingerprint())}
    if cfg.save_untrained:
        from retrdistill.students.save import save_student

        save_student(cfg.student, cfg.options, cfg.save_untrained)
    teacher = None
    if cfg.embedding_distill > 0:
        teacher = _embedding_teacher(cfg, scores_dir, collection_dir, cache_dir)
        inputs["embedding_teacher"] = fingerprint_obj(teacher.fingerprint())

    def body(tmp: Path) -> dict[str, Any]:
        import datasets
        import torch
        from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
        from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss, MultipleNegativesRankingLoss
        from transformers import set_seed

        from retrdistill.losses.embedding import DistillationObjective, build_teacher_tables, index_label

        set_seed(cfg.seed)
        random.seed(cfg.seed)
        columns, counts, docids = _rows(cfg, scores_dir, collection_dir, cache_dir, loss_adapter.label)
        if counts["rows"] == 0:
            raise ConfigError(f"train: no usable training rows in {scores_dir} (need a positive and {cfg.negatives_per_query} negatives per query)")
        score_width = len(columns["label"][0])
        tables = None
        if teacher is not None:
            corpus = open_collection(collection_dir, Path(cache_dir) / "corpora").corpus
            tables = build_teacher_tables(teacher, columns["query"], [d for ids in docids for d in ids], corpus,
                                          Path(cache_dir))
            columns["label"] = [label + index_label(tables, q, ids)
                                for label, q, ids in zip(columns["label"], columns["query"], docids)]
            counts["teacher_dim"] = tables.dim
        dataset = datasets.Dataset.from_dict(columns)
        model = student.load()
        parts = [(cfg.loss_weight, loss_adapter.build(model))]
        if cfg.in_batch_negatives > 0:
            parts.append((cfg.in_batch_negatives, MultipleNegativesRankingLoss(model)))
        settings = cfg.embedding_settings()
        objective = DistillationObjective(model, parts, score_width, embedding_weight=cfg.embedding_distill,
                                          tables=tables, distance=settings.distance)
        if tables is not None and settings.projection_init == "least-squares" and tables.dim != model.get_embedding_dimension():
            texts, targets = _projection_sample(columns, docids, tables, settings.projection_sample, cfg.seed)
            counts["projection_fit_cosine"] = objective.fit_projection(texts, targets)
        loss = MatryoshkaLoss(model, objective, cfg.matryoshka_dims) if cfg.matryoshka_dims else objective
        args = SentenceTransformerTrainingArguments(
            output_dir=str(tmp / ".trainer"),
            num_train_epochs=cfg.epochs,
            max_steps=cfg.max_steps,
            per_device_train_batch_size=cfg.batch_size,
            learning_rate=cfg.learning_rate,
            warmup_steps=float(cfg.warmup_ratio),  # transformers 5 reads a float below 1 as a ratio of the steps
            weight_decay=cfg.weight_decay,
            seed=cfg.seed,
            data_seed=cfg.seed,
            save_strategy="no",
            logging_steps=10,
            report_to="none",
            disable_tqdm=not progress.enabled(),
            dataloader_num_workers=0,
            use_cpu=not torch.cuda.is_available(),
            batch_sampler="no_duplicates" if cfg.in_batch_negatives > 0 else "batch_sampler",
        )
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss)
        result = trainer.train()
        if cfg.truncate_dim is not None:
            model = truncated(model, cfg.truncate_dim)
        model.save(str(tmp / "model"))
        import shutil

        shutil.rmtree(tmp / ".trainer", ignore_errors=True)
        history = [h for h in trainer.state.log_history if "loss" in h]
        out = {**counts, "steps": int(result.global_step), "train_loss": float(result.training_loss),
               "first_logged_loss": history[0]["loss"] if history else None,
               "last_logged_loss": history[-1]["loss"] if history else None}
        if len(objective.last_parts) > 1 or cfg.matryoshka_dims:
            out["last_batch_parts"] = objective.last_parts
        if cfg.truncate_dim is not None or cfg.embedding_distill > 0:
            out["dim"] = int(model.get_embedding_dimension())
        return out

    return execute("train", out_dir, cfg.key_config(), inputs, body, force=force)
