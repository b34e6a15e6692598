"""Stage ``train``: a student learns the teacher's scores through sentence-transformers' trainer.

Each scored group becomes one row ``query, positive, negative_1..negative_n, label``; the label is what the
chosen loss expects (teacher margins for Margin-MSE, raw scores for listwise KL). Optional in-batch negatives
add ``MultipleNegativesRankingLoss`` with a weight. The checkpoint is saved under ``model/`` with the manifest.
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
from retrdistill.stages.score import read_scores

log = logging.getLogger(__name__)


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

    def __post_init__(self) -> None:
        registry.entry("student", self.student)
        registry.entry("loss", self.loss)
        if self.negatives_per_query < 1:
            raise ValueError("negatives_per_query must be at least 1")
        if self.in_batch_negatives < 0:
            raise ValueError("in_batch_negatives is a weight and cannot be negative")


def build_rows(cfg: TrainConfig, scores_dir: str | Path, collection_dir: str | Path, cache_dir: str | Path,
               label_fn) -> tuple[dict[str, list], dict[str, int]]:
    """Training columns from the scored groups; groups with too few negatives are skipped and counted."""
    corpus = open_collection(collection_dir, Path(cache_dir) / "corpora").corpus
    row = corpus.row_index()
    n = cfg.negatives_per_query
    columns: dict[str, list] = {"query": [], "positive": [], **{f"negative_{i}": [] for i in range(1, n + 1)}, "label": []}
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
    if skipped:
        log.warning("train: skipped %d groups with no positive or fewer than %d negatives", skipped, n)
    return columns, {"rows": len(columns["query"]), "groups_skipped": skipped}


def run_train(cfg: TrainConfig, scores_dir: str | Path, collection_dir: str | Path, out_dir: str | Path, *,
              cache_dir: str | Path, force: bool = False) -> StageResult:
    student = registry.build("student", cfg.student, cfg.options)
    loss_adapter = registry.build("loss", cfg.loss, cfg.loss_options)
    inputs = {"scores": upstream(scores_dir, "score").fingerprint, "student": fingerprint_obj(student.fingerprint())}

    def body(tmp: Path) -> dict[str, Any]:
        import datasets
        import torch
        from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
        from transformers import set_seed

        from retrdistill.losses.distill import WeightedSum

        set_seed(cfg.seed)
        random.seed(cfg.seed)
        columns, counts = build_rows(cfg, scores_dir, collection_dir, cache_dir, loss_adapter.label)
        if counts["rows"] == 0:
            from retrdistill.errors import ConfigError

            raise ConfigError(f"train: no usable training rows in {scores_dir} (need a positive and {cfg.negatives_per_query} negatives per query)")
        dataset = datasets.Dataset.from_dict(columns)
        model = student.load()
        loss = loss_adapter.build(model)
        if cfg.in_batch_negatives > 0:
            loss = WeightedSum(model, [(1.0, loss), (cfg.in_batch_negatives, MultipleNegativesRankingLoss(model))])
        args = SentenceTransformerTrainingArguments(
            output_dir=str(tmp / ".trainer"),
            num_train_epochs=cfg.epochs,
            max_steps=cfg.max_steps,
            per_device_train_batch_size=cfg.batch_size,
            learning_rate=cfg.learning_rate,
            warmup_ratio=cfg.warmup_ratio,
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
        model.save(str(tmp / "model"))
        import shutil

        shutil.rmtree(tmp / ".trainer", ignore_errors=True)
        history = [h for h in trainer.state.log_history if "loss" in h]
        return {**counts, "steps": int(result.global_step), "train_loss": float(result.training_loss),
                "first_logged_loss": history[0]["loss"] if history else None,
                "last_logged_loss": history[-1]["loss"] if history else None}

    return execute("train", out_dir, config_dict(cfg), inputs, body, force=force)
