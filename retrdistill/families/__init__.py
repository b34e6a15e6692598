"""Model families (registered under kind ``family``, contract :class:`retrdistill.parts.Family`): what kind of
model a saved checkpoint is, and the one place that knows how each kind loads, encodes and is searched.

Students, indexers, teachers and validation name a family and go through it; none of them tests a model's type.
A new family (multi-vector, binary codes, ...) is one package holding its family, student and indexer, plus one
registry line for each (see ``tests/test_family_contract.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from retrdistill import registry
from retrdistill.errors import ConfigError
from retrdistill.models import resolve_model

# plain checkpoints that are no family's own: a family lists the ones it can load in ``also_loads``
CHECKPOINTS = {
    "masked-lm": "a plain masked-LM checkpoint",
    "transformer": "a plain transformer checkpoint without a masked-LM head",
    "unknown": "a model whose files say nothing of its family",
}


@dataclass(frozen=True)
class Detected:
    """What a model reference is: a registered family's name or a key of :data:`CHECKPOINTS` (``kind``), and
    the file and field that say so (``evidence``)."""

    kind: str
    evidence: str

    @property
    def description(self) -> str:
        if self.kind in CHECKPOINTS:
            return CHECKPOINTS[self.kind]
        return get(self.kind).description


def get(name: str) -> Any:
    """The registered family ``name`` (a :class:`retrdistill.parts.Family`), built once per registration."""
    found = registry.entry("family", name)
    return _built(found.name, found.target)


@lru_cache(maxsize=None)
def _built(name: str, target: str) -> Any:
    return registry.build("family", name)


def read_json(path: Path) -> Any:
    """A JSON file's content, None when it is missing or unreadable (detection reads optional files)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def st_model_type(folder: Path) -> str | None:
    """``model_type`` of a sentence-transformers folder's ``config_sentence_transformers.json``, if any."""
    config = read_json(folder / "config_sentence_transformers.json")
    value = config.get("model_type") if isinstance(config, dict) else None
    return str(value) if value else None


def module_types(folder: Path) -> list[str] | None:
    """The class names of a sentence-transformers folder's ``modules.json`` modules, None when it has none."""
    modules = read_json(folder / "modules.json")
    if not isinstance(modules, list) or not modules:
        return None
    return [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules if isinstance(m, dict)]


def detect(ref: str) -> Detected:
    """What ``ref`` is, from its files alone (nothing is loaded): the first registered family whose
    :meth:`~retrdistill.parts.Family.detect` claims the folder, asked latest registered first; else a plain
    checkpoint by its ``config.json`` architectures. A reference that is not a local folder is ``unknown``."""
    folder = Path(resolve_model(ref))
    if not folder.is_dir():
        return Detected("unknown", "not a local folder")
    for name in reversed(registry.names("family")):
        evidence = get(name).detect(folder)
        if evidence:
            return Detected(name, evidence)
    config = read_json(folder / "config.json")
    if isinstance(config, dict) and config.get("architectures"):
        arch = [str(a) for a in config["architectures"]]
        kind = "masked-lm" if any(a.endswith("ForMaskedLM") for a in arch) else "transformer"
        return Detected(kind, f"config.json: architectures {', '.join(arch)}")
    return Detected("unknown", "no sentence-transformers or transformers config")


def check_model(ref: str, family: str, who: str, suggest: list[str] | None = None) -> Detected:
    """ConfigError unless ``ref`` can be loaded by the registered ``family`` (its own models, or a plain
    checkpoint it lists in ``also_loads``); ``suggest`` names parts that take what ``ref`` is."""
    if family not in registry.names("family"):
        raise ConfigError(f"{who}: unknown model family {family!r}; expected one of: "
                          f"{', '.join(registry.names('family'))}")
    wanted = get(family)
    found = detect(ref)
    if found.kind != family and found.kind not in wanted.also_loads:
        hint = f"; use {' or '.join(repr(s) for s in suggest)} for it" if suggest else ""
        raise ConfigError(f"{who} needs {wanted.description}, but model {ref!r} is {found.description} "
                          f"({found.evidence}){hint}")
    return found


def losses_for(trains_with: str) -> list[str]:
    """The registered losses whose ``student_family`` is ``trains_with`` (a family's :attr:`Family.trains_with`)."""
    return [e.name for e in registry.REGISTRY["loss"].values()
            if getattr(e.load(), "student_family", "embedding") == trains_with]
