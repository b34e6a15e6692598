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
    # options an option's variant is only valid or read with (e.g. a client's options need the client named):
    # the contract test sets them on both sides of that comparison
    variant_companions: ClassVar[dict[str, dict[str, Any]]] = {}
    # the name the registry built it under (set by retrdistill.registry.build; None when built directly)
    registered_name: str | None = None

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
    def generate(self, collection) -> Any:  # -> retrdistill.kinds.TrainingQueries
        ...

    def input_files(self) -> list[Path]:
        """Files outside the collection that the queries come from (fingerprinted as inputs)."""
        return []

    def counts(self) -> dict[str, int]:
        """What the last :meth:`generate` kept and dropped (recorded in the manifest); none by default."""
        return {}

    # a cheap source whose generate always gives the same output: a shard generates it all and keeps its slice
    deterministic: ClassVar[bool] = False

    def shard(self, collection, shard) -> Any:  # shard: retrdistill.shards.Shard -> TrainingQueries
        """Shard ``I/N``'s part of :meth:`generate`'s output, such that :meth:`combine` of the N parts in shard
        order gives that output exactly. By default a :attr:`deterministic` source generates everything and
        keeps the shard's contiguous range of queries; a source whose work is worth splitting overrides this;
        any other source refuses."""
        from retrdistill.kinds import TrainingQueries
        from retrdistill.errors import ConfigError

        if not self.deterministic:
            raise ConfigError(f"query source {type(self).__name__}: cannot be sharded (its output is not known to "
                              f"be the same run after run, so shards would not add up); run it without shard")
        train = self.generate(collection)
        rows = shard.rows(len(train.queries))
        qids = list(train.queries)[rows.start:rows.stop]
        return TrainingQueries({q: train.queries[q] for q in qids}, {q: train.positives[q] for q in qids})

    def combine(self, collection, parts: list[Any]) -> Any:  # -> TrainingQueries
        """The N parts written by :meth:`shard`, in shard order, as :meth:`generate` writes them (concatenated
        here; a source with whole-set rules, e.g. deduplication, applies them). ``collection`` may be None
        where the merge was given none; a source that needs it says so."""
        from retrdistill.kinds import TrainingQueries

        queries, positives = {}, {}
        for part in parts:
            queries.update(part.queries)
            positives.update(part.positives)
        return TrainingQueries(queries, positives)


class Miner(Part):
    """Ranks the corpus for each training query (feeds artefact kind ``candidates``)."""

    needs = ("corpus", "cache_dir")

    @abstractmethod
    def search(self, queries: dict[str, str], depth: int) -> Hits:
        """The top ``depth`` passages per query, best first."""

    def stats(self) -> dict[str, Any]:
        """Counts of the work done so far (e.g. pairs a re-ranking teacher scored), recorded in the manifest."""
        return {}

    def generated_passages(self) -> dict[str, str]:
        """Passages this miner wrote rather than found (id -> text, ids unlike any corpus id) for the hits of
        its searches so far; the mine stage stores them as ``retrdistill.kinds.EXTRA_PASSAGES``. None here."""
        return {}


class Teacher(Part):
    """Scores (query, passage) pairs (artefact kind ``scores``) and can retrieve as its own leaderboard row."""

    needs = ("corpus", "cache_dir")

    @abstractmethod
    def score_groups(self, queries: dict[str, str], groups: dict[str, list[str]]) -> dict[str, np.ndarray]:
        """One score per doc id of each query's group, in the group's order."""

    @abstractmethod
    def retrieve(self, queries: dict[str, str], k: int, **kwargs: Any) -> Run:
        """The teacher as a retriever (bi-encoders search, cross-encoders re-rank a first stage)."""

    # True where a pair's score depends on the whole group (a listwise ranking): the score cache then re-scores a
    # group whole whenever any of its pairs is missing, never a part of it alone
    scores_whole_groups: ClassVar[bool] = False

    def stats(self) -> dict[str, Any]:
        """Counts of the work done so far that the score step records in its manifest (``counts.teacher``), e.g.
        an LLM judge's answers outside its top tokens. Empty here."""
        return {}

    def resolved(self) -> "Teacher":
        """The teacher that does the work when this one stands for another (the ``chosen`` teacher: its pick);
        itself here. Whoever needs a bi-encoder's embeddings (embedding and in-batch distillation) asks this."""
        return self

    def members(self) -> list["Teacher"]:
        """The teachers whose scores this one combines per query (an ensemble). Whoever scores through the score
        cache (:class:`retrdistill.score_cache.CachedScorer`) then caches each member under its own
        fingerprint and calls :meth:`combine` on whole groups. None for a teacher that scores pairs itself."""
        return []

    def combine(self, member_scores: list[dict[str, np.ndarray]], groups: dict[str, list[str]]) -> dict[str, np.ndarray]:
        """This teacher's scores of ``groups`` from its members' (one dict per member, in :meth:`members` order)."""
        raise NotImplementedError(f"{type(self).__name__} combines no members")


class PairTeacher(Teacher):
    """A teacher that reads each (query, passage text) pair whole (a cross-encoder, an LLM judge): it provides
    :meth:`score_pairs`; the groups' passage texts are looked up in the corpus here, once per call."""

    _row: Any = None  # doc id -> corpus row, opened on first use

    @abstractmethod
    def score_pairs(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """One score per ``(query text, passage text)`` pair, in order."""

    def score_groups(self, queries: dict[str, str], groups: dict[str, list[str]]) -> dict[str, np.ndarray]:
        if self._row is None:
            self._row = self.corpus.row_index()
        pairs: list[tuple[str, str]] = []
        spans = {}
        for qid, docs in groups.items():
            texts = self.corpus.texts_at([self._row[d] for d in docs])
            spans[qid] = (len(pairs), len(pairs) + len(docs))
            pairs.extend((queries[qid], t) for t in texts)
        scores = self.score_pairs(pairs)
        return {qid: scores[a:b] for qid, (a, b) in spans.items()}


class Family(Part):
    """A family of retrieval models (dense embeddings, sparse term vectors, pair scorers; a new one such as
    multi-vector) and everything that must agree on it: which saved checkpoints are of it, how they load, how
    they encode queries and passages, how encodings are searched exactly, which losses train its students.

    Students (:attr:`Student.family`) and indexers (:attr:`Indexer.model_type`) name their family by its
    registered name; nothing outside a family tests a model's type. :func:`retrdistill.families.detect` asks
    every registered family's :meth:`detect` for a model folder, the latest registered first (a plugin's family
    narrows a built-in one), then falls back to the plain checkpoint kinds below.
    """

    description: ClassVar[str] = ""
    # plain checkpoints without a family of their own that this family can still load: "masked-lm" (a masked-LM
    # head), "transformer" (a bare encoder), "unknown" (a hub name, or files that say nothing)
    also_loads: ClassVar[tuple[str, ...]] = ()
    # the losses its students train with (:attr:`Loss.student_family`): "embedding" or "cross-encoder"
    trains_with: ClassVar[str] = "embedding"
    # how its exact search is named in reports: "flat" (dense inner products), "inverted" (sparse postings)
    exact_search: ClassVar[str] = "flat"

    def fingerprint(self) -> dict[str, Any]:
        return {"family": type(self).__name__, "options": self.output_options()}

    @abstractmethod
    def detect(self, folder: Path) -> str | None:
        """The file and field that make the saved model in ``folder`` one of this family, or None; read from
        its files alone, nothing loaded."""

    @abstractmethod
    def load(self, ref: str, *, max_seq_length: int | None = None, device: str | None = None) -> Any:
        """The model ``ref`` (a path, hub name or offline:NAME) as this family encodes with it."""

    @abstractmethod
    def encode(self, model: Any, texts: list[str], *, role: str, batch_size: int = 64, on_progress=None) -> Any:
        """``texts`` encoded for search, ``role`` ``"query"`` or ``"document"`` (one row per text: a float32
        array, or a CSR matrix of term weights); ``on_progress(n)`` after each batch."""

    def stack(self, parts: list[Any]) -> Any:
        """One encoding of the rows of ``parts`` (outputs of :meth:`encode`), in order."""
        return np.concatenate(parts)

    @abstractmethod
    def scores(self, queries: Any, passages: Any) -> np.ndarray:
        """The (queries x passages) float32 score matrix of two encodings."""

    @abstractmethod
    def top_k(self, queries: Any, passages: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact ``(scores, rows)`` of each query's ``k`` best passages, best first (rows of -1 where fewer)."""


class Loss(Part):
    """A score-distillation loss: the label it needs from the teacher's scores, and the torch loss module."""

    # the students whose objective builds it: "embedding" (bi-encoder and SPLADE students: the loss compares
    # embedding similarities) or "cross-encoder" (a CrossEncoder's pair logits); a student refuses the other family
    student_family: ClassVar[str] = "embedding"

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
    objective, the trainer that runs them, and how the trained model is cut and saved. A family provides them:
    :class:`retrdistill.families.dense.bi_encoder.BiEncoderStudent` holds a sentence-transformers bi-encoder's
    (``SentenceTransformer``, ``SentenceTransformerTrainer``, rows ``query, positive, negative_1..n, label``);
    a student of another family (a SPLADE ``SparseEncoder``, a ``CrossEncoder``) names its own trainer, rows and
    objective. Nothing here reaches into training: the contract only names what a student must answer.
    """

    # the registered family of the model it trains (:class:`Family`): its losses, validation encoding and search
    family: ClassVar[str] = "dense"

    @abstractmethod
    def load(self) -> Any:
        """The untrained student model, as declared (a sentence-transformers model: ``SentenceTransformer``,
        ``SparseEncoder``, ...)."""

    # False when the objective has batch-level terms (a FLOPS regulariser over the batch's activations): then a
    # batch cannot be split into smaller forward passes with accumulated gradients (``micro_batch_size``)
    batch_separable: ClassVar[bool] = True

    def check_config(self, cfg: Any) -> None:
        """Refuse, before anything runs, train-stage settings (``cfg``: the ``TrainConfig``) this student cannot
        honour, with a ConfigError; every setting is accepted by default."""

    @abstractmethod
    def trainer_classes(self) -> tuple[type, type]:
        """``(trainer class, training-arguments class)`` of sentence-transformers that train this student."""

    @abstractmethod
    def training_data(self) -> Any:
        """The builder of the trainer's dataset from the scored groups (see :mod:`retrdistill.training.data`)."""

    @abstractmethod
    def objective(self, loss: "Loss", settings: Any, inputs: Any) -> Any:
        """The builder of the loss module (see :mod:`retrdistill.training.objective`) from the score ``loss``
        part, the stage's ``ObjectiveSettings`` and its ``TrainingInputs``."""

    @abstractmethod
    def truncate(self, model: Any, dim: int) -> Any:
        """``model`` outputting only its first ``dim`` dimensions (``truncate_dim``), or a ConfigError."""

    def save(self, model: Any, folder: Path) -> None:
        """Write ``model`` as a folder that loads on its own (``model.save``)."""
        model.save(str(folder))


@dataclass
class BuiltIndex:
    """What :meth:`Indexer.index_corpus` made: the index, ready to search, and the facts ``index.json`` records
    about how the corpus was encoded (dense: ``dim``, ``normalized``; sparse: ``vocab_size``, ``postings``)."""

    index: Any
    info: dict[str, Any]


class Indexer(Part):
    """Encodes a corpus with a model and indexes it (artefact kind ``index``); saves, loads and searches it.

    The indexer owns the encoding on both sides: it declares the family of model it takes (``model_type``: a
    registered :class:`Family`, ``"dense"`` for a ``SentenceTransformer``, ``"sparse"`` for a ``SparseEncoder``),
    loads it (:meth:`load_model`),
    encodes the corpus into its index (:meth:`index_corpus`; dense indexers through the shared, resumable
    embedding cache of :mod:`retrdistill.encoding.corpus`) and encodes queries for :meth:`search`
    (:meth:`encode_queries`). A model of the wrong family is refused by
    :func:`retrdistill.indexers.model_check.check_model` before anything is loaded or encoded. An index folder
    records the registered name of the indexer that wrote it (``index.json``), and is loaded through that
    indexer again.
    """

    model_type: ClassVar[str] = "dense"
    index_file: ClassVar[str] = "index.faiss"
    # for the contract tests: a model this indexer encodes with (``{fixture}`` strings allowed), and keyword
    # arguments of index_corpus that keep the test fast (e.g. a short max_seq_length for a slow model)
    example_model: ClassVar[str] = "{minilm}"
    example_build: ClassVar[dict[str, Any]] = {}

    def fingerprint(self) -> dict[str, Any]:
        return {"indexer": type(self).__name__, "options": self.output_options()}

    @abstractmethod
    def load_model(self, model_ref: str, *, max_seq_length: int | None = None, device: str | None = None,
                   backend: str = "torch") -> Any:
        """The model this indexer encodes with, loaded from ``model_ref`` (a path, hub name or offline:NAME), on
        ``backend`` (:mod:`retrdistill.encoding.backends`; an indexer that has only torch refuses the others)."""

    @abstractmethod
    def index_corpus(self, model: Any, corpus: Any, folder: Path, *, model_ref: str, cache_dir: Path,
                     batch_size: int = 64, max_seq_length: int | None = None) -> BuiltIndex:
        """Encode ``corpus`` (a :class:`retrdistill.data.beir.Corpus`) with ``model`` (loaded from
        ``model_ref``; ``cache_dir`` holds shared, resumable encoding caches), build the index and save it into
        ``folder`` (atomically; the folder's other files are the stage's)."""

    @abstractmethod
    def encode_queries(self, model: Any, texts: list[str], info: dict[str, Any]) -> Any:
        """``texts`` as this index searches them (``info``: the index's ``index.json``)."""

    @abstractmethod
    def encode_passages(self, model: Any, texts: list[str], info: dict[str, Any]) -> Any:
        """``texts`` encoded as the corpus was (for timing the passage-encoding rate)."""

    @abstractmethod
    def save(self, index: Any, folder: Path) -> None:
        """Write ``index`` into ``folder`` (atomically; the folder's other files are the stage's)."""

    @abstractmethod
    def load(self, folder: Path) -> Any:
        """The saved index, ready to search (on the GPU where the indexer puts it there)."""

    @abstractmethod
    def search(self, index: Any, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, rows)`` of the top ``k`` per query (as :meth:`encode_queries` returns them); rows of -1
        where fewer exist."""

    @abstractmethod
    def exact_index(self, model: Any, corpus: Any, *, model_ref: str, cache_dir: Path,
                    max_seq_length: int | None = None) -> BuiltIndex:
        """An exact index of another ``corpus`` than the saved one, encoded as this indexer encodes, from the
        shared caches under ``cache_dir`` (an index evaluated on another dataset)."""

    def search_for_merge(self, index: Any, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search` with the scores its order was decided on (a sharded index merges its shards' lists on
        them); the same as :meth:`search` unless an indexer ranks on wider floats than it returns."""
        return self.search(index, queries, k)

    def encoding_block(self) -> int | None:
        """Passages encoded in one call: a sharded index step cuts the corpus in whole blocks of this many, so
        every passage is encoded as in the unsharded run. None: this indexer cannot be sharded."""
        return None

    def search_cost(self, index: Any, queries: Any) -> dict[str, float]:
        """Cost measures of searching ``queries`` beyond time (sparse: terms and FLOPs per query); none here."""
        return {}

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


class ValidationMetric(Part):
    """A label-free validation metric of a student under training (see :mod:`retrdistill.validation`).

    Computed from a :class:`retrdistill.validation.metrics.ValidationView`: the held-out scored groups (query,
    candidates, teacher scores, pseudo-positives first) and the student's embeddings of their queries and of
    the corpus as it is. Returns one mean per name in :meth:`names`, higher being better.
    """

    def fingerprint(self) -> dict[str, Any]:
        return {"validation_metric": type(self).__name__, "options": self.output_options()}

    @abstractmethod
    def names(self) -> list[str]:
        """The names of the values :meth:`compute` returns (``pseudo-mrr@10``, ...), known before it runs."""

    def search_depth(self) -> int:
        """How many passages of the whole corpus it needs ranked per query (0: only the group's candidates)."""
        return 0

    def teacher_depth(self) -> int:
        """How many passages of the teacher's own ranking of the whole corpus it reads per query (0: none). The
        train stage then asks the scoring teacher to retrieve that deep for the held-out queries, once."""
        return 0

    @abstractmethod
    def compute(self, view: Any) -> dict[str, float]:
        """The mean over the held-out queries of each of :meth:`names`."""


@dataclass
class FilterView:
    """One scored query group as a candidate filter sees it (arrays over the group's NEGATIVES, in mined order).

    ``positive_scores``: the teacher's scores of the known positives; ``scores``: of each negative;
    ``ranks``: each negative's 1-based rank in the miner's list (known positives removed);
    ``miner_scores``: the miner's score of each negative (NaN where the candidates did not record it).
    """

    qid: str
    positive_scores: np.ndarray
    scores: np.ndarray
    ranks: np.ndarray
    miner_scores: np.ndarray


class CandidateFilter(Part):
    """Flags the negatives of a scored group that should not be trained on as negatives (likely false negatives,
    out of the rank window, too easy), or flags a whole query (its positive is doubtful).

    The ``select`` stage decides what a flag does (drop the candidate, or relabel it as an extra positive) and
    counts each filter's flags, so a filter only answers. Filters that need the whole data set (a percentile of
    every positive's score) learn it in :meth:`fit`, called once with all positives' scores before any group.
    """

    # "candidate": :meth:`flag` returns a mask over the negatives; "query": a one-element mask (True: drop the query)
    level: ClassVar[str] = "candidate"

    def fingerprint(self) -> dict[str, Any]:
        return {"filter": type(self).__name__, "options": self.output_options()}

    def fit(self, positive_scores: np.ndarray) -> None:
        """See every positive's teacher score (all queries) before filtering; most filters need nothing."""

    @abstractmethod
    def flag(self, view: FilterView) -> np.ndarray:
        """A boolean mask: over ``view.scores`` (True: this negative is flagged) or, for ``level == "query"``, of
        length one (True: drop the query)."""


class LLMClient(Part):
    """A text generator (kind ``llm``): chat prompts in, one completion each out, in order.

    A prompt is a list of ``{"role", "content"}`` messages (``system``, ``user``, ``assistant``); a client whose
    model has no chat template joins them as plain text. ``params`` is a
    :class:`retrdistill.llm.client.GenerationParams` (length, sampling, seed, stop strings). The fingerprint says
    which model answers (weights by content hash, or endpoint + served model name), so generations are cached
    on it (:mod:`retrdistill.llm.cache`).
    """

    @abstractmethod
    def generate(self, prompts: list[list[dict[str, str]]], params: Any) -> list[str]:
        """One completion per prompt, in order."""

    def batch_size(self) -> int:
        """How many prompts one :meth:`generate` call should get (what is lost at most when a run is killed)."""
        return 8

    def input_files(self) -> list[Path]:
        """Local files the completions come from (a model folder), for steps that fingerprint their inputs."""
        return []

    def first_token_logprobs(self, prompts: list[list[dict[str, str]]], top_n: int) -> list[dict[str, float]]:
        """For each prompt, the ``top_n`` most likely first tokens of the answer (greedy, one token) as
        ``{token text: natural-log probability}``, in order. A client that cannot read token probabilities
        raises ``ConfigError`` (this default)."""
        from retrdistill.errors import ConfigError

        raise ConfigError(f"llm {type(self).__name__} does not return token log-probabilities")

    def chat_prompts(self) -> bool:
        """Whether prompts reach the model through its chat template (False: joined as plain text)."""
        return True


class Translator(Part):
    """Translates texts from one language into another (the ``translate`` stage, the ``translated`` eval system).

    :meth:`language_pair` is ``(source, target)``; the fingerprint includes it and the model by content, so a
    translation cache keyed on it never mixes directions or models. :meth:`translate` returns one text per input,
    in order; an empty or blank input comes back unchanged.
    """

    @abstractmethod
    def language_pair(self) -> tuple[str, str]:
        """``(source language, target language)``, e.g. ``("en", "pt")``."""

    @abstractmethod
    def translate(self, texts: list[str]) -> list[str]:
        """The translation of every text, in order."""


KIND_BASES: dict[str, type[Part]] = {
    "query_generator": QuerySource,
    "miner": Miner,
    "teacher": Teacher,
    "loss": Loss,
    "student": Student,
    "indexer": Indexer,
    "family": Family,
    "system": EvalSystem,
    "validation_metric": ValidationMetric,
    "translator": Translator,
    "filter": CandidateFilter,
    "llm": LLMClient,
}
