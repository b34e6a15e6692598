"""Stage ``translate``: the teacher's scores of the English pairs, with the student's side translated.

Takes a ``scores`` artefact and writes a ``scores`` artefact with the same groups, doc ids order and teacher
scores, unchanged (the teacher scored the English pairs), where ``side`` says what the student will read
translated (Translate-Distill):

* ``query``: each group's query is translated (cross-language: a Portuguese query against English passages);
* ``passage``: every candidate passage is translated, the query kept;
* ``both``: both (multilingual: the student sees a Portuguese pair against the English pair's score).

A translated passage becomes a generated passage: its text goes to ``passages.jsonl``
(:data:`retrdistill.kinds.EXTRA_PASSAGES`, training-only passages that the train step reads with the corpus
through :mod:`retrdistill.llm.passages`, never indexed or evaluated) under the content id ``gen-<hash of the
text>`` (:func:`retrdistill.llm.passages.generated_id`), and the groups' doc ids point at those ids. Passages already in the upstream's ``passages.jsonl`` (generated ones) are
translated too, or copied on unchanged when only queries are translated.

Every translation goes through the cache (``cache_dir/translations.sqlite``, keyed on the translator's
fingerprint and the source text): a re-run or a killed run translates only what is missing. The manifest counts
texts translated and reused and the seconds spent translating.

Stage ``translate-collection`` makes a cross-language test collection: a BEIR folder whose queries are the
source collection's, translated, with its qrels copied and its corpus linked (or copied), unchanged.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from retrdistill import progress, registry
from retrdistill.artefacts import atomic_path, fingerprint_obj, upstream
from retrdistill.data.beir import open_collection
from retrdistill.errors import ConfigError, DataError
from retrdistill.kinds import EXTRA_PASSAGES, count_rows, read_scores, scored_row
from retrdistill.llm.passages import generated_id, read_passages
from retrdistill.stages.base import (
    StageResult,
    StageSpec,
    StepInput,
    Work,
    config_dict,
    file_input,
    keyed_part_config,
)
from retrdistill.translation.cache import TranslationCache, translate_cached
from retrdistill.validate import check_ranges

log = logging.getLogger(__name__)
SIDES = ("query", "passage", "both")
CACHE_FILE = "translations.sqlite"


@dataclass
class TranslateConfig:
    translator: str = field(default="bergamot", metadata={"help": "Translation backend."})
    options: dict[str, Any] = field(default_factory=dict,
                                    metadata={"help": "Translator options, e.g. -o direction=en-pt.",
                                              "part": {"kind": "translator", "name": "translator"}})
    side: str = field(default="query", metadata={"help": "What the student reads translated: query, passage or both."})
    batch_size: int = field(default=64, metadata={"help": "Texts per translator call (does not change the output).",
                                                  "min": 1})

    def __post_init__(self) -> None:
        registry.entry("translator", self.translator)
        if self.side not in SIDES:
            raise ConfigError(f"translate: side must be one of {', '.join(SIDES)}, got {self.side!r}")
        if self.batch_size < 1:
            raise ConfigError("translate: batch_size must be at least 1")
        check_ranges(self, "translate")


def build_translator(cfg) -> Any:
    return registry.build("translator", cfg.translator, cfg.options)


def run_translate(cfg: TranslateConfig, collection_dir: str | Path, scores_dir: str | Path, out_dir: str | Path, *,
                  cache_dir: str | Path, force: bool = False) -> StageResult:
    return prepare_translate(cfg, collection_dir, scores_dir, out_dir, cache_dir=cache_dir).run(force=force)


def prepare_translate(cfg: TranslateConfig, collection_dir: str | Path, scores_dir: str | Path,
                      out_dir: str | Path, *, cache_dir: str | Path) -> Work:
    translator = build_translator(cfg)
    translator_fp = fingerprint_obj(translator.fingerprint())
    scores_dir = Path(scores_dir)
    manifest = upstream(scores_dir, "scores")
    inputs = {"scores": manifest.fingerprint, "translator": translator_fp}
    config = keyed_part_config(config_dict(cfg), "options")  # the translator's fingerprint keys its options
    config.pop("batch_size")

    def body(tmp: Path) -> dict[str, Any]:
        cache = TranslationCache(Path(cache_dir) / CACHE_FILE, translator_fp)
        try:
            return _translate_scores(cfg, translator, cache, collection_dir, scores_dir, tmp, cache_dir, manifest)
        finally:
            cache.close()

    return Work("translate", "scores", Path(out_dir), config, inputs, body)


def _translate_scores(cfg: TranslateConfig, translator, cache: TranslationCache, collection_dir, scores_dir: Path,
                      tmp: Path, cache_dir, manifest) -> dict[str, Any]:
    queries: set[str] = set()
    docids: dict[str, None] = {}  # insertion-ordered set
    for group in read_scores(scores_dir):
        queries.add(group.query)
        docids.update(dict.fromkeys(group.docids))
    counts: dict[str, Any] = {"groups": 0, "side": cfg.side, "language_pair": list(translator.language_pair()),
                              "scored_by": manifest.counts.get("scored_by", manifest.settings or manifest.config),
                              "scored_by_teacher": manifest.counts.get("scored_by_teacher",
                                                                       manifest.inputs.get("teacher"))}
    seconds = 0.0
    translated_queries: dict[str, str] = {}
    if cfg.side in ("query", "both"):
        bar = progress.bar(len(queries), f"translate queries ({cfg.translator})", "q")
        done = translate_cached(translator, cache, sorted(queries), batch_size=cfg.batch_size, on_batch=bar.update)
        bar.close()
        translated_queries, seconds = done.texts, seconds + done.seconds
        counts["queries"] = done.counts
    extra_in = scores_dir / EXTRA_PASSAGES
    new_id: dict[str, str] = {}
    if cfg.side in ("passage", "both"):
        corpus = open_collection(collection_dir, Path(cache_dir) / "corpora").corpus
        generated = read_passages(extra_in) if extra_in.is_file() else {}
        passages, spent = _translate_passages(cfg, translator, cache, corpus, generated, list(docids),
                                              tmp / EXTRA_PASSAGES)
        new_id, seconds = passages.pop("ids"), seconds + spent
        counts["passages"] = passages
    elif extra_in.is_file():
        shutil.copyfile(extra_in, tmp / EXTRA_PASSAGES)
    with atomic_path(tmp / "scores.jsonl") as part, open(part, "w", encoding="utf-8") as fh:
        for group in read_scores(scores_dir):
            changed = replace(group, query=translated_queries.get(group.query, group.query),
                              docids=[new_id.get(d, d) for d in group.docids])
            fh.write(scored_row(changed))
            counts["groups"] += 1
    counts["translate_seconds"] = round(seconds, 3)
    log.info("translate: %d groups written (%s side), %.1fs translating", counts["groups"], cfg.side, seconds)
    return counts


def _translate_passages(cfg: TranslateConfig, translator, cache: TranslationCache, corpus, generated: dict[str, str],
                        docids: list[str], out: Path) -> tuple[dict[str, Any], float]:
    """Translate every passage of ``docids`` (from the corpus, or ``generated``) in batches, streamed into
    ``out`` as generated passages ``{"_id": generated_id(translation), "text": translation}``; returns the counts
    (with ``ids``: old -> new id) and the seconds spent translating."""
    row = corpus.row_index()
    new_id: dict[str, str] = {}
    written: set[str] = set()
    counts = {"texts": 0, "translated": 0, "from_cache": 0}
    seconds = 0.0
    bar = progress.bar(len(docids), f"translate passages ({cfg.translator})", "psg")
    with atomic_path(out) as part, open(part, "w", encoding="utf-8") as fh:
        for start in range(0, len(docids), cfg.batch_size * 4):
            ids = docids[start:start + cfg.batch_size * 4]
            texts = [generated[d] if d in generated else None for d in ids]
            in_corpus = [i for i, t in enumerate(texts) if t is None]
            rows = [row.get(ids[i]) for i in in_corpus]
            if any(r is None for r in rows):
                missing = next(ids[i] for i, r in zip(in_corpus, rows) if r is None)
                raise DataError(corpus.path, None, f"scored passage {missing!r} is in neither the corpus nor "
                                                   f"{EXTRA_PASSAGES}")
            for i, text in zip(in_corpus, corpus.texts_at(rows)):
                texts[i] = text
            done = translate_cached(translator, cache, texts, batch_size=cfg.batch_size)
            for key in counts:
                counts[key] += done.counts[key]
            seconds += done.seconds
            for d, text in zip(ids, texts):
                translation = done.texts[text]
                new_id[d] = generated_id(translation)
                if new_id[d] not in written:
                    written.add(new_id[d])
                    fh.write(json.dumps({"_id": new_id[d], "text": translation}, ensure_ascii=False) + "\n")
            bar.update(len(ids))
    bar.close()
    return {**counts, "ids": new_id}, seconds


# ------------------------------------------------------------------ a translated test collection
@dataclass
class TranslateCollectionConfig:
    translator: str = field(default="bergamot", metadata={"help": "Translation backend."})
    options: dict[str, Any] = field(default_factory=dict,
                                    metadata={"help": "Translator options, e.g. -o direction=en-pt.",
                                              "part": {"kind": "translator", "name": "translator"}})
    corpus: str = field(default="link", metadata={
        "help": "The corpus in the new folder: link (a relative symlink to the source's corpus.jsonl) or copy."})
    batch_size: int = field(default=64, metadata={"help": "Texts per translator call (does not change the output).",
                                                  "min": 1})

    def __post_init__(self) -> None:
        registry.entry("translator", self.translator)
        if self.corpus not in ("link", "copy"):
            raise ConfigError(f"translate-collection: corpus must be link or copy, got {self.corpus!r}")
        check_ranges(self, "translate-collection")


def run_translate_collection(cfg: TranslateCollectionConfig, collection_dir: str | Path, out_dir: str | Path, *,
                             cache_dir: str | Path, force: bool = False) -> StageResult:
    return prepare_translate_collection(cfg, collection_dir, out_dir, cache_dir=cache_dir).run(force=force)


def prepare_translate_collection(cfg: TranslateCollectionConfig, collection_dir: str | Path, out_dir: str | Path, *,
                                 cache_dir: str | Path) -> Work:
    """A BEIR folder at ``out_dir``: ``queries.jsonl`` translated (same ids), ``qrels/`` copied, ``corpus.jsonl``
    linked or copied; the corpus passages and the judgments are the source's, unchanged (the mMARCO way)."""
    source = open_collection(collection_dir, Path(cache_dir) / "corpora")
    translator = build_translator(cfg)
    translator_fp = fingerprint_obj(translator.fingerprint())
    inputs = {"queries": file_input(source.root / "queries.jsonl"), "corpus": source.corpus.fingerprint,
              "translator": translator_fp,
              **{f"qrels:{s}": file_input(source.qrels_path(s)) for s in source.splits()}}
    config = keyed_part_config(config_dict(cfg), "options")  # the translator's fingerprint keys its options
    config.pop("batch_size")
    out_dir = Path(out_dir)

    def body(tmp: Path) -> dict[str, Any]:
        queries = source.queries
        cache = TranslationCache(Path(cache_dir) / CACHE_FILE, translator_fp)
        try:
            bar = progress.bar(len(queries), f"translate queries ({cfg.translator})", "q")
            done = translate_cached(translator, cache, list(queries.values()), batch_size=cfg.batch_size,
                                    on_batch=bar.update)
            bar.close()
        finally:
            cache.close()
        with atomic_path(tmp / "queries.jsonl") as part, open(part, "w", encoding="utf-8") as fh:
            for qid, text in queries.items():
                fh.write(json.dumps({"_id": qid, "text": done.texts[text]}, ensure_ascii=False) + "\n")
        (tmp / "qrels").mkdir()
        for split in source.splits():
            shutil.copyfile(source.qrels_path(split), tmp / "qrels" / f"{split}.tsv")
        corpus = source.root / "corpus.jsonl"
        if cfg.corpus == "link":  # relative to where the folder will be (tmp is its sibling)
            os.symlink(os.path.relpath(corpus.resolve(), out_dir.resolve().parent / out_dir.name), tmp / "corpus.jsonl")
        else:
            shutil.copyfile(corpus, tmp / "corpus.jsonl")
        return {"queries": len(queries), "translation": done.counts, "translate_seconds": round(done.seconds, 3),
                "language_pair": list(translator.language_pair()), "corpus": cfg.corpus,
                "passages": count_rows(source.root, "corpus.jsonl")}

    return Work("translate-collection", "texts", out_dir, config, inputs, body)


STAGE = StageSpec(
    name="translate", config=TranslateConfig, output="scores",
    inputs={"scores": StepInput(("scores",), "the teacher's scores of the English pairs")},
    prepare=lambda cfg, refs, ctx: prepare_translate(cfg, ctx.collection, refs["scores"], ctx.out_dir,
                                                     cache_dir=ctx.cache_dir),
    summary="the scored groups with queries and/or passages translated, teacher scores unchanged (cached)",
)

COLLECTION_STAGE = StageSpec(
    name="translate-collection", config=TranslateCollectionConfig, output="texts", inputs={},
    prepare=lambda cfg, refs, ctx: prepare_translate_collection(cfg, ctx.collection, ctx.out_dir,
                                                                cache_dir=ctx.cache_dir),
    summary="a BEIR folder with the collection's queries translated, corpus and qrels unchanged",
)
