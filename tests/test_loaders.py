"""BEIR loaders on the real sample and on bad input: every error names file, line and what was expected."""

from __future__ import annotations

import json

import pytest

from retrdistill.data.beir import load_corpus, load_qrels, load_queries, open_collection
from retrdistill.errors import DataError


def test_sample_loads_every_judgment(sample_dir, tmp_path):
    collection = open_collection(sample_dir, tmp_path)
    assert len(collection.corpus) == 5000
    assert len(collection.queries) == 50
    qrels, report = collection.qrels("test", check_corpus=True)
    assert sum(len(d) for d in qrels.values()) == 4102  # no header: line one is a judgment
    assert len(qrels) == 43
    assert not report.header_skipped
    grades = [g for d in qrels.values() for g in d.values()]
    assert (grades.count(1), grades.count(2), grades.count(3)) == (1601, 1804, 697)


def test_qrels_with_beir_header_line(tmp_path):
    path = tmp_path / "test.tsv"
    path.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\n")
    qrels, report = load_qrels(path)
    assert qrels == {"q1": {"d1": 1, "d2": 0}}
    assert report.header_skipped


def test_qrels_trec_four_columns(tmp_path):
    path = tmp_path / "qrels.txt"
    path.write_text("q1 0 d1 2\nq2 0 d3 1\n")
    qrels, _ = load_qrels(path)
    assert qrels == {"q1": {"d1": 2}, "q2": {"d3": 1}}


@pytest.mark.parametrize(
    "content, line, fragment",
    [
        ("q1\td1\t1\nq1\td2\tx\n", 2, "integer grade"),
        ("q1\td1\t1\nq1\td2\t1.5\n", 2, "integer grade"),
        ("q1\td1\t1\nq1\td2\n", 2, "expected 3 tab-separated fields"),
        ("q1\td1\t1\nq1\td1\t2\n", 2, "judged again"),
    ],
)
def test_qrels_bad_lines(tmp_path, content, line, fragment):
    path = tmp_path / "bad.tsv"
    path.write_text(content)
    with pytest.raises(DataError) as err:
        load_qrels(path)
    assert err.value.line == line and fragment in str(err.value) and str(path) in str(err.value)


def test_qrels_unknown_queries_and_documents_are_counted(tmp_path):
    path = tmp_path / "q.tsv"
    path.write_text("q1\td1\t1\nq9\td1\t1\nq1\td404\t1\n")
    qrels, report = load_qrels(path, query_ids={"q1"}, corpus_ids={"d1"})
    assert qrels == {"q1": {"d1": 1, "d404": 1}}
    assert report.unknown_queries == {"q9": 1}
    assert report.unknown_documents == 1


def _write_lines(path, lines, newline="\n"):
    path.write_bytes(newline.join(lines).encode("utf-8") + newline.encode())


@pytest.mark.parametrize(
    "lines, line, fragment",
    [
        (['{"_id": "a", "text": "x"}', '{"_id": "b", "text": '], 2, "one JSON object per line"),
        (['{"_id": "a", "text": "x"}', '["b", "y"]'], 2, "expected a JSON object"),
        (['{"_id": "a", "text": "x"}', '{"text": "y"}'], 2, "missing field '_id'"),
        (['{"_id": "a", "text": "x"}', '{"_id": "b"}'], 2, "missing field 'text'"),
        (['{"_id": "a", "text": "x"}', '{"_id": "b", "text": 7}'], 2, "must be a string"),
        (['{"_id": "a", "text": "x"}', '{"_id": "a", "text": "y"}'], 2, "duplicate document id 'a' (first on line 1)"),
        (['{"_id": "a b", "text": "x"}'], 1, "whitespace"),
        (['{"_id": ["a"], "text": "x"}'], 1, "must be a string"),
    ],
)
def test_corpus_bad_lines(tmp_path, lines, line, fragment):
    path = tmp_path / "corpus.jsonl"
    _write_lines(path, lines)
    with pytest.raises(DataError) as err:
        load_corpus(path, tmp_path / "cache")
    assert err.value.line == line and fragment in str(err.value)
    assert not list((tmp_path / "cache").glob("*.arrow")), "a failed load must leave no cache file"


def test_corpus_invalid_utf8_names_line(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b'{"_id": "a", "text": "ok"}\n{"_id": "b", "text": "caf\xe9"}\n')
    with pytest.raises(DataError) as err:
        load_corpus(path, tmp_path / "cache")
    assert err.value.line == 2 and "UTF-8" in str(err.value)


def test_corpus_repairs_bom_crlf_blank_and_numeric_ids(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"_id": 1, "title": null, "text": "one"}\r\n\r\n{"_id": "2", "title": "T", "text": ""}\r\n')
    corpus = load_corpus(path, tmp_path / "cache")
    assert corpus.id_list() == ["1", "2"]
    assert corpus.texts(0, 2) == ["one", "T"]
    assert corpus.report.repairs() == {"bom_removed": 1, "crlf_lines": 3, "blank_lines_skipped": 1, "numeric_ids_converted": 1}
    again = load_corpus(path, tmp_path / "cache")  # from the Arrow cache, with the same report
    assert again.report.repairs() == corpus.report.repairs()


def test_queries_empty_text_and_duplicates(tmp_path):
    path = tmp_path / "queries.jsonl"
    _write_lines(path, [json.dumps({"_id": "q1", "text": "  "})])
    with pytest.raises(DataError, match="line 1: query 'q1' has an empty text"):
        load_queries(path)
    _write_lines(path, [json.dumps({"_id": "q1", "text": "a"}), json.dumps({"_id": "q1", "text": "b"})])
    with pytest.raises(DataError, match="line 2: duplicate query id 'q1'"):
        load_queries(path)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(DataError, match="corpus.jsonl is missing"):
        open_collection(tmp_path)
    (tmp_path / "corpus.jsonl").write_text('{"_id": "a", "text": "x"}\n')
    with pytest.raises(DataError, match="no qrels for split 'dev'"):
        open_collection(tmp_path, tmp_path / "c").qrels_path("dev")


def test_corpus_is_memory_mapped_arrow(sample_dir, tmp_path):
    corpus = load_corpus(sample_dir / "corpus.jsonl", tmp_path)
    assert corpus.dataset.cache_files, "the corpus must be backed by an Arrow file, not Python lists"
    first = json.loads((sample_dir / "corpus.jsonl").read_text(encoding="utf-8").split("\n")[0])
    assert corpus.id_list()[0] == first["_id"]
    assert corpus.texts(0, 1) == [first["text"]]
