"""Property-based tests of the BEIR loaders (hypothesis, derandomized so CI sees the same examples every run).

* valid files of arbitrary Unicode (tabs, newlines, line separators and NULs inside JSON strings, long
  passages), written with or without a BOM, CRLF line ends, blank lines and numeric ids, load back exactly and
  every repair is counted in the report;
* one corruption injected at a random line is reported as a ``DataError`` naming that file and exactly that
  line, and a failed corpus load leaves nothing in the cache;
* arbitrary bytes never raise anything but ``DataError``.

The example-based cases (one per message) live in test_loaders.py.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retrdistill.data.beir import load_corpus, load_qrels, load_queries
from retrdistill.errors import DataError

FUZZ = settings(max_examples=40, derandomize=True, deadline=None, database=None,
                suppress_health_check=list(HealthCheck), print_blob=False)
FEW = settings(FUZZ, max_examples=6)  # per parametrized case: every corruption kind is exercised

# Any Unicode scalar value (no lone surrogates: those cannot be stored as UTF-8 and are a corruption below).
CHARS = st.characters(blacklist_categories=("Cs",))
TEXT = st.text(CHARS, max_size=60)
LONG_TEXT = st.builds(lambda unit, times: unit * times, st.text(CHARS, min_size=1, max_size=8), st.integers(2_000, 20_000))
IDS = st.text(CHARS, min_size=1, max_size=10).filter(lambda s: not any(c.isspace() for c in s))
TOKEN_IDS = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF, blacklist_categories=("Cs", "Zs", "Cc")),
                    min_size=1, max_size=8)


def _scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="fuzz-loaders-"))


def _is_canonical_int(doc_id: str) -> bool:
    return doc_id.isascii() and doc_id.isdigit() and str(int(doc_id)) == doc_id and len(doc_id) < 18


@st.composite
def jsonl_layout(draw, n_lines: int):
    """How a file of ``n_lines`` content lines is laid out: BOM, line ends, blank lines, last newline."""
    return {
        "bom": draw(st.booleans()),
        "crlf": draw(st.lists(st.booleans(), min_size=n_lines, max_size=n_lines)),
        "blank_after": draw(st.lists(st.integers(0, 2), min_size=n_lines, max_size=n_lines)),
        "final_newline": draw(st.booleans()),
    }


def _assemble(lines: list[bytes], layout: dict) -> tuple[bytes, dict[str, int], list[int]]:
    """Join content lines per ``layout``; returns the bytes, the expected repairs and each line's 1-based number."""
    out, numbers = [], []
    crlf = blank = 0
    physical = 0
    for i, line in enumerate(lines):
        last = i == len(lines) - 1
        physical += 1
        numbers.append(physical)
        end = b"\r\n" if layout["crlf"][i] else b"\n"
        blanks = 0 if last else layout["blank_after"][i]
        if last and not layout["final_newline"]:
            end = b""
        out.append(line + end)
        crlf += end == b"\r\n"
        for _ in range(blanks):
            out.append(end)
            crlf += end == b"\r\n"
            physical += 1
        blank += blanks
    data = b"".join(out)
    if layout["bom"]:
        data = b"\xef\xbb\xbf" + data
    return data, {"bom_removed": int(layout["bom"]), "crlf_lines": crlf, "blank_lines_skipped": blank}, numbers


@st.composite
def corpora(draw, max_docs: int = 25, long_docs: bool = True):
    text = st.one_of(TEXT, LONG_TEXT) if long_docs else TEXT
    docs = draw(st.lists(
        st.fixed_dictionaries({"_id": IDS, "title": st.one_of(st.none(), st.just(_MISSING), TEXT), "text": text}),
        min_size=1, max_size=max_docs, unique_by=lambda d: d["_id"]))
    as_int = draw(st.lists(st.booleans(), min_size=len(docs), max_size=len(docs)))
    ascii_only = draw(st.booleans())
    lines, numeric = [], 0
    for doc, want_int in zip(docs, as_int):
        row = {k: v for k, v in doc.items() if v is not _MISSING}
        if want_int and _is_canonical_int(doc["_id"]):
            row["_id"] = int(doc["_id"])
            numeric += 1
        lines.append(json.dumps(row, ensure_ascii=ascii_only).encode("utf-8"))
    return docs, lines, numeric


_MISSING = object()


def _expected_empty(docs) -> int:
    return sum(1 for d in docs if not ((d["title"] if isinstance(d["title"], str) else "").strip() or d["text"].strip()))


# ------------------------------------------------------------------ round trips
@FUZZ
@given(data=st.data())
def test_valid_corpus_round_trips_with_counted_repairs(data):
    docs, lines, numeric = data.draw(corpora())
    layout = data.draw(jsonl_layout(len(lines)))
    raw, repairs, _ = _assemble(lines, layout)
    work = _scratch()
    path = work / "corpus.jsonl"
    path.write_bytes(raw)
    corpus = load_corpus(path, work / "cache")
    assert corpus.id_list() == [d["_id"] for d in docs]
    assert corpus.dataset["title"] == [d["title"] if isinstance(d["title"], str) else "" for d in docs]
    assert corpus.dataset["text"] == [d["text"] for d in docs]
    report = corpus.report
    assert report.rows == len(docs)
    expected = {**repairs, "numeric_ids_converted": numeric, "empty_texts": _expected_empty(docs)}
    assert report.repairs() == {k: v for k, v in expected.items() if v}
    again = load_corpus(path, work / "cache")  # from the Arrow cache: same rows, same report
    assert again.id_list() == corpus.id_list() and again.report.repairs() == report.repairs()


@FUZZ
@given(data=st.data())
def test_valid_queries_round_trip(data):
    queries = data.draw(st.dictionaries(IDS, TEXT.filter(lambda t: t.strip()), min_size=1, max_size=25))
    ascii_only = data.draw(st.booleans())
    lines = [json.dumps({"_id": q, "text": t}, ensure_ascii=ascii_only).encode() for q, t in queries.items()]
    layout = data.draw(jsonl_layout(len(lines)))
    raw, repairs, _ = _assemble(lines, layout)
    path = _scratch() / "queries.jsonl"
    path.write_bytes(raw)
    loaded, report = load_queries(path)
    assert loaded == queries and list(loaded) == list(queries)
    assert report.rows == len(queries)
    assert report.repairs() == {k: v for k, v in repairs.items() if v}


@st.composite
def qrels_files(draw):
    judgments = draw(st.dictionaries(TOKEN_IDS, st.dictionaries(TOKEN_IDS, st.integers(-3, 5), min_size=1, max_size=5),
                                     min_size=1, max_size=8))
    rows = [(q, d, g) for q, docs in judgments.items() for d, g in docs.items()]
    rows = draw(st.permutations(rows))
    repeats = draw(st.lists(st.sampled_from(rows), max_size=3))  # exact repeats: harmless, counted
    trec = draw(st.booleans())
    header = not trec and draw(st.booleans())
    lines = []
    if header:
        lines.append(b"query-id\tcorpus-id\tscore")
    for q, d, g in rows + repeats:
        plus = draw(st.booleans()) and g > 0
        grade = f"+{g}" if plus else str(g)
        lines.append((f"{q} 0 {d} {grade}" if trec else f"{q}\t{d}\t{grade}").encode())
    known_q = draw(st.sets(st.sampled_from(sorted(judgments)))) | {rows[0][0]}
    all_docs = sorted({d for _, d, _ in rows})
    known_d = draw(st.sets(st.sampled_from(all_docs)))
    return judgments, rows, repeats, header, lines, known_q, known_d


@FUZZ
@given(data=st.data())
def test_valid_qrels_round_trip_with_unknown_ids_counted(data):
    judgments, rows, repeats, header, lines, known_q, known_d = data.draw(qrels_files())
    layout = data.draw(jsonl_layout(len(lines)))
    raw, repairs, _ = _assemble(lines, layout)
    path = _scratch() / "qrels.tsv"
    path.write_bytes(raw)

    everything, report = load_qrels(path)
    assert everything == judgments
    assert report.header_skipped == header and report.duplicate_rows == len(repeats)
    assert report.rows == len(rows)

    kept, report = load_qrels(path, query_ids=known_q, corpus_ids=known_d)
    assert kept == {q: docs for q, docs in judgments.items() if q in known_q}
    dropped: dict[str, int] = {}
    for q, _, _ in rows + repeats:
        if q not in known_q:
            dropped[q] = dropped.get(q, 0) + 1
    assert report.unknown_queries == dropped
    assert report.unknown_documents == sum(1 for q, d, _ in rows if q in known_q and d not in known_d)
    assert report.duplicate_rows == sum(1 for q, _, _ in repeats if q in known_q)
    expected = {**repairs, "header_skipped": int(header), "duplicate_rows": report.duplicate_rows,
                "judgments_of_unknown_queries_dropped": sum(dropped.values()),
                "judged_documents_not_in_corpus": report.unknown_documents}
    assert report.repairs() == {k: v for k, v in expected.items() if v}


def test_very_long_passages_round_trip():
    work = _scratch()
    long_text = ("tab\there, newline\nthere, emoji \U0001F600, NUL \x00, LS \u2028; " * 60_000)  # ~3.5 MB
    rows = [{"_id": "long", "title": "T\tT", "text": long_text}, {"_id": "short", "text": "x"}]
    path = work / "corpus.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    corpus = load_corpus(path, work / "cache")
    assert corpus.dataset["text"] == [long_text, "x"] and corpus.dataset["title"] == ["T\tT", ""]


# ------------------------------------------------------------------ one corruption, exactly its line
def _surrogate_line(_docs, _i):
    return b'{"_id": "s", "text": "ok \\ud83d alone"}'


CORPUS_CORRUPTIONS = {
    "truncated JSON": lambda line, cut, docs, i: line[:max(1, min(cut, len(line) - 1))],
    "trailing garbage": lambda line, cut, docs, i: line + b" extra",
    "not an object": lambda line, cut, docs, i: json.dumps([docs[i]["_id"], docs[i]["text"]]).encode(),
    "bare value": lambda line, cut, docs, i: b"null",
    "missing id": lambda line, cut, docs, i: json.dumps({"text": "x"}).encode(),
    "float id": lambda line, cut, docs, i: b'{"_id": 1.5, "text": "x"}',
    "NaN id": lambda line, cut, docs, i: b'{"_id": NaN, "text": "x"}',
    "bool id": lambda line, cut, docs, i: b'{"_id": true, "text": "x"}',
    "list id": lambda line, cut, docs, i: b'{"_id": ["a"], "text": "x"}',
    "empty id": lambda line, cut, docs, i: b'{"_id": "", "text": "x"}',
    "id with whitespace": lambda line, cut, docs, i: b'{"_id": "a\\u00a0b", "text": "x"}',
    "missing text": lambda line, cut, docs, i: b'{"_id": "zz-missing"}',
    "null text": lambda line, cut, docs, i: b'{"_id": "zz-null", "text": null}',
    "number text": lambda line, cut, docs, i: b'{"_id": "zz-num", "text": 42}',
    "object text": lambda line, cut, docs, i: b'{"_id": "zz-obj", "text": {"a": 1}}',
    "list title": lambda line, cut, docs, i: b'{"_id": "zz-title", "title": ["t"], "text": "x"}',
    "invalid UTF-8": lambda line, cut, docs, i: line[:cut] + b"\xff\xfe" + line[cut:],
    "truncated UTF-8 sequence": lambda line, cut, docs, i: line[:cut] + b"\xe2\x82" + line[cut:],
    "lone surrogate escape": lambda line, cut, docs, i: _surrogate_line(docs, i),
    "nested too deeply": lambda line, cut, docs, i: b'{"_id": "deep", "text": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",
    "5000-digit integer": lambda line, cut, docs, i: b'{"_id": 1' + b"0" * 5000 + b', "text": "x"}',
}


@pytest.mark.parametrize("kind", sorted(CORPUS_CORRUPTIONS) + ["duplicate id"])
@FEW
@given(data=st.data())
def test_one_corrupt_corpus_line_is_named_exactly(data, kind):
    docs, lines, _ = data.draw(corpora(max_docs=12, long_docs=False))
    layout = data.draw(jsonl_layout(len(lines)))
    if kind == "duplicate id":
        if len(docs) < 2:
            docs.append({"_id": docs[0]["_id"] + "-2", "title": None, "text": "y"})
            lines.append(json.dumps(docs[-1]).encode())
            layout = {**layout, "crlf": layout["crlf"] + [False], "blank_after": layout["blank_after"] + [0]}
        i = data.draw(st.integers(1, len(lines) - 1))
        j = data.draw(st.integers(0, i - 1))
        lines[i] = json.dumps({"_id": docs[j]["_id"], "text": "again"}).encode()
    else:
        i = data.draw(st.integers(0, len(lines) - 1))
        cut = data.draw(st.integers(1, max(1, len(lines[i]) - 1)))
        lines[i] = CORPUS_CORRUPTIONS[kind](lines[i], cut, docs, i)
    raw, _, numbers = _assemble(lines, layout)
    work = _scratch()
    path = work / "corpus.jsonl"
    path.write_bytes(raw)
    with pytest.raises(DataError) as err:
        load_corpus(path, work / "cache")
    assert err.value.line == numbers[i], (kind, str(err.value))
    assert err.value.path == str(path) and f"{path}, line {numbers[i]}: " in str(err.value)
    assert err.value.problem
    if kind == "duplicate id":
        assert f"first on line {numbers[j]}" in err.value.problem
    leftovers = list((work / "cache").iterdir()) if (work / "cache").exists() else []
    assert leftovers == [], "a failed load must leave no cache file (nor a temporary one)"


QUERY_CORRUPTIONS = {
    "truncated JSON": lambda line, cut: line[:max(1, min(cut, len(line) - 1))],
    "not an object": lambda line, cut: b'["q", "text"]',
    "missing id": lambda line, cut: b'{"text": "x"}',
    "float id": lambda line, cut: b'{"_id": 2.0, "text": "x"}',
    "missing text": lambda line, cut: b'{"_id": "zz"}',
    "number text": lambda line, cut: b'{"_id": "zz", "text": 3}',
    "blank text": lambda line, cut: b'{"_id": "zz", "text": " \\t\\n"}',
    "empty text": lambda line, cut: b'{"_id": "zz", "text": ""}',
    "invalid UTF-8": lambda line, cut: line[:cut] + b"\xc0" + line[cut:],
    "lone surrogate escape": lambda line, cut: b'{"_id": "zz", "text": "\\udfff"}',
}


@pytest.mark.parametrize("kind", sorted(QUERY_CORRUPTIONS) + ["duplicate id"])
@FEW
@given(data=st.data())
def test_one_corrupt_query_line_is_named_exactly(data, kind):
    queries = data.draw(st.dictionaries(IDS.filter(lambda q: q != "zz"), TEXT.filter(lambda t: t.strip()),
                                        min_size=2, max_size=12))
    lines = [json.dumps({"_id": q, "text": t}).encode() for q, t in queries.items()]
    layout = data.draw(jsonl_layout(len(lines)))
    if kind == "duplicate id":
        i = data.draw(st.integers(1, len(lines) - 1))
        j = data.draw(st.integers(0, i - 1))
        lines[i] = json.dumps({"_id": list(queries)[j], "text": "again"}).encode()
    else:
        i = data.draw(st.integers(0, len(lines) - 1))
        lines[i] = QUERY_CORRUPTIONS[kind](lines[i], data.draw(st.integers(1, max(1, len(lines[i]) - 1))))
    raw, _, numbers = _assemble(lines, layout)
    path = _scratch() / "queries.jsonl"
    path.write_bytes(raw)
    with pytest.raises(DataError) as err:
        load_queries(path)
    assert err.value.line == numbers[i], (kind, str(err.value))
    assert f"{path}, line {numbers[i]}: " in str(err.value)


QRELS_CORRUPTIONS = {
    "decimal grade": lambda q, d: f"{q}\t{d}\t1.5",
    "word grade": lambda q, d: f"{q}\t{d}\thigh",
    "underscore grade": lambda q, d: f"{q}\t{d}\t1_0",
    "non-ASCII digit grade": lambda q, d: f"{q}\t{d}\t\u0663",
    "exponent grade": lambda q, d: f"{q}\t{d}\t1e3",
    "empty grade": lambda q, d: f"{q}\t{d}\t",
    "two fields": lambda q, d: f"{q}\t{d}",
    "five fields": lambda q, d: f"{q}\t0\t{d}\t1\textra",
    "empty query id": lambda q, d: f"\t{d}\t1",
    "empty doc id": lambda q, d: f"{q}\t\t1",
}
GRADE_KINDS = {k for k in QRELS_CORRUPTIONS if "grade" in k}


@pytest.mark.parametrize("kind", sorted(QRELS_CORRUPTIONS) + ["conflicting grade", "invalid UTF-8"])
@FEW
@given(data=st.data())
def test_one_corrupt_qrels_line_is_named_exactly(data, kind):
    judgments, rows, _, _, _, _, _ = data.draw(qrels_files())
    lines = [f"{q}\t{d}\t{g}".encode() for q, d, g in rows]
    if len(lines) < 2:
        lines.append(b"qq\tdd\t1")
    layout = data.draw(jsonl_layout(len(lines)))
    i = data.draw(st.integers(1, len(lines) - 1))  # line 1 with a non-integer grade is a header: tested below
    q, d, g = rows[0]
    if kind == "conflicting grade":
        lines[i] = f"{q}\t{d}\t{g + 1}".encode()
    elif kind == "invalid UTF-8":
        lines[i] = lines[i][:1] + b"\x80" + lines[i][1:]
    else:
        lines[i] = QRELS_CORRUPTIONS[kind](q, d).encode()
    raw, _, numbers = _assemble(lines, layout)
    path = _scratch() / "qrels.tsv"
    path.write_bytes(raw)
    with pytest.raises(DataError) as err:
        load_qrels(path)
    assert err.value.line == numbers[i], (kind, str(err.value))
    assert f"{path}, line {numbers[i]}: " in str(err.value)
    if kind in GRADE_KINDS:
        assert "expected an integer grade" in err.value.problem


@pytest.mark.parametrize("kind", sorted(GRADE_KINDS))
@FEW
@given(data=st.data())
def test_non_integer_grade_on_the_first_line_is_a_counted_header(data, kind):
    _, rows, _, _, _, _, _ = data.draw(qrels_files())
    lines = [QRELS_CORRUPTIONS[kind]("query-id", "corpus-id")] + [f"{q}\t{d}\t{g}" for q, d, g in rows]
    path = _scratch() / "qrels.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    qrels, report = load_qrels(path)
    assert report.header_skipped and report.repairs()["header_skipped"] == 1
    assert sum(len(v) for v in qrels.values()) == len(rows)


# ------------------------------------------------------------------ anything at all: DataError or a result
def _json_values():
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), TEXT)
    return st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(st.sampled_from(["_id", "text", "title", "x"]), inner, max_size=4)),
                        max_leaves=8)


NOISE_LINES = st.lists(st.one_of(st.binary(max_size=40), _json_values().map(lambda v: json.dumps(v).encode())),
                       min_size=1, max_size=8)


@FUZZ
@given(lines=NOISE_LINES, which=st.sampled_from(["corpus", "queries", "qrels"]))
def test_arbitrary_input_raises_only_data_error(lines, which):
    work = _scratch()
    path = work / "input"
    path.write_bytes(b"\n".join(lines))
    loader = {"corpus": lambda: load_corpus(path, work / "cache"), "queries": lambda: load_queries(path),
              "qrels": lambda: load_qrels(path)}[which]
    try:
        loader()
    except DataError as exc:
        assert exc.path == str(path) and exc.problem
        assert exc.line is None or 1 <= exc.line <= len(lines)
