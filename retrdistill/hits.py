"""What a search returns: :class:`Hit` (one passage and its score), and the passage fields hits are filled from."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Hit:
    """One search result: a passage of the index's corpus and its score for the query.

    Attributes:
        doc_id: the passage's ``_id`` in the corpus (``corpus.jsonl``).
        score: the retriever's score (higher is better: a dot product, or a re-ranker's score); the hits of a
            search come best first.
        text: the passage's ``text`` field ("" with ``with_text=False``).
        title: the passage's ``title`` field ("" when it has none, or with ``with_text=False``).

    ``passage`` is title and text joined, as the encoders read them. Example::

        hit = Retriever.load("runs/msmarco-sample/index").search("what is a synapse", k=1)[0]
        print(hit.doc_id, round(hit.score, 3), hit.title, hit.text[:80])
        context = hit.passage  # title + text, e.g. for a RAG prompt
    """

    doc_id: str
    score: float
    text: str = ""
    title: str = ""

    @property
    def passage(self) -> str:
        """Title and text joined (BEIR's convention; the text alone when there is no title): what the encoders,
        BM25 and re-rankers read."""
        from retrdistill.data.beir import passage_text

        return passage_text(self.title, self.text)


def passage_fields(corpus, rows) -> list[tuple[str, str]]:
    """``(title, text)`` of each corpus row, in order (a corpus without separate fields: ``("", text)``)."""
    rows = [int(r) for r in rows]
    if not rows:
        return []
    dataset = getattr(corpus, "dataset", None)
    if dataset is None or "title" not in getattr(dataset, "column_names", ()):
        return [("", text) for text in corpus.texts_at(rows)]
    picked = dataset.select(rows)
    return list(zip(picked["title"], picked["text"]))
