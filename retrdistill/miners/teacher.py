"""Miner ``teacher``: a registered teacher's own retrieval as candidates.

A bi-encoder teacher searches its cached corpus embeddings (the ones scoring uses: nothing is encoded twice); a
pair teacher (cross-encoder, LLM judge) re-ranks its first stage. Fused with the student's own view and BM25
(``miner: fused``), it puts among the candidates the passages the teacher ranks high for each query: the ones a
student must learn to bring up, which neither BM25 nor the student itself proposes.

    miner: fused
    options:
      members:
        - {miner: bm25}
        - {miner: dense, options: {model: "offline:all-MiniLM-L6-v2"}}
        - {miner: teacher, options: {teacher: chosen, teacher_options: {choice: "@rate"}}}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from retrdistill import registry
from retrdistill.parts import Hits, Miner


class TeacherMiner(Miner):
    """Options: ``teacher`` / ``teacher_options`` (a registered teacher). Context: ``corpus``, ``cache_dir``."""

    @dataclass
    class Options:
        teacher: str = ""
        teacher_options: dict[str, Any] = field(default_factory=dict, metadata={
            "part": {"kind": "teacher", "name": "teacher"}})

        def __post_init__(self) -> None:
            if not self.teacher:
                raise ValueError("'teacher' (a registered teacher whose retrieval gives the candidates) is required")
            registry.entry("teacher", self.teacher)

    example_options: ClassVar[dict[str, Any]] = {"teacher": "bi-encoder", "teacher_options": {"model": "{minilm}"}}
    example_variants: ClassVar[dict[str, Any]] = {
        "teacher": "cross-encoder", "teacher_options": {"model": "{minilm}", "max_seq_length": 64}}

    def setup(self) -> None:
        self.teacher = registry.build("teacher", self.options.teacher, self.options.teacher_options,
                                      corpus=self.corpus, cache_dir=self.cache_dir)

    def fingerprint(self) -> dict[str, Any]:
        return {"miner": "teacher", "teacher": self.teacher.fingerprint()}

    def stats(self) -> dict[str, Any]:
        return self.teacher.stats()

    def search(self, queries: dict[str, str], depth: int) -> Hits:
        run = self.teacher.retrieve(queries, depth)
        return {q: sorted(run.get(q, {}).items(), key=lambda hit: (-hit[1], hit[0]))[:depth] for q in queries}
