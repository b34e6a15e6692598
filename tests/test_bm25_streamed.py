"""The streamed BM25 build writes the same index files as bm25s's own in-memory build, byte for byte."""

from __future__ import annotations

import filecmp

import pytest

from retrdistill.data.beir import load_corpus
from retrdistill.miners.bm25 import BM25Miner, _PackedIds
from retrdistill.miners.bm25_build import build_bm25_streamed


def _tokenizer():
    import bm25s
    import Stemmer

    return bm25s.tokenization.Tokenizer(stopwords="en", stemmer=Stemmer.Stemmer("english"))


@pytest.mark.parametrize("method, k1, b", [("lucene", 1.5, 0.75), ("robertson", 1.2, 0.4), ("atire", 0.9, 1.0)])
def test_streamed_build_equals_bm25s_byte_for_byte(tmp_path, sample_dir, method, k1, b):
    import bm25s

    corpus = load_corpus(sample_dir, tmp_path / "corpora")
    reference = _tokenizer()
    ids = _PackedIds()
    for _, _, texts in corpus.iter_batches(1000):
        ids.extend(reference.tokenize(texts, update_vocab=True, return_as="ids", show_progress=False))
    model = bm25s.BM25(k1=k1, b=b, method=method)
    model.index(bm25s.tokenization.Tokenized(ids=ids, vocab=reference.get_vocab_dict()), show_progress=False)
    model.save(str(tmp_path / "bm25s"), show_progress=False)

    (tmp_path / "streamed").mkdir()
    # chunks of 700 passages: the vocabulary grows between chunks and every term spans several of them
    nnz = build_bm25_streamed(corpus, _tokenizer(), tmp_path / "streamed", k1=k1, b=b, method=method, chunk=700)
    names = sorted(p.name for p in (tmp_path / "bm25s").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "streamed").iterdir())
    for name in names:
        assert filecmp.cmp(tmp_path / "bm25s" / name, tmp_path / "streamed" / name, shallow=False), name
    assert nnz == len(model.scores["data"])


def test_miner_builds_streamed_and_keeps_no_work_files(tmp_path, small_collection):
    corpus = load_corpus(small_collection, tmp_path / "corpora")
    miner = BM25Miner(BM25Miner.Options(), corpus, tmp_path / "cache")
    hits = miner.search({"q": "what is the temperature of the sun"}, 10)
    assert len(hits["q"]) == 10 and hits["q"][0][1] >= hits["q"][-1][1] > 0
    files = sorted(p.name for p in miner.index_dir.iterdir())
    assert ".chunks" not in files and "data.csc.index.npy" in files and "done.json" in files


def test_bm25l_falls_back_to_bm25s_build(tmp_path, small_collection):
    corpus = load_corpus(small_collection, tmp_path / "corpora")
    miner = BM25Miner(BM25Miner.Options(method="bm25l"), corpus, tmp_path / "cache")
    assert len(miner.search({"q": "sun temperature"}, 5)["q"]) == 5
    assert (miner.index_dir / "nonoccurrence_array.index.npy").is_file()
