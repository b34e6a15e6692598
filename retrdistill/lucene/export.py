"""A sparse index exported as Anserini's ``JsonVectorCollection``, for Lucene impact search.

The artefact folder (``retrdistill export-anserini``) holds:

* ``vectors/part-NNNNN.jsonl``: one passage a line, ``{"id": ..., "contents": "", "vector": {term: weight}}``,
  the weights quantised to integers (``round(w * factor)``, SPLADE's usual x100; Anserini reads each weight
  with Jackson's ``asInt`` and repeats the term that many times, so a float weight would be truncated). A term
  whose weight rounds to 0 is left out; a passage left with no terms is written with ``"vector": {}`` (Anserini
  skips it as empty: it could score nothing);
* ``anserini.json``: the factor, how terms and ids are named, the counts and the Anserini commands to index and
  search the folder;
* the manifest, written last.

Terms are the model's vocabulary tokens (``terms: tokens``, word pieces such as ``##ing`` as they are, what
pyserini's SPLADE query encoders emit), or the term ids as decimal strings (``terms: ids``, for vocabularies
with tokens that hold whitespace, which Anserini's ``-pretokenized`` whitespace analyzer would split). Ids are
the corpus's doc ids (``doc_ids: corpus``) or zero-padded passage rows (``doc_ids: rows``: Lucene breaks score
ties by the id string, so equal-width rows tie-break exactly as the embedded index does, by row).

The posting lists are term-major; the export turns them doc-major block by block of rows (bounded memory: the
vocabulary-sized cursors and one block's postings), finding where each term's postings leave the block by a
vectorised binary search over the memory-mapped rows.

Queries go to Anserini as ``SearchCollection -impact -pretokenized`` topics: each term repeated its quantised
weight times (:func:`query_topic`), the form of Anserini's own cached SPLADE topics; its bag-of-words query
generator turns the repeat count back into the term's boost, and ``ImpactSimilarity`` scores a passage as the
sum of boost x stored weight: the integer dot product.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retrdistill import progress
from retrdistill.artefacts import write_json_atomic
from retrdistill.errors import ConfigError

log = logging.getLogger(__name__)

FORMAT = "anserini-json-vector-collection"
PARAMS = "anserini.json"
VECTORS = "vectors"
TERM_MODES = ("tokens", "ids")
DOC_ID_MODES = ("corpus", "rows")
MAX_TOKEN_CHARS = 255  # Lucene's WhitespaceTokenizer cuts longer tokens
BLOCK_POSTINGS = 2_000_000  # postings turned doc-major at once
DOCS_PER_FILE = 500_000


# ------------------------------------------------------------------ settings
@dataclass(frozen=True)
class ExportSettings:
    factor: float = 100.0  # document weights become round(w * factor)
    terms: str = "tokens"  # "tokens" (vocabulary strings) or "ids" (term ids as decimal strings)
    doc_ids: str = "corpus"  # "corpus" (the corpus's ids) or "rows" (zero-padded passage rows)
    docs_per_file: int = DOCS_PER_FILE

    def __post_init__(self) -> None:
        check_factor(self.factor, "factor")
        if self.terms not in TERM_MODES:
            raise ConfigError(f"terms must be one of {', '.join(TERM_MODES)}, got {self.terms!r}")
        if self.doc_ids not in DOC_ID_MODES:
            raise ConfigError(f"doc_ids must be one of {', '.join(DOC_ID_MODES)}, got {self.doc_ids!r}")
        if self.docs_per_file < 1:
            raise ConfigError(f"docs_per_file must be positive, got {self.docs_per_file}")


def check_factor(value: float, name: str) -> None:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a positive number (SPLADE's usual: 100), got {value!r}")


def quantise(weights: np.ndarray, factor: float) -> np.ndarray:
    """``round(w * factor)`` as int64 (half to even, Python's ``round``), computed in float64."""
    return np.rint(np.asarray(weights, dtype=np.float64) * float(factor)).astype(np.int64)


def row_id(row: int, documents: int) -> str:
    """A passage row as a zero-padded id: equal widths make string order the row order."""
    return str(row).zfill(len(str(max(documents - 1, 0))))


# ------------------------------------------------------------------ terms
def term_names(tokens: list[str | None], mode: str, used: np.ndarray | None = None) -> list[str | None]:
    """The Lucene term of every vocabulary id: its token (``mode`` "tokens") or its id (``"ids"``).

    In "tokens" mode a token Anserini's whitespace analyzer cannot carry (none, empty, with whitespace, over 255
    characters) is a ConfigError when a passage uses it (``used``: a boolean per term id; None: every term) and
    None otherwise (a query term no passage has: it could match nothing)."""
    if mode == "ids":
        return [str(t) for t in range(len(tokens))]
    names: list[str | None] = []
    for t, token in enumerate(tokens):
        ok = bool(token) and len(token) <= MAX_TOKEN_CHARS and not any(c.isspace() for c in token)
        if not ok and (used is None or (t < len(used) and used[t])):
            raise ConfigError(f"term {t} ({token!r}) cannot be an Anserini pretokenized term (empty, whitespace or "
                              f"over {MAX_TOKEN_CHARS} characters); export with terms: ids")
        names.append(token if ok else None)
    used_names = [n for t, n in enumerate(names) if n is not None and (used is None or (t < len(used) and used[t]))]
    if len(set(used_names)) != len(used_names):
        raise ConfigError("the vocabulary maps two term ids to the same token; export with terms: ids")
    return names


def vocabulary_tokens(model_ref: str, vocab_size: int, model=None) -> list[str | None]:
    """The token string of every term id below ``vocab_size`` (None past the tokenizer's vocabulary), from the
    model's tokenizer (read alone where it can be, else from the loaded sparse model)."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        from transformers import AutoTokenizer

        from retrdistill.models import resolve_model

        try:
            tokenizer = AutoTokenizer.from_pretrained(resolve_model(model_ref))
        except (OSError, ValueError, KeyError):
            from retrdistill.encoding.sparse import load_sparse_encoder

            tokenizer = load_sparse_encoder(model_ref).tokenizer
    known = min(vocab_size, len(tokenizer))
    tokens = list(tokenizer.convert_ids_to_tokens(list(range(known))))
    return tokens + [None] * (vocab_size - known)


# ------------------------------------------------------------------ doc-major blocks of a term-major index
def _first_at_least(indices: np.ndarray, lo: np.ndarray, hi: np.ndarray, value: int) -> np.ndarray:
    """Per term, the first posting in ``[lo, hi)`` whose row is ``>= value`` (``hi`` if none): rows ascend
    within a term, so one vectorised binary search over all terms at once."""
    lo, hi = lo.copy(), hi.copy()
    active = np.flatnonzero(lo < hi)
    while len(active):
        mid = (lo[active] + hi[active]) // 2
        below = np.asarray(indices[mid]) < value
        lo[active[below]] = mid[below] + 1
        hi[active[~below]] = mid[~below]
        active = active[lo[active] < hi[active]]
    return lo


def doc_major_blocks(index, block_postings: int) -> Iterator[tuple[int, int, np.ndarray, np.ndarray, np.ndarray]]:
    """``(start, stop, indptr, terms, weights)`` for consecutive blocks of passage rows of a
    :class:`retrdistill.families.sparse.index.SparseIndex`, about ``block_postings`` postings each:
    ``terms[indptr[i]:indptr[i + 1]]`` (ascending) and their weights belong to row ``start + i``."""
    n = index.num_docs
    per_doc = max(1.0, float(index.params.get("doc_terms") or 1.0))
    rows_per_block = max(1, int(block_postings / per_doc))
    cursor = np.asarray(index.indptr[:-1], dtype=np.int64).copy()
    ends = np.asarray(index.indptr[1:], dtype=np.int64)
    vocab = np.arange(index.vocab_size, dtype=np.int64)
    for start in range(0, n, rows_per_block):
        stop = min(n, start + rows_per_block)
        upto = _first_at_least(index.indices, cursor, ends, stop) if stop < n else ends.copy()
        lengths = upto - cursor
        total = int(lengths.sum())
        offsets = np.cumsum(lengths) - lengths
        positions = np.arange(total, dtype=np.int64) + np.repeat(cursor - offsets, lengths)
        rows = np.asarray(index.indices[positions], dtype=np.int64)
        weights = np.asarray(index.data[positions], dtype=np.float32)
        terms = np.repeat(vocab, lengths)
        order = np.argsort(rows, kind="stable")  # by row; terms stay ascending within a row
        counts = np.bincount(rows - start, minlength=stop - start)
        indptr = np.zeros(stop - start + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        yield start, stop, indptr, terms[order], weights[order]
        cursor = upto


# ------------------------------------------------------------------ writing
def _json_keys(names: list[str | None]) -> list[str | None]:
    return [None if n is None else json.dumps(n, ensure_ascii=False) for n in names]


def write_vectors(index, doc_ids: Iterator[str] | None, names: list[str | None], folder: Path,
                  settings: ExportSettings, *, first_row: int = 0, corpus_rows: int | None = None) -> dict[str, Any]:
    """Every passage of ``index`` as JsonVectorCollection lines in ``folder/part-NNNNN.jsonl`` (``folder`` is
    inside a temporary artefact folder, swapped in whole when done); ``doc_ids``: the corpus's ids in row order
    (read when ``settings.doc_ids`` is "corpus"). An index shard's passages are corpus rows ``first_row`` on of
    ``corpus_rows``. Returns the counts and the quantised document frequency of every term (``doc_freq``)."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = _json_keys(names)
    n = index.num_docs
    doc_freq = np.zeros(index.vocab_size, dtype=np.int64)
    kept = dropped = empty = 0
    files: list[str] = []
    fh = None
    bar = progress.bar(n, "anserini: export vectors", "psg")
    try:
        for start, stop, indptr, terms, weights in doc_major_blocks(index, BLOCK_POSTINGS):
            impacts = quantise(weights, settings.factor)
            keep = impacts > 0
            dropped += int((~keep).sum())
            doc_freq += np.bincount(terms[keep], minlength=index.vocab_size)
            bounds = np.concatenate([[0], np.cumsum(keep)])[indptr].tolist()  # kept postings before each row
            terms_l, impacts_l = terms[keep].tolist(), impacts[keep].tolist()
            if settings.doc_ids == "rows":
                ids = [row_id(first_row + r, corpus_rows or n) for r in range(start, stop)]
            else:
                ids = _take(doc_ids, stop - start, n)
            for i, row in enumerate(range(start, stop)):
                if row % settings.docs_per_file == 0:
                    if fh is not None:
                        fh.close()
                    files.append(f"part-{row // settings.docs_per_file:05d}.jsonl")
                    fh = open(folder / files[-1], "w", encoding="utf-8")
                a, b = bounds[i], bounds[i + 1]
                empty += a == b
                pairs = ", ".join(f"{keys[t]}: {v}" for t, v in zip(terms_l[a:b], impacts_l[a:b]))
                fh.write(f'{{"id": {json.dumps(ids[i], ensure_ascii=False)}, "contents": "", '
                         f'"vector": {{{pairs}}}}}\n')
            kept += len(terms_l)
            bar.update(stop - start)
    finally:
        if fh is not None:
            fh.close()
        bar.close()
    return {"documents": n, "empty_documents": int(empty), "postings": kept, "dropped_postings": dropped,
            "doc_terms": kept / n if n else 0.0, "files": files, "doc_freq": doc_freq}


def _take(doc_ids: Iterator[str] | None, count: int, documents: int) -> list[str]:
    from itertools import islice

    ids = list(islice(doc_ids, count)) if doc_ids is not None else []
    if len(ids) < count:
        raise ConfigError(f"anserini export: the doc ids end before the index's {documents} passages")
    return ids


def quantise_query(terms: np.ndarray, weights: np.ndarray, names: list[str | None],
                   factor: float) -> tuple[np.ndarray, np.ndarray]:
    """A query vector's ``(terms, impacts)`` as Lucene gets them: weights ``round(w * factor)``; terms that round
    to 0, or that no passage can hold (no Lucene name), left out."""
    terms = np.asarray(terms, dtype=np.int64)
    impacts = quantise(weights, factor)
    named = np.array([t < len(names) and names[t] is not None for t in terms.tolist()], dtype=bool)
    keep = (impacts > 0) & named if len(terms) else np.zeros(0, dtype=bool)
    return terms[keep], impacts[keep]


def query_topic(terms: np.ndarray, impacts: np.ndarray, names: list[str | None]) -> str:
    """One quantised query as ``SearchCollection -impact -pretokenized`` reads it: each term repeated its impact
    times (the bag-of-words query generator counts the repeats back into the term's boost)."""
    return " ".join(" ".join([names[t]] * v) for t, v in zip(terms.tolist(), impacts.tolist()))


def exact_scores(index, terms: np.ndarray, impacts: np.ndarray, rows: np.ndarray, factor: float) -> np.ndarray:
    """The integer dot products of a quantised query (``terms``, ``impacts``) with the quantised vectors
    (``round(w * factor)``) of passage ``rows`` of a SparseIndex: what Lucene impact search scores them."""
    rows = np.asarray(rows, dtype=np.int64)
    order = np.argsort(rows)
    wanted = rows[order]
    out = np.zeros(len(rows), dtype=np.int64)
    for t, q in zip(np.asarray(terms).tolist(), np.asarray(impacts).tolist()):
        a, b = int(index.indptr[t]), int(index.indptr[t + 1])
        postings = np.asarray(index.indices[a:b], dtype=np.int64)
        at = np.searchsorted(postings, wanted)
        hit = at < len(postings)
        hit[hit] = postings[at[hit]] == wanted[hit]
        weights = quantise(np.asarray(index.data[a:b])[at[hit]], factor)
        out[order[hit]] += q * weights
    return out


# ------------------------------------------------------------------ the export artefact
def index_source(index_dir: Path):
    """``(SparseIndex, index.json, manifest)`` of a finished sparse index folder; ConfigError otherwise."""
    from retrdistill.artefacts import read_manifest
    from retrdistill.families.sparse.index import SparseIndexer

    manifest = read_manifest(index_dir)
    info_path = index_dir / "index.json"
    if manifest is None or manifest.kind != "index" or not info_path.is_file():
        raise ConfigError(f"{index_dir}: not a finished retrdistill index (run `retrdistill index` with "
                          f"--indexer sparse first)")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    if info.get("indexer") != "sparse":
        raise ConfigError(f"{index_dir}: a {info.get('indexer')!r} index; Anserini impact export needs a sparse "
                          f"(SPLADE) index: indexer sparse")
    index = SparseIndexer(SparseIndexer.Options(**(info.get("options") or {}))).load(index_dir)
    return index, info, manifest


def _doc_ids_file(path: Path, documents: int) -> Iterator[str]:
    """The ids in ``docids.txt``, one a line (only "\\n" ends a line: ids may hold U+2028); DataError unless
    there is one per passage of the index."""
    from retrdistill.errors import DataError

    with open(path, encoding="utf-8", newline="\n") as fh:
        lines = sum(1 for _ in fh)
    if lines != documents:
        raise DataError(path, None, f"expected one doc id a line for the index's {documents} passages, "
                                    f"found {lines} lines")
    with open(path, encoding="utf-8", newline="\n") as fh:
        for line in fh:
            yield line[:-1] if line.endswith("\n") else line


def commands(folder: str, index: str = "<lucene-index>") -> dict[str, str]:
    """The Anserini command lines that index the exported vectors and search them with pretokenized topics."""
    return {"index": f"java -cp <anserini-fatjar.jar> io.anserini.index.IndexCollection -collection "
                     f"JsonVectorCollection -input {folder} -index {index} -generator "
                     f"DefaultLuceneDocumentGenerator -impact -pretokenized -threads 4",
            "search": f"java -cp <anserini-fatjar.jar> io.anserini.search.SearchCollection -index {index} "
                      f"-topics <topics.tsv> -topicReader TsvString -output <run.trec> -impact -pretokenized"}


def export_anserini(source: str | Path, out_dir: str | Path, *, collection: str | Path | None = None,
                    cache_dir: str | Path | None = None, factor: float = 100.0, terms: str = "tokens",
                    doc_ids: str = "corpus", max_seq_length: int | None = None, max_active_dims: int | None = None,
                    docs_per_file: int = DOCS_PER_FILE, force: bool = False):
    """Export ``source`` to ``out_dir`` as an Anserini JsonVectorCollection artefact (see the module docstring).

    ``source``: a sparse index folder (the index stage's, ``indexer: sparse``), or, with ``collection`` (a BEIR
    folder) and ``cache_dir``, a sparse model whose corpus postings are encoded (cached, resumable) here.
    ``max_seq_length`` / ``max_active_dims`` apply to a model only (an index keeps its own).
    Returns the :class:`retrdistill.stages.base.StageResult`."""
    from retrdistill.models import model_fingerprint
    from retrdistill.stages.base import execute

    settings = ExportSettings(factor=float(factor), terms=terms, doc_ids=doc_ids, docs_per_file=docs_per_file)
    source = str(source)
    is_index = Path(source, "index.json").is_file()
    if is_index:
        if collection is not None or max_seq_length is not None or max_active_dims is not None:
            raise ConfigError(f"{source} is an index folder: it keeps its own corpus and encoding settings; "
                              f"give collection / max_seq_length / max_active_dims only with a model")
        _, info, manifest = index_source(Path(source))
        inputs = {"index": manifest.fingerprint}
        origin = {"index": source, "model": info.get("model")}
    else:
        if collection is None or cache_dir is None:
            raise ConfigError(f"{source!r} is not an index folder; to export a model give --collection (a BEIR "
                              f"folder) and --cache-dir")
        from retrdistill.data.beir import open_collection
        from retrdistill.families.sparse.index import SparseIndexer
        from retrdistill.indexers.model_check import check_model

        check_model(SparseIndexer(), source)
        corpus = open_collection(collection, Path(cache_dir) / "corpora").corpus
        inputs = {"model": model_fingerprint(source), "corpus": corpus.fingerprint}
        origin = {"model": source, "collection": str(collection), "max_seq_length": max_seq_length,
                  "max_active_dims": max_active_dims}
    config = {"factor": settings.factor, "terms": settings.terms, "doc_ids": settings.doc_ids,
              "docs_per_file": settings.docs_per_file, "max_seq_length": max_seq_length,
              "max_active_dims": max_active_dims, "format": FORMAT}

    def body(tmp: Path) -> dict[str, Any]:
        if is_index:
            index, info, _ = index_source(Path(source))
            from retrdistill.indexers.references import resolve_reference

            model_ref, model = resolve_reference(str(info["model"]), Path(source)), None
            ids = _doc_ids_file(Path(source) / "docids.txt", index.num_docs)
        else:
            index, model = model_postings(source, corpus, Path(cache_dir), max_seq_length, max_active_dims)
            model_ref = source
            ids = (d for start in range(0, len(corpus), 100_000)
                   for d in corpus.dataset[start:start + 100_000]["_id"])
        used = np.diff(np.asarray(index.indptr)) > 0
        names = term_names(vocabulary_tokens(model_ref, index.vocab_size, model), settings.terms, used)
        first, total = 0, None
        if is_index and "rows" in info:  # an index shard: its passages are a slice of the corpus's rows
            first, total = int(info["rows"][0]), int(info.get("corpus_documents") or 0) or None
        counts = write_vectors(index, ids, names, tmp / VECTORS, settings, first_row=first, corpus_rows=total)
        doc_freq = counts.pop("doc_freq")
        params = {"format": FORMAT, "version": 1, "factor": settings.factor, "terms": settings.terms,
                  "doc_ids": settings.doc_ids, "vocab_size": index.vocab_size, **origin,
                  "quantisation": "round(weight * factor), terms rounding to 0 left out", **counts,
                  "terms_used": int((doc_freq > 0).sum()),
                  "anserini": commands(str(Path(out_dir) / VECTORS))}
        write_json_atomic(tmp / PARAMS, params)
        log.info("anserini export: %d passages, %d postings (%d rounded to 0), %d empty", counts["documents"],
                 counts["postings"], counts["dropped_postings"], counts["empty_documents"])
        return {k: counts[k] for k in ("documents", "empty_documents", "postings", "dropped_postings")}

    return execute("export-anserini", "anserini-vectors", out_dir, config, inputs, body, force=force)


def model_postings(model_ref: str, corpus, cache_dir: Path, max_seq_length: int | None,
                    max_active_dims: int | None):
    """``(SparseIndex, model)``: the corpus's cached postings under a sparse model, as the ``sparse`` system
    builds them."""
    from retrdistill.families.sparse.index import SparseIndexer

    indexer = SparseIndexer(SparseIndexer.Options(max_active_dims=max_active_dims))
    model = indexer.load_model(model_ref, max_seq_length=max_seq_length)
    built = indexer.exact_index(model, corpus, model_ref=model_ref, cache_dir=cache_dir, max_seq_length=max_seq_length)
    return built.index, model
