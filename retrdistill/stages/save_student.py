"""Materialise a declared student, untrained, as an ordinary sentence-transformers folder.

This is the undistilled baseline of a student's shape (e.g. all-MiniLM-L6-v2 cut to 3 layers, before any
training): point an eval system of type ``dense`` at the folder. The folder gets a manifest written last, so
asking again for the same student is a no-op, and a different declaration rebuilds it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from retrdistill import registry
from retrdistill.artefacts import fingerprint_obj
from retrdistill.stages.base import StageResult, execute


def save_student(student: str, options: dict[str, Any] | None, out_dir: str | Path, *, force: bool = False) -> StageResult:
    """Build the registered ``student`` from ``options`` and save its initial weights to ``out_dir``."""
    built = registry.build("student", student, options or {})
    inputs = {"student": fingerprint_obj(built.fingerprint())}

    def body(tmp: Path) -> dict[str, Any]:
        model = built.load()
        built.save(model, tmp)
        return {"parameters": int(sum(p.numel() for p in model.parameters())),
                "dim": int(model.get_embedding_dimension())}

    config = {"student": student, "options": dict(options or {})}
    return execute("student", "student", out_dir, config, inputs, body, force=force)
