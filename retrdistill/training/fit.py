"""Running a sentence-transformers trainer: its arguments, no printing, the logged loss curve; truncation.

Imports transformers: import this module where training happens, not at package import."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PrinterCallback, TrainerCallback

from retrdistill import progress
from retrdistill.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class FitSettings:
    """The optimisation settings (``TrainConfig``'s fields of the same names)."""

    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 32
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    seed: int = 13
    logging_steps: int = 10


def fit(trainer_classes: tuple[type, type], model, loss, dataset, settings: FitSettings, work_dir: Path, *,
        batch_sampler: str = "batch_sampler") -> dict[str, Any]:
    """Train ``model`` on ``dataset`` minimising ``loss``, with ``(trainer class, arguments class)``.

    Inputs: any sentence-transformers trainer pair (``SentenceTransformerTrainer`` and its arguments,
    ``SparseEncoderTrainer``, ``CrossEncoderTrainer``); ``work_dir`` holds the trainer's scratch files and is
    removed afterwards. The trainer never prints: transformers' ``PrinterCallback`` (used when progress bars
    are off) is replaced by one that logs through :mod:`logging`.

    Output: counts ``steps``, ``train_loss`` (mean over the run), ``first_logged_loss``, ``last_logged_loss``
    and ``loss_curve`` (``[step, loss]`` every ``logging_steps``).
    """
    import torch

    trainer_cls, args_cls = trainer_classes
    args = args_cls(
        output_dir=str(work_dir),
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        warmup_steps=float(settings.warmup_ratio),  # transformers 5 reads a float below 1 as a ratio of the steps
        weight_decay=settings.weight_decay,
        seed=settings.seed,
        data_seed=settings.seed,
        save_strategy="no",
        logging_steps=settings.logging_steps,
        report_to="none",
        disable_tqdm=not progress.enabled(),
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
        batch_sampler=batch_sampler,
    )
    trainer = trainer_cls(model=model, args=args, train_dataset=dataset, loss=loss)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(LogCallback())
    result = trainer.train()
    shutil.rmtree(work_dir, ignore_errors=True)
    history = [h for h in trainer.state.log_history if "loss" in h]
    return {"steps": int(result.global_step), "train_loss": float(result.training_loss),
            "first_logged_loss": history[0]["loss"] if history else None,
            "last_logged_loss": history[-1]["loss"] if history else None,
            "loss_curve": [[int(h["step"]), float(h["loss"])] for h in history]}


class LogCallback(TrainerCallback):
    """Logs what the trainer reports (the losses, the run's summary) instead of printing it."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_local_process_zero and logs:
            log.info("train: step %d: %s", state.global_step, {k: v for k, v in logs.items() if k != "total_flos"})


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
