"""BEIR-format collections: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/{train,dev,test}.tsv``.

The corpus is converted once to an Arrow file (cached by the corpus file's fingerprint) and opened memory-mapped
through ``datasets``, so a large corpus is never held as Python objects. Queries and qrels are small and held as
dicts. Every malformed line raises :class:`DataError` with file, line and what was expected; harmless deviations
(BOM, CRLF, blank lines, numeric ids, a qrels header line or its absence) are repaired and counted.
"""

from __future__ import annotations

import logging
import re
from array import array
from collections.abc import Container, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from retrdistill.artefacts import atomic_path, fingerprint_file
from retrdistill.data.row_lookup import RowLookup, id_hash
from retrdistill.data.jsonl import ReadReport, get_id, get_text, iter_json_objects, iter_lines
from retrdistill.errors import DataError

log = logging.getLogger(__name__)

Qrels = dict[str, dict[str, int]]
_ARROW_BATCH = 10_000
_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)  # int() alone would also take "1_0", " 3" and non-ASCII digits


def default_cache_dir() -> Path:
    import os

    return Path(os.environ.get("RETRDISTILL_CACHE", Path.home() / ".cache" / "retrdistill"))


def passage_text(title: str, text: str) -> str:
    """What encoders and BM25 see for a passage: title and text joined (BEIR convention)."""
    return f"{title} {text}".strip() if title else text


@dataclass
class Corpus:
    """A memory-mapped corpus: row i has ``_id``, ``title`` and ``text``."""

    path: Path
    fingerprint: str
    dataset: object  # datasets.Dataset
    report: ReadReport
    _rows: RowLookup | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.dataset)

    def id_list(self) -> list[str]:
        return self.dataset.data.column("_id").to_pylist()

    def texts(self, start: int, stop: int) -> list[str]:
        rows = self.dataset[start:stop]
        return [passage_text(t, x) for t, x in zip(rows["title"], rows["text"])]

    def texts_at(self, rows: Sequence[int]) -> list[str]:
        if len(rows) == 0:
            return []
        picked = self.dataset.select(list(rows))
        return [passage_text(t, x) for t, x in zip(picked["title"], picked["text"])]

    def iter_batches(self, batch_size: int = 10_000) -> Iterator[tuple[int, list[str], list[str]]]:
        """Yield (first row, ids, texts) in corpus order, ``batch_size`` rows at a time."""
        for start in range(0, len(self), batch_size):
            rows = self.dataset[start:start + batch_size]
            yield start, list(rows["_id"]), [passage_text(t, x) for t, x in zip(rows["title"], rows["text"])]

    def row_index(self) -> RowLookup:
        """doc id -> row, as a read-only mapping backed by a memory-mapped hash table (16 bytes a passage,
        built once beside the Arrow cache), not a dict of every id."""
        if self._rows is None:
            files = getattr(self.dataset, "cache_files", None) or []
            cache = Path(files[0]["filename"]).with_suffix(".rows.npy") if files else None
            self._rows = RowLookup.open(self.dataset.data.column("_id"), cache)
        return self._rows

    def ids_at(self, rows: Sequence[int]) -> list[str]:
        """The ids of the given rows (only those are converted from the Arrow column)."""
        import pyarrow as pa

        if len(rows) == 0:
            return []
        return self.dataset.data.column("_id").take(pa.array(np.asarray(rows, dtype=np.int64))).to_pylist()

    def hits(self, scores: np.ndarray, rows: np.ndarray) -> list[list[tuple[str, float]]]:
        """Search results ``(scores, rows)`` of shape (queries, k) as (doc id, score) lists; rows < 0 dropped."""
        wanted = np.unique(rows[rows >= 0])
        ids = dict(zip(wanted.tolist(), self.ids_at(wanted)))
        return [[(ids[r], float(s)) for s, r in zip(srow.tolist(), rrow.tolist()) if r >= 0]
                for srow, rrow in zip(scores, rows)]


def load_corpus(path: str | Path, cache_dir: str | Path | None = None) -> Corpus:
    """Validate ``corpus.jsonl`` and open it as a memory-mapped Arrow dataset (built once, then cached)."""
    import datasets

    path = Path(path)
    if path.is_dir():
        path = path / "corpus.jsonl"
    if not path.is_file():
        raise DataError(path, None, "corpus file not found (expected corpus.jsonl in BEIR format)")
    fp = fingerprint_file(path)
    cache = Path(cache_dir) if cache_dir else default_cache_dir() / "corpora"
    arrow_path = cache / f"corpus-{fp[:20]}.arrow"
    report = ReadReport(str(path))
    if not arrow_path.is_file():
        _corpus_to_arrow(path, arrow_path, report)
        _write_report(arrow_path, report)
    else:
        report = _read_report(arrow_path, report)
    dataset = datasets.Dataset.from_file(str(arrow_path))
    return Corpus(path=path, fingerprint=fp, dataset=dataset, report=report)


def _corpus_to_arrow(path: Path, arrow_path: Path, report: ReadReport) -> None:
    import pyarrow as pa

    schema = pa.schema([("_id", pa.string()), ("title", pa.string()), ("text", pa.string())])
    # For the duplicate-id check: a 64-bit hash and the line of every row (16 bytes a document, not a dict of ids).
    hashes, lines = array("q"), array("q")
    with atomic_path(arrow_path) as tmp:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            batch: dict[str, list[str]] = {"_id": [], "title": [], "text": []}
            for lineno, obj in iter_json_objects(path, report):
                doc_id = get_id(obj, path, lineno, report)
                hashes.append(id_hash(doc_id))
                lines.append(lineno)
                title = get_text(obj, path, lineno, "title", required=False)
                text = get_text(obj, path, lineno, "text", required=True)
                if not (title.strip() or text.strip()):
                    report.empty_texts += 1
                batch["_id"].append(doc_id)
                batch["title"].append(title)
                batch["text"].append(text)
                if len(batch["_id"]) >= _ARROW_BATCH:
                    writer.write_batch(pa.record_batch(batch, schema=schema))
                    batch = {k: [] for k in batch}
            if batch["_id"]:
                writer.write_batch(pa.record_batch(batch, schema=schema))
        _check_duplicate_ids(path, tmp, hashes, lines)
    report.rows = len(lines)
    if report.rows == 0:
        arrow_path.unlink()
        raise DataError(path, None, "the corpus holds no documents")
    if report.empty_texts:
        log.warning("%s: %d documents have an empty title and text (kept; they cannot be retrieved)", path, report.empty_texts)


def _check_duplicate_ids(path: Path, arrow_stream: Path, hashes: array, lines: array) -> None:
    """Raise on the first line whose id an earlier line already had; rows sharing a hash are compared by id."""
    import numpy as np
    import pyarrow as pa

    h = np.frombuffer(hashes, dtype=np.int64) if len(hashes) else np.zeros(0, np.int64)
    order = np.argsort(h, kind="stable")
    same = np.flatnonzero(h[order][1:] == h[order][:-1])
    if not len(same):
        return
    rows = np.unique(np.concatenate([order[same], order[same + 1]]))
    with pa.memory_map(str(arrow_stream)) as source:
        ids = pa.ipc.open_stream(source).read_all().column("_id").take(pa.array(rows)).to_pylist()
    first: dict[str, int] = {}
    repeat: tuple[int, str, int] | None = None
    for row, doc_id in zip(rows.tolist(), ids):
        if doc_id not in first:
            first[doc_id] = lines[row]
        elif repeat is None or lines[row] < repeat[0]:
            repeat = (lines[row], doc_id, first[doc_id])
    if repeat is not None:
        raise DataError(path, repeat[0], f"duplicate document id {repeat[1]!r} (first on line {repeat[2]})")


def _write_report(arrow_path: Path, report: ReadReport) -> None:
    from retrdistill.artefacts import write_json_atomic

    write_json_atomic(arrow_path.with_suffix(".report.json"), {"rows": report.rows, **report.repairs()})


def _read_report(arrow_path: Path, report: ReadReport) -> ReadReport:
    import json

    side = arrow_path.with_suffix(".report.json")
    if side.is_file():
        raw = json.loads(side.read_text())
        report.rows = raw.pop("rows", 0)
        for k, v in raw.items():
            setattr(report, k, bool(v) if k == "bom_removed" else v)
    return report


def load_queries(path: str | Path) -> tuple[dict[str, str], ReadReport]:
    """``queries.jsonl`` -> {query id: text}. Empty query texts and duplicate ids are errors."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, "queries file not found (expected queries.jsonl in BEIR format)")
    report = ReadReport(str(path))
    queries: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for lineno, obj in iter_json_objects(path, report):
        qid = get_id(obj, path, lineno, report)
        text = get_text(obj, path, lineno, "text", required=True)
        if not text.strip():
            raise DataError(path, lineno, f"query {qid!r} has an empty text")
        if qid in queries:
            raise DataError(path, lineno, f"duplicate query id {qid!r} (first on line {first_line[qid]})")
        queries[qid] = text
        first_line[qid] = lineno
    report.rows = len(queries)
    return queries, report


@dataclass
class QrelsReport(ReadReport):
    header_skipped: bool = False
    duplicate_rows: int = 0
    unknown_queries: dict[str, int] = field(default_factory=dict)  # qid -> judgments dropped
    unknown_documents: int = 0  # judgments kept: relevant but absent from the corpus

    def repairs(self) -> dict[str, int]:
        out = super().repairs()
        out.update({k: int(v) for k, v in {
            "header_skipped": self.header_skipped,
            "duplicate_rows": self.duplicate_rows,
            "judgments_of_unknown_queries_dropped": sum(self.unknown_queries.values()),
            "judged_documents_not_in_corpus": self.unknown_documents,
        }.items() if v})
        return out


def load_qrels(
    path: str | Path,
    *,
    query_ids: set[str] | dict | None = None,
    corpus_ids: Container[str] | None = None,
) -> tuple[Qrels, QrelsReport]:
    """Read a qrels file with or without a header line.

    Accepts BEIR's ``query-id<TAB>corpus-id<TAB>score`` and TREC's ``qid iter docid grade``. Grades must be
    integers. A first line whose grade is not an integer is a header (skipped and counted); anywhere else it
    is an error. Judgments of queries not in ``query_ids`` are dropped and counted; judged documents missing
    from ``corpus_ids`` are kept (they are relevant but unretrievable) and counted. A file that judges queries,
    none of them in ``query_ids``, is a DataError (the qrels of another collection, or ids written differently).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, "qrels file not found (expected query-id, corpus-id, grade rows)")
    report = QrelsReport(str(path))
    qrels: Qrels = {}
    first_content = True
    for lineno, line in iter_lines(path, report):
        if not line.strip():
            report.blank_lines_skipped += 1
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        fields = [f.strip() for f in fields]
        if len(fields) == 4:
            qid, _, doc_id, grade_text = fields
        elif len(fields) == 3:
            qid, doc_id, grade_text = fields
        else:
            raise DataError(path, lineno, f"expected 3 tab-separated fields (query-id, corpus-id, grade) or 4 (TREC), got {len(fields)}")
        try:
            if not _INTEGER.fullmatch(grade_text):
                raise ValueError(grade_text)
            grade = int(grade_text)
        except ValueError:
            if first_content:
                report.header_skipped = True
                first_content = False
                continue
            raise DataError(path, lineno, f"expected an integer grade, got {grade_text!r}") from None
        first_content = False
        if not qid or not doc_id:
            raise DataError(path, lineno, "empty query id or corpus id")
        if query_ids is not None and qid not in query_ids:
            report.unknown_queries[qid] = report.unknown_queries.get(qid, 0) + 1
            continue
        judged = qrels.setdefault(qid, {})
        if doc_id in judged:
            if judged[doc_id] != grade:
                raise DataError(path, lineno, f"({qid}, {doc_id}) judged again with grade {grade}, earlier {judged[doc_id]}")
            report.duplicate_rows += 1
            continue
        judged[doc_id] = grade
        report.rows += 1
        if corpus_ids is not None and doc_id not in corpus_ids:
            report.unknown_documents += 1
    if report.unknown_queries and not qrels:
        dropped = sum(report.unknown_queries.values())
        raise DataError(path, None, f"none of the {len(report.unknown_queries)} judged queries ({dropped} judgment "
                                    f"rows) is one of the {len(query_ids)} queries of the queries file (judged, "
                                    f"e.g.: {', '.join(map(repr, list(report.unknown_queries)[:3]))}; queries, "
                                    f"e.g.: {', '.join(map(repr, list(query_ids)[:3]))}); are these the qrels of "
                                    f"another collection?")
    if report.unknown_queries:
        log.warning("%s: dropped %d judgments of %d queries absent from the queries file", path,
                    sum(report.unknown_queries.values()), len(report.unknown_queries))
    if report.unknown_documents:
        log.info("%s: %d judged documents are not in the corpus (kept as relevant, unretrievable)", path, report.unknown_documents)
    return qrels, report


@dataclass
class Collection:
    """A BEIR-format folder, opened lazily: the corpus memory-mapped, queries and qrels as dicts."""

    root: Path
    cache_dir: Path | None = None
    _corpus: Corpus | None = None
    _queries: dict[str, str] | None = None

    @property
    def corpus(self) -> Corpus:
        if self._corpus is None:
            self._corpus = load_corpus(self.root / "corpus.jsonl", self.cache_dir)
        return self._corpus

    @property
    def queries(self) -> dict[str, str]:
        if self._queries is None:
            self._queries, _ = load_queries(self.root / "queries.jsonl")
        return self._queries

    def splits(self) -> list[str]:
        return sorted(p.stem for p in (self.root / "qrels").glob("*.tsv"))

    def qrels_path(self, split: str) -> Path:
        path = self.root / "qrels" / f"{split}.tsv"
        if not path.is_file():
            raise DataError(path, None, f"no qrels for split {split!r}; this collection has: {', '.join(self.splits()) or 'none'}")
        return path

    def qrels(self, split: str, *, check_corpus: bool = False) -> tuple[Qrels, QrelsReport]:
        corpus_ids = self.corpus.row_index() if check_corpus else None
        return load_qrels(self.qrels_path(split), query_ids=self.queries, corpus_ids=corpus_ids)


def open_collection(root: str | Path, cache_dir: str | Path | None = None) -> Collection:
    root = Path(root)
    if not (root / "corpus.jsonl").is_file():
        raise DataError(root, None, "not a BEIR-format folder: corpus.jsonl is missing")
    return Collection(root=root, cache_dir=Path(cache_dir) if cache_dir else None)


def find_collections(paths: Sequence[str | Path]) -> dict[str, Path]:
    """The BEIR-format collections named by ``paths``, by dataset name (the folder's name), in the order given.

    Each path is either a collection (a folder with ``corpus.jsonl``) or a datasets directory whose immediate
    sub-folders holding a ``corpus.jsonl`` are collections (taken in name order; other entries are ignored).
    Two collections with the same folder name, or a path that holds none, are errors naming the path.
    """
    found: dict[str, Path] = {}
    for raw in paths:
        path = Path(raw)
        if (path / "corpus.jsonl").is_file():
            members = [path]
        elif path.is_dir():
            members = sorted(p for p in path.iterdir() if p.is_dir() and (p / "corpus.jsonl").is_file())
            if not members:
                raise DataError(path, None, "holds no BEIR-format collection: expected corpus.jsonl here or in its sub-folders")
        else:
            raise DataError(path, None, "not found: expected a BEIR-format folder or a folder of them")
        for member in members:
            name = member.name
            if name in found and found[name].resolve() != member.resolve():
                raise DataError(member, None, f"a second dataset named {name!r} (the first is {found[name]}); "
                                              f"dataset names come from folder names and must differ")
            found[name] = member
    return found
