"""Running a sentence-transformers trainer: its arguments, no printing, the logged loss curve; truncation.

Imports transformers: import this module where training happens, not at package import."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PrinterCallback, ProgressCallback, TrainerCallback

from retrdistill import progress
from retrdistill.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class FitSettings:
    """The optimisation settings (``TrainConfig``'s fields of the same names)."""

    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 32
    micro_batch_size: int | None = None  # rows per forward pass; gradients accumulated to batch_size (None: one pass)
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    seed: int = 13
    logging_steps: int = 10
    checkpoint_steps: int = 0  # save a resumable checkpoint every N steps (0: none)
    checkpoint_dir: Path | None = None  # where: kept across a killed run, resumed from by the next one


@dataclass
class FitValidation:
    """Validation during a fit: the trainer's ``evaluator`` (returning ``{name: value}``, with a ``history``
    list of its calls), the name the best checkpoint is chosen on, how often (``"epoch"`` or every N steps),
    whether the model is also evaluated before training, and where to keep every evaluated checkpoint
    (``keep_dir``, written by ``save(model, folder)``; None: only the best is kept, as the trained model)."""

    evaluator: Any
    metric: str
    every: str | int = "epoch"
    at_start: bool = False
    keep_dir: Path | None = None
    save: Callable[[Any, Path], None] | None = None


def fit(trainer_classes: tuple[type, type], model, loss, dataset, settings: FitSettings, work_dir: Path, *,
        batch_sampler: str = "batch_sampler", validation: FitValidation | None = None) -> dict[str, Any]:
    """Train ``model`` on ``dataset`` minimising ``loss``, with ``(trainer class, arguments class)``.

    Inputs: any sentence-transformers trainer pair (``SentenceTransformerTrainer`` and its arguments,
    ``SparseEncoderTrainer``, ``CrossEncoderTrainer``); ``work_dir`` holds the trainer's scratch files and is
    removed afterwards. The trainer never prints: transformers' ``PrinterCallback`` and ``ProgressCallback``
    are replaced by :class:`StepBar` (one labelled bar of :mod:`retrdistill.progress`, ``train (dense)`` counting
    steps) and :class:`LogCallback` (the losses logged every ``logging_steps``, rounded), and
    sentence-transformers' model-card bar ("Computing widget examples") is not drawn.

    Output: counts ``steps``, ``train_loss`` (mean over the run), ``first_logged_loss``, ``last_logged_loss``
    and ``loss_curve`` (``[step, loss]`` every ``logging_steps``).

    With ``validation``, the trainer evaluates at the end of every epoch (or every N steps), saves a
    model-only checkpoint each time under ``work_dir`` (at most the best and the latest are kept), and loads
    the best one on ``validation.metric`` at the end (``load_best_model_at_end``), so the epochs are an upper
    bound; the counts gain ``validation`` (:func:`validation_record`). Without it the arguments are exactly
    those of a run without validation.
    """
    import torch

    trainer_cls, args_cls = trainer_classes
    world = world_size()
    if settings.batch_size % world:
        raise ConfigError(f"batch_size {settings.batch_size} is the global batch: it must divide evenly over the "
                          f"{world} processes of this torchrun job")
    per_device, accumulate = settings.batch_size // world, 1
    if settings.micro_batch_size is not None and settings.micro_batch_size < per_device:
        if per_device % settings.micro_batch_size:
            raise ConfigError(f"micro_batch_size {settings.micro_batch_size} must divide the per-process batch "
                              f"{per_device}")
        per_device, accumulate = settings.micro_batch_size, per_device // settings.micro_batch_size
    arguments = dict(
        output_dir=str(work_dir),
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        per_device_train_batch_size=per_device,  # the same global batch on any number of processes
        gradient_accumulation_steps=accumulate,
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
    if world > 1 and not torch.cuda.is_available():
        arguments["ddp_backend"] = "gloo"
    resume = None
    if settings.checkpoint_steps > 0 and validation is None:
        if settings.checkpoint_dir is None:
            raise ConfigError("checkpoint_steps needs a checkpoint folder")
        arguments.update(output_dir=str(settings.checkpoint_dir), save_strategy="steps",
                         save_steps=settings.checkpoint_steps, save_total_limit=2)  # the previous one survives a
        resume = last_checkpoint(settings.checkpoint_dir)  # kill while the next is being written
        if resume is not None:
            log.info("train: resuming from %s", resume)
    from retrdistill.encoding.prompts import column_prompts

    prompts = column_prompts(model, list(getattr(dataset, "column_names", None) or []))
    if prompts:  # the model's own query/passage prompts (E5), prepended by the trainer per column
        arguments["prompts"] = prompts
    extra: dict[str, Any] = {}
    if validation is not None:
        strategy = "epoch" if validation.every == "epoch" else "steps"
        arguments.update(eval_strategy=strategy, save_strategy=strategy, load_best_model_at_end=True,
                         metric_for_best_model=validation.metric, greater_is_better=True, save_only_model=True,
                         save_total_limit=1)
        if strategy == "steps":
            arguments.update(eval_steps=int(validation.every), save_steps=int(validation.every))
        extra["evaluator"] = validation.evaluator
    args = args_cls(**arguments)
    with _model_card_bars_off():
        trainer = trainer_cls(model=model, args=args, train_dataset=dataset, loss=loss, **extra)
    label = f"train ({trainer_kind(trainer_cls)})"
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(StepBar(label))
    trainer.add_callback(LogCallback(label))
    if validation is not None:
        if validation.keep_dir is not None:
            trainer.add_callback(KeepCheckpoints(validation.keep_dir, validation.save))
        if validation.at_start:
            validation.evaluator(model, epoch=0, steps=0)
            if validation.keep_dir is not None:
                validation.save(model, validation.keep_dir / "step-0")
    result = trainer.train(resume_from_checkpoint=resume)
    if world > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()  # every rank is done with the checkpoints before rank 0 removes them
    shutil.rmtree(work_dir, ignore_errors=True)
    history = [h for h in trainer.state.log_history if "loss" in h]
    counts = {"steps": int(result.global_step), "train_loss": float(result.training_loss),
              "first_logged_loss": history[0]["loss"] if history else None,
              "last_logged_loss": history[-1]["loss"] if history else None,
              "loss_curve": [[int(h["step"]), float(h["loss"])] for h in history]}
    if world > 1:
        counts["processes"] = world
    if resume is not None:
        counts["resumed_from_step"] = int(Path(resume).name.rpartition("-")[2])
    if validation is not None:
        counts["validation"] = validation_record(validation, trainer.state, int(result.global_step))
    return counts


def world_size() -> int:
    """How many processes train together (torchrun's ``WORLD_SIZE``; 1 outside torchrun)."""
    import os

    return max(int(os.environ.get("WORLD_SIZE", "1")), 1)


def last_checkpoint(folder: Path) -> str | None:
    """The newest complete trainer checkpoint in ``folder`` (``checkpoint-N`` whose ``trainer_state.json``, the
    trainer's last write, exists: one cut short by a kill is passed over), None when there is none."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    done = [p for p in folder.glob("checkpoint-*") if p.name.rpartition("-")[2].isdigit()
            and (p / "trainer_state.json").is_file()]
    return str(max(done, key=lambda p: int(p.name.rpartition("-")[2]))) if done else None


def validation_record(validation: FitValidation, state, last_step: int) -> dict[str, Any]:
    """What the manifest records: the chosen metric, the whole curve (one point per evaluation: ``step``,
    ``epoch``, every metric's value, seconds), and the kept checkpoint (``best``: its step, epoch and value;
    ``kept``: ``"best"``, or ``"last"`` when no evaluation happened during training)."""
    curve = list(validation.evaluator.history)
    best_step = state.best_global_step if state.best_model_checkpoint is not None else None
    record: dict[str, Any] = {"metric": validation.metric, "every": validation.every, "at_start": validation.at_start,
                              "curve": curve,
                              "last_step": last_step, "kept": "best" if best_step is not None else "last",
                              "seconds": round(sum(p["seconds"] for p in curve), 3)}
    if best_step is None:
        log.warning("train: no validation during training (every %s, %d steps): the last model is kept",
                    validation.every, last_step)
        return record
    point = next((p for p in curve if p["step"] == best_step), None)  # step 0 (at_start) is never a candidate
    record["best"] = {"step": int(best_step), "epoch": point["epoch"] if point else None,
                      "value": float(state.best_metric)}
    start = next((p for p in curve if p["step"] == 0 and validation.metric in p["metrics"]), None)
    if start is not None:
        before = float(start["metrics"][validation.metric])
        record["best"]["above_start"] = float(state.best_metric) > before
        if not record["best"]["above_start"]:
            log.warning("train: no checkpoint beats the starting model on %s (kept %.4f at step %d, %.4f at the "
                        "start): by this label-free signal the training did not help", validation.metric,
                        float(state.best_metric), int(best_step), before)
    return record


class KeepCheckpoints(TrainerCallback):
    """Writes the model at every evaluation to ``folder/step-N`` with ``save(model, path)``."""

    def __init__(self, folder: Path, save: Callable[[Any, Path], None]) -> None:
        self.folder = Path(folder)
        self.save = save

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero and model is not None:
            self.save(model, self.folder / f"step-{state.global_step}")


def trainer_kind(trainer_cls: type) -> str:
    """What a trainer class trains, for labels: ``dense``, ``sparse`` or ``cross-encoder``."""
    names = {c.__name__ for c in trainer_cls.__mro__}
    if "SparseEncoderTrainer" in names:
        return "sparse"
    if "CrossEncoderTrainer" in names:
        return "cross-encoder"
    return "dense"


class _model_card_bars_off:
    """sentence-transformers draws a "Computing widget examples" bar while the trainer is made (for the model
    card): drawn disabled here."""

    def __enter__(self) -> None:
        import functools

        try:
            from sentence_transformers.base import model_card
        except ImportError:  # another layout: nothing to silence
            self.module = None
            return
        self.module, self.tqdm = model_card, getattr(model_card, "tqdm", None)
        if self.tqdm is not None:
            model_card.tqdm = functools.partial(self.tqdm, disable=True)

    def __exit__(self, *exc: object) -> None:
        if self.module is not None and self.tqdm is not None:
            self.module.tqdm = self.tqdm


class StepBar(TrainerCallback):
    """The training steps as one labelled bar of :mod:`retrdistill.progress` (``train (dense)``, unit ``step``),
    with the validation searches nested in it; evaluation batches, if the trainer runs any, as a nested bar."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.training_bar = None
        self.prediction_bar = None
        self.current_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.training_bar = progress.bar(state.max_steps, self.label, "step", initial=state.global_step)
        self.current_step = state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None:
            self.training_bar.update(state.global_step - self.current_step)
        self.current_step = state.global_step

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        if state.is_world_process_zero and eval_dataloader is not None and hasattr(eval_dataloader, "__len__"):
            if self.prediction_bar is None:
                self.prediction_bar = progress.bar(len(eval_dataloader), f"{self.label} evaluate", "batch")
            self.prediction_bar.update(1)

    def _close_prediction(self) -> None:
        if self.prediction_bar is not None:
            self.prediction_bar.close()
        self.prediction_bar = None

    def on_evaluate(self, args, state, control, **kwargs):
        self._close_prediction()

    def on_predict(self, args, state, control, **kwargs):
        self._close_prediction()

    def on_train_end(self, args, state, control, **kwargs):
        self._close_prediction()
        if self.training_bar is not None:
            self.training_bar.close()
        self.training_bar = None


# what the trainer reports that is not worth a log line (the validation metrics, eval_*, are logged by the
# validation evaluator itself)
_UNLOGGED = {"total_flos", "train_samples_per_second", "train_steps_per_second"}


def _rounded(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class LogCallback(TrainerCallback):
    """Logs what the trainer reports, every ``logging_steps``, rounded (never printed): ``train (dense): step
    20/114 (epoch 0.35): loss 0.4127, grad_norm 1.52, learning_rate 2.7e-05``, and the run's summary."""

    def __init__(self, label: str = "train") -> None:
        self.label = label

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not (state.is_local_process_zero and logs):
            return
        if "train_runtime" in logs:  # the run's summary
            log.info("%s: done, %d steps: train_runtime %.1fs, train_loss %s", self.label, state.global_step,
                     logs["train_runtime"], _rounded(logs.get("train_loss")))
            return
        shown = {k: v for k, v in logs.items() if k not in _UNLOGGED and k != "epoch" and not k.startswith("eval_")}
        if not shown:
            log.debug("%s: step %d: %s", self.label, state.global_step,
                      ", ".join(f"{k} {_rounded(v)}" for k, v in logs.items() if k not in _UNLOGGED))
            return
        epoch = f" (epoch {logs['epoch']:.2f})" if isinstance(logs.get("epoch"), (int, float)) else ""
        log.info("%s: step %d/%d%s: %s", self.label, state.global_step, state.max_steps, epoch,
                 ", ".join(f"{k} {_rounded(v)}" for k, v in shown.items()))


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
