"""Candidates from more than one retriever: every member miner's top ``depth`` fused by reciprocal rank.

    miner: fused
    options:
      members:
        - {miner: bm25}
        - {miner: dense, options: {model: "offline:all-MiniLM-L6-v2"}}

Negatives mined by one retriever share its blind spots (BM25's are lexical, a dense model's are its own
errors); GPL-style recipes mine with several. Each member searches the whole corpus for ``depth`` passages; a
passage's fused score is ``sum over members of 1 / (k + rank)`` (reciprocal rank fusion, ``k`` = 60 by default),
so a passage two retrievers agree on ranks above one only a single retriever found. Ties keep the first member's
order. The member searches are the members' own (their caches, indexes and corpus embeddings are shared with
every other use of the same miner).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from retrdistill import registry
from retrdistill.data.beir import Corpus
from retrdistill.parts import Hits, Miner


class FusedMiner(Miner):
    @dataclass
    class Options:
        members: list[dict[str, Any]] = field(default_factory=list, metadata={  # {miner, options}
            "part": {"kind": "miner", "name": "miner", "each": True}})
        k: int = field(default=60, metadata={"min": 1})

        def __post_init__(self) -> None:
            if len(self.members) < 2:
                raise ValueError("a fused miner needs at least two members: [{miner: NAME, options: {...}}, ...]")
            for i, m in enumerate(self.members):
                if not isinstance(m, dict) or "miner" not in m or set(m) - {"miner", "options"}:
                    raise ValueError(f"member {i + 1}: expected {{miner, options}}, got {m!r}")
                if m["miner"] == "fused":
                    raise ValueError(f"member {i + 1}: a fused miner cannot contain another fused miner")
                registry.entry("miner", m["miner"])
                if not isinstance(m.get("options", {}), dict):
                    raise ValueError(f"member {i + 1}: options must be a mapping, got {m['options']!r}")

    example_options: ClassVar[dict[str, Any]] = {"members": [
        {"miner": "bm25"}, {"miner": "dense", "options": {"model": "offline:all-MiniLM-L6-v2"}}]}
    example_variants: ClassVar[dict[str, Any]] = {
        "k": 10, "members": [{"miner": "bm25", "options": {"k1": 0.9}},
                             {"miner": "dense", "options": {"model": "offline:all-MiniLM-L6-v2"}}]}
    corpus: Corpus
    cache_dir: Path

    def setup(self) -> None:
        self.miners = [registry.build("miner", m["miner"], dict(m.get("options") or {}), corpus=self.corpus,
                                      cache_dir=self.cache_dir) for m in self.options.members]

    def fingerprint(self) -> dict:
        return {"miner": "fused", "k": self.options.k, "members": [m.fingerprint() for m in self.miners]}

    def search(self, queries: dict[str, str], depth: int) -> Hits:
        fused: dict[str, dict[str, float]] = {q: {} for q in queries}
        for miner in self.miners:
            for qid, hits in miner.search(queries, depth).items():
                scores = fused.setdefault(qid, {})
                for rank, (doc, _) in enumerate(hits, start=1):
                    scores[doc] = scores.get(doc, 0.0) + 1.0 / (self.options.k + rank)
        return {q: sorted(s.items(), key=lambda x: -x[1])[:depth] for q, s in fused.items()}

    def stats(self) -> dict[str, Any]:
        return {f"member{i}": m.stats() for i, m in enumerate(self.miners) if m.stats()}

    def generated_passages(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for miner in self.miners:
            out.update(miner.generated_passages())
        return out
