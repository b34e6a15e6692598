"""The record of how much of each passage a student reads (``counts.passage_window``) and its warning."""

from __future__ import annotations

import logging

from retrdistill.training.window import passage_window, warn_if_cut


def test_a_short_window_is_reported_and_warned(small_collection, minilm, caplog):
    from retrdistill.data.beir import open_collection
    from retrdistill.models import load_sentence_transformer

    corpus = open_collection(small_collection).corpus
    model = load_sentence_transformer(minilm)
    full = passage_window(model, corpus, sample=50)
    model.max_seq_length = 16
    cut = passage_window(model, corpus, sample=50)
    assert full["sampled"] == cut["sampled"] == min(50, len(corpus))
    assert full["median_tokens"] == cut["median_tokens"] > 16  # counted without truncation
    assert full["share_longer"] < 0.25 < cut["share_longer"]
    with caplog.at_level(logging.WARNING, logger="retrdistill.training.window"):
        warn_if_cut(full)
        assert not caplog.records
        warn_if_cut(cut)
    assert "longer than the student's max_seq_length 16" in caplog.text

