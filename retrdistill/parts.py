"""The contract of every registered part, one abstract base per kind.

A part is built from an ``Options`` dataclass (validated by :func:`retrdistill.registry.make_options`) and the
context its stage hands it (the corpus, the cache folder). :class:`Part` holds what every part shares, so a
new part declares only its ``Options``, the context it ``needs`` and the methods of its kind:

    class MyMiner(Miner):
        @dataclass
        class Options:
            depth_boost: int = 2

        needs = ("corpus", "cache_dir")

        def fingerprint(self) -> dict: ...
        def search(self, queries, depth): ...

Every part's :meth:`Part.fingerprint` says what determines its output (weights by content hash, every option
that changes output, the corpus where it reads one), so stages key their artefacts and caches on it.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

Hits = dict[str, list[tuple[str, float]]]  # query id -> [(doc id, score)], best first
Run = dict[str, dict[str, float]]  # query id -> {doc id: score}


@dataclass
class NoOptions:
    """The options of a part that takes none."""


class Part(ABC):
    """What every registered part shares: its options, the context it needs, its fingerprint.

    ``needs`` names the context keys the part reads (``corpus``, ``cache_dir``, ...); each becomes an attribute.
    Context a part does not need is ignored, so a stage may offer the same context to every part of a kind.
    Construction work that follows from the options goes in :meth:`setup`, not in ``__init__``.
    """

    Options: ClassVar[type] = NoOptions
    needs: ClassVar[tuple[str, ...]] = ()
    # options that do not change what fingerprint() covers (e.g. ``batch_size``): left out of the fingerprint
    output_neutral: ClassVar[tuple[str, ...]] = ()
    # for the contract tests (tests/test_parts_contract.py): the minimal options a part needs to be built, and
    # another valid value for options whose type gives no generic one. Strings may name test fixtures as
    # ``{fixture}`` (``{minilm}``, ``{small_collection}/queries.jsonl``).
    example_options: ClassVar[dict[str, Any]] = {}
    example_variants: ClassVar[dict[str, Any]] = {}

    def __init__(self, options: Any = None, *args: Any, **context: Any) -> None:
        """``options``: an instance of ``Options`` (None: the defaults); context by keyword, or positionally in
        the order of ``needs``."""
        if len(args) > len(self.needs):
            raise TypeError(f"{type(self).__name__} takes {len(self.needs)} context values, got {len(args)}")
        context = {**dict(zip(self.needs, args)), **context}
        self.options = options if options is not None else self.Options()
        missing = [name for name in self.needs if context.get(name) is None]
        if missing:
            raise TypeError(f"{type(self).__name__} needs {', '.join(missing)} to be built")
        for name in self.needs:
            value = context[name]
            setattr(self, name, Path(value) if name.endswith("_dir") else value)
        self.setup()

    @classmethod
    def from_options(cls, options: Any, **context: Any) -> "Part":
        return cls(options, **context)

    def setup(self) -> None:
        """Derived state built once from the options (settings objects, lazily loaded models)."""

    def options_dict(self) -> dict[str, Any]:
        """Every option as a JSON-able dict."""
        return dataclasses.asdict(self.options) if dataclasses.is_dataclass(self.options) else {}

    def output_options(self) -> dict[str, Any]:
        """The options that change output: :meth:`options_dict` less ``output_neutral``."""
        return {k: v for k, v in self.options_dict().items() if k not in self.output_neutral}

    @abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """What determines this part's output: JSON-able, stable across processes, changed by any option that
        changes output (models by content hash, not by path)."""


class QuerySource(Part):
    """Writes the training queries and their positives (artefact kind ``queries``)."""

    @abstractmethod
    def generate(self, collection) -> Any:  # -> retrdistill.data.pseudo_queries.TrainingQueries
        ...

    def input_files(self) -> list[Path]:
        """Files outside the collection that the queries come from (fingerprinted as inputs)."""
        return []


class Miner(Part):
    """Ranks the corpus for each training query (feeds artefact kind ``candidates``)."""

    needs = ("corpus", "cache_dir")

    @abstractmethod
    def search(self, queries: dict[str, str], depth: int) -> Hits:
        """The top ``depth`` passages per query, best first."""


class Teacher(Part):
    """Scores (query, passage) pairs (artefact kind ``scores``) and can retrieve as its own leaderboard row."""

    needs = ("corpus", "cache_dir")

    @abstractmethod
    def score_groups(self, queries: dict[str, str], groups: dict[str, list[str]]) -> dict[str, np.ndarray]:
        """One score per doc id of each query's group, in the group's order."""

    @abstractmethod
    def retrieve(self, queries: dict[str, str], k: int, **kwargs: Any) -> Run:
        """The teacher as a retriever (bi-encoders search, cross-encoders re-rank a first stage)."""


class Loss(Part):
    """A score-distillation loss: the label it needs from the teacher's scores, and the torch loss module."""

    def fingerprint(self) -> dict[str, Any]:
        return {"loss": type(self).__name__, "options": self.output_options()}

    @staticmethod
    @abstractmethod
    def label(teacher_scores: list[float]) -> list[float]:
        """The row label from the teacher's ``[positive, negative_1..n]`` scores."""

    @abstractmethod
    def build(self, model) -> Any:
        """The sentence-transformers loss module for ``model``."""


class Student(Part):
    """The model being trained (artefact kind ``student``): how it is loaded, trained and saved.

    The train stage only wires what the student names: the builder of its training rows, the builder of its
    objective, the trainer that runs them, and how the trained model is cut and saved. The defaults are a
    sentence-transformers bi-encoder's (``SentenceTransformer``, ``SentenceTransformerTrainer``, rows
    ``query, positive, negative_1..n, label``); a student of another family (a SPLADE ``SparseEncoder``, a
    ``CrossEncoder``) overrides them with its own trainer, rows and objective.
    """

    @abstractmethod
    def load(self) -> Any:
        """The untrained student model, as declared (a sentence-transformers model)."""

    def trainer_classes(self) -> tuple[type, type]:
        """``(trainer class, training-arguments class)`` of sentence-transformers that train this student."""
        from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

        return SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    def training_data(self) -> Any:
        """The builder of the trainer's dataset from the scored groups (see :mod:`retrdistill.training.data`)."""
        from retrdistill.training.data import ScoredRows

        return ScoredRows()

    def objective(self, loss: "Loss", settings: Any, inputs: Any) -> Any:
        """The builder of the loss module (see :mod:`retrdistill.training.objective`) from the score ``loss``
        part, the stage's ``ObjectiveSettings`` and its ``TrainingInputs``."""
        from retrdistill.training.objective import DistillObjective

        return DistillObjective(loss, settings, inputs)

    def truncate(self, model: Any, dim: int) -> Any:
        """``model`` outputting only its first ``dim`` dimensions (``truncate_dim``)."""
        from retrdistill.training.fit import truncated

        return truncated(model, dim)

    def save(self, model: Any, folder: Path) -> None:
        """Write ``model`` as a folder that loads on its own (``model.save``)."""
        model.save(str(folder))


class Indexer(Part):
    """Builds a searchable index of corpus embeddings (artefact kind ``index``), saves and loads it.

    An index folder records the registered name of the indexer that wrote it (``index.json``), and is loaded
    through that indexer again.
    """

    index_file: ClassVar[str] = "index.faiss"

    def fingerprint(self) -> dict[str, Any]:
        return {"indexer": type(self).__name__, "options": self.output_options()}

    @abstractmethod
    def build(self, embeddings: np.ndarray) -> Any:
        """An index of ``embeddings`` (float32 ``(n, dim)``, row i = corpus row i), in memory, ready to search."""

    @abstractmethod
    def save(self, index: Any, folder: Path) -> None:
        """Write ``index`` into ``folder`` (atomically; the folder's other files are the stage's)."""

    @abstractmethod
    def load(self, folder: Path) -> Any:
        """The saved index, ready to search (on the GPU where the indexer puts it there)."""

    @abstractmethod
    def search(self, index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, rows)`` of the top ``k`` per query row; rows of -1 where fewer exist."""

    def index_bytes(self, folder: Path) -> int:
        """Size on disk of the index saved in ``folder``."""
        return int((Path(folder) / self.index_file).stat().st_size)


class EvalSystem(Part):
    """One leaderboard row: a run over the evaluation queries and its cost, measured in the same call."""

    @abstractmethod
    def input_fingerprint(self) -> str:
        """What identifies this system's output before it runs (model contents, index manifest, run file)."""

    def combines(self) -> list[str]:
        """Names of earlier systems of the same evaluation this one is made from (fusion); none by default.
        Each must be listed before it; its output then reaches :meth:`run` in ``earlier``."""
        return []

    @abstractmethod
    def run(self, corpus, queries: dict[str, str], k: int, cache_dir: Path, measure_cost: bool,
            earlier: dict[str, Any] | None = None) -> Any:  # -> retrdistill.systems.SystemOutput
        """Retrieve the top ``k`` of ``corpus`` for each of ``queries`` (id -> text) and measure the cost
        (``measure_cost``: also the passage-encoding rate); ``cache_dir`` holds shared caches (embeddings,
        BM25); ``earlier``: system name -> output of the systems listed before this one."""

    def fingerprint(self) -> dict[str, Any]:
        return {"system": type(self).__name__, "input": self.input_fingerprint()}


KIND_BASES: dict[str, type[Part]] = {
    "query_generator": QuerySource,
    "miner": Miner,
    "teacher": Teacher,
    "loss": Loss,
    "student": Student,
    "indexer": Indexer,
    "system": EvalSystem,
}
