"""Exact top-k search against faiss.IndexFlatIP."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
faiss = pytest.importorskip("faiss")

from retrdistill.encoding.search import MISSING_SCORE, exact_search

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here; CPU path tested")


def _data(nd=5000, nq=97, dim=48, seed=0):
    rng = np.random.default_rng(seed)
    docs = rng.standard_normal((nd, dim)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = rng.standard_normal((nq, dim)).astype(np.float32)
    return queries, docs


def _faiss(queries, docs, k):
    index = faiss.IndexFlatIP(docs.shape[1])
    index.add(docs)
    return index.search(queries, k)


def _assert_same(got, want, atol=1e-4):
    gs, gi = got
    ws, wi = want
    assert gs.dtype == np.float32 and gi.dtype == np.int64 and gs.shape == ws.shape and gi.shape == wi.shape
    np.testing.assert_allclose(gs, ws, atol=atol, rtol=0)
    # indices equal wherever the score is not a near-tie with a neighbour (float rounding may swap those)
    gaps = np.full(ws.shape, np.inf)
    gaps[:, 1:] = np.minimum(gaps[:, 1:], np.abs(np.diff(ws, axis=1)))
    gaps[:, :-1] = np.minimum(gaps[:, :-1], np.abs(np.diff(ws, axis=1)))
    clear = gaps > 10 * atol
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(gi[clear], wi[clear])


@pytest.mark.parametrize("chunk_size", [65536, 1000, 777])
def test_equals_faiss(chunk_size):
    queries, docs = _data()
    _assert_same(exact_search(queries, docs, 10, chunk_size=chunk_size, device="cpu"), _faiss(queries, docs, 10))


def test_memmap_is_read_in_chunks(tmp_path):
    queries, docs = _data(nd=3000)
    path = tmp_path / "docs.f32"
    mm = np.memmap(path, dtype=np.float32, mode="w+", shape=docs.shape)
    mm[:] = docs
    mm.flush()
    del mm
    ro = np.memmap(path, dtype=np.float32, mode="r", shape=docs.shape)
    _assert_same(exact_search(queries, ro, 25, chunk_size=512, device="cpu"), _faiss(queries, docs, 25))


def test_k_larger_than_collection_padded_like_faiss():
    queries, docs = _data(nd=7, nq=3)
    got_s, got_i = exact_search(queries, docs, 10, chunk_size=3, device="cpu")
    want_s, want_i = _faiss(queries, docs, 10)
    np.testing.assert_array_equal(got_i, want_i)
    assert (got_i[:, 7:] == -1).all() and (got_s[:, 7:] == MISSING_SCORE).all()
    np.testing.assert_allclose(got_s[:, :7], want_s[:, :7], atol=1e-5)


def test_ties_ordered_by_index_and_empty_inputs():
    docs = np.ones((6, 4), dtype=np.float32)  # every document scores the same
    for chunk_size in (2, 4, 6):
        s, i = exact_search(np.ones((2, 4), dtype=np.float32), docs, 4, chunk_size=chunk_size, device="cpu")
        assert (s == 4.0).all()
        for row in i:  # distinct documents, listed by index; which tied ones make the cut is unspecified
            assert len(set(row)) == 4 and list(row) == sorted(row) and set(row) <= set(range(6))
    s, i = exact_search(np.zeros((0, 4), dtype=np.float32), docs, 3, device="cpu")
    assert s.shape == (0, 3) and i.shape == (0, 3)
    s, i = exact_search(np.ones((2, 4), dtype=np.float32), np.zeros((0, 4), dtype=np.float32), 3, device="cpu")
    assert (i == -1).all()


def test_bad_arguments():
    queries, docs = _data(nd=10, nq=2)
    with pytest.raises(ValueError):
        exact_search(queries, docs, 0)
    with pytest.raises(ValueError):
        exact_search(queries[0], docs, 3)
    with pytest.raises(ValueError):
        exact_search(queries, docs[:, :5], 3)


def test_fp16_is_ignored_on_cpu():
    queries, docs = _data(nd=500, nq=5)
    _assert_same(exact_search(queries, docs, 5, device="cpu", fp16=True), _faiss(queries, docs, 5))


@needs_cuda
def test_cuda_fp32_and_fp16():
    queries, docs = _data(nd=20000, nq=64)
    want = _faiss(queries, docs, 10)
    _assert_same(exact_search(queries, docs, 10, chunk_size=4096, device="cuda"), want)
    s, i = exact_search(queries, docs, 10, chunk_size=4096, device="cuda", fp16=True)
    np.testing.assert_allclose(s, want[0], atol=2e-2)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i, want[1])]) > 0.9
