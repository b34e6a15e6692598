"""Refuse a model an indexer cannot encode, before anything is loaded: its family is read from its files."""

from __future__ import annotations

from typing import Any

from retrdistill import families, registry


def check_model(indexer: Any, model_ref: str) -> None:
    """ConfigError naming the model, what it is, what ``indexer`` (an :class:`retrdistill.parts.Indexer`) needs and
    a registered indexer that takes it, unless ``model_ref`` is a model of the family ``indexer.model_type``."""
    entries = registry.REGISTRY["indexer"].values()
    name = registry.name_of("indexer", indexer)
    kind = families.detect(model_ref).kind
    suggest = [e.name for e in entries if getattr(e.load(), "model_type", None) == kind]
    families.check_model(model_ref, indexer.model_type, f"indexer {name!r}", suggest[:1])
