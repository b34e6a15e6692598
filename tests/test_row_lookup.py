"""Passage id -> row through the memory-mapped hash table that replaced a dict of every id."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from retrdistill.data.beir import load_corpus
from retrdistill.data.row_lookup import RowLookup, id_hash


def test_lookup_equals_a_dict_on_the_sample(tmp_path, sample_dir):
    corpus = load_corpus(sample_dir, tmp_path / "corpora")
    ids = corpus.dataset.data.column("_id").to_pylist()
    lookup = corpus.row_index()
    assert len(lookup) == len(ids) == 5000
    assert all(lookup[d] == i for i, d in enumerate(ids))
    assert list(lookup) == ids
    assert "no-such-passage" not in lookup and lookup.get("no-such-passage") is None
    with pytest.raises(KeyError, match="no-such-passage"):
        lookup["no-such-passage"]
    picked = [ids[4321], ids[7], ids[0]]
    assert lookup.rows_of(picked).tolist() == [4321, 7, 0]
    assert corpus.ids_at([4321, 7]) == [ids[4321], ids[7]]
    # stored beside the Arrow cache and memory-mapped when the corpus is opened again
    files = list((tmp_path / "corpora").glob("*.rows.npy"))
    assert len(files) == 1
    again = load_corpus(sample_dir, tmp_path / "corpora").row_index()
    assert isinstance(again._rows, np.memmap) and again[ids[123]] == 123


def test_hash_collisions_are_resolved_by_comparing_ids():
    ids = pa.chunked_array([pa.array(["x", "a", "b"])])
    h = id_hash("a")
    # rows 0 and 1 share a hash (as two ids whose hashes collide would): the id decides
    table = np.array(sorted([(h, 0), (h, 1), (id_hash("b"), 2)]), dtype=np.int64)
    lookup = RowLookup(table, ids)
    assert lookup["a"] == 1
    assert lookup.get("x") is None  # "x" hashes elsewhere; only its true hash is searched
    assert lookup["b"] == 2


def test_hits_map_rows_to_ids_and_drop_missing(tmp_path, sample_dir):
    corpus = load_corpus(sample_dir, tmp_path / "corpora")
    ids = corpus.dataset.data.column("_id").to_pylist()
    hits = corpus.hits(np.array([[0.9, 0.5, 0.0]], dtype=np.float32), np.array([[10, 3, -1]]))
    assert hits == [[(ids[10], pytest.approx(0.9)), (ids[3], 0.5)]]
