"""Model and corpus references stored in an index folder's ``index.json``: written relative to the folder (so the
folder moves with its model), read back as paths again; ``offline:NAME`` and hub names pass unchanged."""

from __future__ import annotations

import os
from pathlib import Path


def portable(ref: str, out_dir: Path) -> str:
    """A local path relative to the index folder (so the folder can move with its model); else unchanged."""
    path = Path(ref)
    if ref.startswith("offline:") or not path.exists():
        return ref
    return os.path.relpath(path.resolve(), out_dir.resolve())


def resolve_reference(ref: str, folder: Path) -> str:
    """A model or corpus reference stored in index.json (relative to the index folder, or offline:NAME)."""
    if ref.startswith("offline:"):
        return ref
    candidate = (folder / ref)
    return str(candidate.resolve()) if candidate.exists() else ref
