"""A model's own prompts (``query: `` / ``passage: `` for E5), applied where retrdistill encodes or trains.

sentence-transformers keeps named prompts in ``model.prompts`` and prepends them to the text
(``encode_query`` uses ``"query"``; ``encode_document`` the first of ``"document"``, ``"passage"``, ``"corpus"``).
retrdistill encodes through its own engine, which takes plain texts, so the prompt is prepended here the same way
(with mean pooling including the prompt's tokens, as E5 does). A model without prompts gets its texts unchanged.
"""

from __future__ import annotations

from typing import Any

DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")  # sentence-transformers' order in encode_document


def prompt_for(model: Any, role: str) -> str:
    """The prompt ``model`` prepends to a ``"query"`` or a ``"document"`` ('' when it has none)."""
    prompts = getattr(model, "prompts", None) or {}
    names = ("query",) if role == "query" else DOCUMENT_PROMPT_NAMES
    for name in names:
        if prompts.get(name):
            return prompts[name]
    return ""


def prompted(model: Any, texts: list[str], role: str) -> list[str]:
    """``texts`` as ``model`` encodes them in ``role`` (``"query"`` or ``"document"``)."""
    prefix = prompt_for(model, role)
    return [prefix + t for t in texts] if prefix else list(texts)


def column_prompts(model: Any, columns: list[str]) -> dict[str, str]:
    """The trainer's ``prompts`` argument for a dataset of ``columns``: the query prompt on ``query``, the
    document prompt on every passage column (``positive``, ``negative_*``, ...), none on ``label``; empty
    when the model has no prompts."""
    query, document = prompt_for(model, "query"), prompt_for(model, "document")
    out: dict[str, str] = {}
    for column in columns:
        if column == "label":
            continue
        prefix = query if column in ("query", "anchor") else document
        if prefix:
            out[column] = prefix
    return out
