"""Embedding-level distillation beside score distillation, in one loss that embeds each batch once.

The student learns where the teacher puts each text (EmbedDistill: MSE, L2 or cosine distance between the
student's and the teacher's embeddings, through sentence-transformers' ``EmbedDistillLoss``, whose learned
projection maps the student's width onto the teacher's when they differ) as well as how the teacher ranks
candidates (Margin-MSE or listwise KL on the teacher's scores, optionally in-batch negatives).

Labels. The training rows are ``query, positive, negative_1 .. negative_n``; each row's ``label`` is the score
loss's label (``k`` numbers: ``n`` margins for Margin-MSE, ``n + 1`` scores for listwise KL) followed, when the
embedding part is on, by ``n + 2`` row numbers into the teacher tables: the query's row in the query table, then
each passage's row in the passage table. In-batch distillation (weight ``in_batch_distill``) reads the same
tables: the teacher prices every query of a batch against every passage of the batch. The tables live on the
loss (buffers, never trained or saved), so the dataset stays small whatever the teacher's width. Row numbers travel as float32 labels, exact below 2**24 rows.

The train stage reaches this module only through its objective builder,
:class:`retrdistill.training.objective.DistillObjective`.

Teacher embeddings. Passages come from the teacher's cached corpus embeddings (the ones scoring used; nothing
is re-encoded); training queries are encoded with the teacher once (short texts) and cached by content.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from retrdistill.artefacts import atomic_path, fingerprint_obj
from retrdistill.errors import ConfigError

log = logging.getLogger(__name__)
DISTANCES = ("mse", "l2", "cosine")


@dataclass
class EmbeddingOptions:
    """``TrainConfig.embedding_options``. The teacher defaults to the one recorded in the scores' manifest."""

    distance: str = "mse"  # mse (per element), l2 (euclidean per text) or cosine (1 - cos)
    teacher: str | None = None  # a registered bi-encoder teacher; None: the teacher that scored the data
    teacher_options: dict[str, Any] = field(default_factory=dict, metadata={
        "part": {"kind": "teacher", "name": "teacher"}})
    projection_init: str = "least-squares"  # or "random"; used only when the widths differ
    # training texts the least-squares start is fitted on
    projection_sample: int = field(default=1024, metadata={"min": 1})

    def __post_init__(self) -> None:
        if self.distance not in DISTANCES:
            raise ValueError(f"distance must be one of {', '.join(DISTANCES)}, got {self.distance!r}")
        if self.projection_init not in ("least-squares", "random"):
            raise ValueError(f"projection_init must be 'least-squares' or 'random', got {self.projection_init!r}")
        if self.projection_sample < 1:
            raise ValueError("projection_sample must be positive")
        if self.teacher_options and self.teacher is None:
            raise ValueError("teacher_options needs teacher (the scores' own teacher takes its recorded options)")


class EmbeddingDistill:
    """What ``TrainConfig.embedding_options`` is validated against (registry.make_options)."""

    Options = EmbeddingOptions


@dataclass
class TeacherTables:
    """Teacher embeddings of the training queries and passages, and the row of each text in them."""

    queries: np.ndarray  # (Q, D) float32
    passages: np.ndarray  # (P, D) float32
    query_row: dict[str, int]  # query text -> row
    passage_row: dict[str, int]  # doc id -> row

    @property
    def dim(self) -> int:
        return int(self.queries.shape[1])


def teacher_for_embeddings(scores_manifest_config: dict[str, Any], options: EmbeddingOptions, corpus, cache_dir: Path,
                           *, scored_by: str | None = None):
    """The bi-encoder teacher whose embeddings the student imitates (by default the one that scored the data).

    ``scored_by``: the fingerprint the score step recorded for its teacher. The default teacher is rebuilt from the
    options the scores' manifest recorded; when those now resolve to another teacher (a teacher choice they name
    was rerun, or the workdir was copied and they name the old folder), it is refused rather than mixed with
    scores it did not give."""
    from retrdistill import registry
    from retrdistill.artefacts import fingerprint_obj

    name = options.teacher or scores_manifest_config.get("teacher")
    teacher_options = options.teacher_options if options.teacher else scores_manifest_config.get("options", {})
    if not name:
        raise ConfigError("embedding distillation: the scores manifest names no teacher; set embedding_options.teacher")
    teacher = registry.build("teacher", name, teacher_options, corpus=corpus, cache_dir=Path(cache_dir)).resolved()
    if not (hasattr(teacher, "encode_queries") and hasattr(teacher, "corpus_embeddings")):
        raise ConfigError(
            f"embedding distillation needs a bi-encoder teacher (embeddings to imitate); the scores come from "
            f"{name!r}. Set embedding_options.teacher: bi-encoder and embedding_options.teacher_options.model"
        )
    if not options.teacher and scored_by and fingerprint_obj(teacher.fingerprint()) != scored_by:
        raise ConfigError(
            f"embedding distillation: the scores' manifest names teacher {name!r} with options {teacher_options}, "
            f"which now give another teacher than the one that scored them (fingerprint "
            f"{fingerprint_obj(teacher.fingerprint())[:12]}, scored by {scored_by[:12]}): something they read (a "
            f"teacher choice, a model folder) changed or moved since. Rerun the score step, or name the embedding "
            f"teacher in embedding_options.teacher / teacher_options"
        )
    return teacher


def build_teacher_tables(teacher, queries: list[str], docids: list[str], corpus, cache_dir: Path) -> TeacherTables:
    """Teacher embeddings for the distinct ``queries`` (encoded, cached) and ``docids`` (from the corpus cache)."""
    query_list = list(dict.fromkeys(queries))
    doc_list = list(dict.fromkeys(docids))
    q_emb = _cached_query_embeddings(teacher, query_list, Path(cache_dir))
    row = corpus.row_index()
    rows = np.array([row[d] for d in doc_list], dtype=np.int64)
    if getattr(teacher.options, "encode_corpus", True):
        from retrdistill.llm.passages import stored_or_encoded

        store = teacher.corpus_embeddings()
        order = np.argsort(rows)  # sorted reads from the memory map, then back to doc_list order
        p_emb = np.empty((len(rows), store.embeddings.shape[1]), dtype=np.float32)
        p_emb[order] = stored_or_encoded(store.embeddings, rows[order], corpus, _passage_encoder(teacher))
    else:
        from retrdistill.encoding.corpus import should_normalize
        from retrdistill.encoding.engine import encode_texts

        log.info("teacher tables: encoding %d training passages with the teacher", len(doc_list))
        p_emb = encode_texts(teacher.model, corpus.texts_at(rows.tolist()), batch_size=teacher.options.batch_size,
                             normalize=should_normalize(teacher.model))
    if p_emb.shape[1] != q_emb.shape[1]:
        raise ConfigError(f"teacher query ({q_emb.shape[1]}-d) and passage ({p_emb.shape[1]}-d) embeddings differ in width")
    return TeacherTables(np.ascontiguousarray(q_emb, dtype=np.float32), np.ascontiguousarray(p_emb, dtype=np.float32),
                         {q: i for i, q in enumerate(query_list)}, {d: i for i, d in enumerate(doc_list)})


def _passage_encoder(teacher):
    """Encodes generated (training-only) passages, which the corpus's cached embeddings do not hold."""
    from retrdistill.encoding.corpus import should_normalize
    from retrdistill.encoding.engine import encode_texts
    from retrdistill.encoding.prompts import prompted

    return lambda texts: encode_texts(teacher.model, prompted(teacher.model, texts, "document"),
                                      batch_size=teacher.options.batch_size, normalize=should_normalize(teacher.model))


def _cached_query_embeddings(teacher, texts: list[str], cache_dir: Path) -> np.ndarray:
    key = fingerprint_obj({"teacher": teacher.fingerprint(), "texts": texts, "kind": "query-embeddings-v1"})
    path = cache_dir / "query-embeddings" / f"{key[:24]}.npy"
    if path.is_file():
        return np.load(path)
    log.info("teacher tables: encoding %d training queries with the teacher", len(texts))
    emb = np.asarray(teacher.encode_queries(texts), dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, emb)
    return emb


def index_label(tables: TeacherTables, query: str, docids: list[str]) -> list[float]:
    """The trailing label part of one row: its query's and passages' rows in the teacher tables."""
    return [float(tables.query_row[query])] + [float(tables.passage_row[d]) for d in docids]


class DistillationObjective(nn.Module):
    """Weighted score-distillation parts plus optional embedding and in-batch distillation parts, over one shared
    forward pass.

    ``score_parts``: ``(weight, loss)`` pairs of sentence-transformers losses with ``compute_loss_from_embeddings``
    (e.g. ``MarginMSELoss``, ``DistillKLDivLoss``, ``MultipleNegativesRankingLoss``); each receives the first
    ``score_label_width`` label columns. ``embedding_weight`` > 0 or ``in_batch_weight`` > 0 needs ``tables``;
    those parts read the remaining label columns (see the module docstring). Under ``MatryoshkaLoss`` the
    embedding and in-batch parts apply at the student's full width only, the score parts at every width.
    """

    def __init__(self, model, score_parts: list[tuple[float, nn.Module]], score_label_width: int, *,
                 embedding_weight: float = 0.0, tables: TeacherTables | None = None, distance: str = "mse",
                 in_batch_weight: float = 0.0, in_batch_temperature: float = 0.05) -> None:
        super().__init__()
        from sentence_transformers.sentence_transformer.losses import EmbedDistillLoss

        self.model = model
        self.score_weights = [w for w, _ in score_parts]
        self.score_parts = nn.ModuleList([loss for _, loss in score_parts])
        self.score_label_width = score_label_width
        self.embedding_weight = embedding_weight
        self.in_batch_weight = in_batch_weight
        self.in_batch_temperature = in_batch_temperature
        self.student_dim = model.get_embedding_dimension()
        self.embedding = None
        if (embedding_weight > 0 or in_batch_weight > 0) and tables is None:
            raise ValueError("embedding distillation and in-batch distillation need the teacher tables")
        if tables is not None:
            self.register_buffer("teacher_queries", torch.from_numpy(tables.queries), persistent=False)
            self.register_buffer("teacher_passages", torch.from_numpy(tables.passages), persistent=False)
        if embedding_weight > 0:
            projection = tables.dim if tables.dim != self.student_dim else None
            self.embedding = EmbedDistillLoss(model, distance_metric=distance, projection_dim=projection)
        self.last_parts: dict[str, float] = {}

    @torch.no_grad()
    def fit_projection(self, texts: list[str], targets: np.ndarray, *, ridge: float = 1e-3) -> float | None:
        """Start the student -> teacher projection at the ridge least-squares map from the student's current
        embeddings of ``texts`` to the teacher's ``targets``, so that from the first step the embedding part
        pulls the student towards the teacher rather than towards a random projection of it. Returns the mean
        cosine between projected student and teacher embeddings after the fit (None without a projection)."""
        from retrdistill.encoding.engine import encode_texts

        projection = self.embedding.projection if self.embedding is not None else None
        if projection is None:
            return None
        was_training = self.model.training
        self.model.eval()
        x = torch.from_numpy(encode_texts(self.model, texts, batch_size=32)).double()
        self.model.train(was_training)
        y = torch.from_numpy(np.asarray(targets, dtype=np.float64))
        x1 = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)  # bias column
        gram = x1.T @ x1 + ridge * len(x) * torch.eye(x1.shape[1], dtype=x.dtype)
        solution = torch.linalg.solve(gram, x1.T @ y)  # (student_dim + 1, teacher_dim)
        projection.weight.copy_(solution[:-1].T.to(projection.weight))
        projection.bias.copy_(solution[-1].to(projection.bias))
        fitted = torch.nn.functional.cosine_similarity(x1 @ solution, y, dim=-1).mean()
        return float(fitted)

    def forward(self, sentence_features, labels: torch.Tensor) -> torch.Tensor:
        from sentence_transformers.base.losses.merged_forward import embed_columns

        embeddings = embed_columns(self.model, sentence_features)
        width = embeddings[0].shape[-1]
        full = width == self.student_dim
        suffix = "" if full else f"@{width}"  # a Matryoshka width below the full one
        if full:
            self.last_parts = {}
        score_labels = labels[:, : self.score_label_width]
        total = embeddings[0].new_zeros(())
        for weight, part in zip(self.score_weights, self.score_parts):
            if weight > 0:
                value = part.compute_loss_from_embeddings(embeddings, score_labels)
                self.last_parts[type(part).__name__ + suffix] = float(value.detach())
                total = total + weight * value
        if (self.embedding is not None or self.in_batch_weight > 0) and full:
            rows = labels[:, self.score_label_width:].round().long().cpu()
            if rows.shape[1] != len(embeddings):
                raise ValueError(f"expected {len(embeddings)} teacher rows per label, got {rows.shape[1]}")
            if self.embedding is not None:
                targets = [self.teacher_queries[rows[:, 0]]] + [self.teacher_passages[rows[:, j]]
                                                                for j in range(1, rows.shape[1])]
                value = self.embedding.compute_loss_from_embeddings(embeddings, targets)
                self.last_parts["embedding"] = float(value.detach())
                total = total + self.embedding_weight * value
            if self.in_batch_weight > 0:
                value = self.in_batch_kl(embeddings, rows)
                self.last_parts["in_batch_distill"] = float(value.detach())
                total = total + self.in_batch_weight * value
        return total

    def in_batch_kl(self, embeddings: list[torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
        """In-batch distillation (as in TCT-ColBERT): each query of the batch against EVERY passage of the batch
        (its own candidates and every other row's), KL(teacher softmax || student softmax) at
        ``in_batch_temperature``, times its square (the convention of ``DistillKLDivLoss``), mean over queries.

        Student scores: the student's own similarity function (cosine for normalised students); teacher scores:
        inner products of the teacher's table rows (cosine for normalised teachers). The group losses only
        order a query's mined candidates; this term also keeps the student's scores comparable ACROSS queries'
        candidates, i.e. its ranking of the whole corpus, which the teacher's embeddings can price for free.
        """
        t = self.in_batch_temperature
        passages = torch.cat(embeddings[1:], dim=0)  # column-major: every row's positive, then negative_1, ...
        passage_rows = rows[:, 1:].T.reshape(-1)
        student = self.model.similarity(embeddings[0], passages) / t
        teacher = (self.teacher_queries[rows[:, 0]] @ self.teacher_passages[passage_rows].T).to(student) / t
        kl = torch.nn.functional.kl_div(torch.log_softmax(student, dim=1), torch.softmax(teacher, dim=1),
                                        reduction="batchmean")
        return kl * t * t

    def get_config_dict(self) -> dict[str, Any]:
        return {"score_parts": [[w, type(p).__name__] for w, p in zip(self.score_weights, self.score_parts)],
                "embedding_weight": self.embedding_weight,
                "in_batch_weight": self.in_batch_weight, "in_batch_temperature": self.in_batch_temperature,
                "distance": self.embedding.distance_metric if self.embedding is not None else None}
