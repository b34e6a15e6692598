"""Eval system ``translated``: translate the queries first, then run another system on the translations.

The translate-then-retrieve baseline of cross-language retrieval: Portuguese queries translated back to English
and searched by an English model. ``system`` is any other registered system (``{type, options}``); its run is
this system's run. Translations go through the shared translation cache; the cost adds the translation: when
``measure_cost`` is on, the queries are translated once more live and timed (the model loaded beforehand), and
``ms_per_query`` is the inner system's plus ``translate_ms_per_query``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from retrdistill import registry
from retrdistill.artefacts import fingerprint_obj
from retrdistill.errors import ConfigError
from retrdistill.parts import EvalSystem


class TranslatedSystem(EvalSystem):
    example_options: ClassVar[dict[str, Any]] = {"system": {"type": "bm25"}}
    example_variants: ClassVar[dict[str, Any]] = {"translator": {"name": "bergamot", "options": {"direction": "en-pt"}},
                                                  "system": {"type": "bm25", "options": {"k1": 1.2}}}

    @dataclass
    class Options:
        # a registered translator: {name, options}
        translator: dict[str, Any] = field(
            default_factory=lambda: {"name": "bergamot", "options": {"direction": "pt-en"}},
            metadata={"part": {"kind": "translator", "name": "name", "one": True}})
        # another system: {type, options}
        system: dict[str, Any] = field(default_factory=lambda: {"type": "bm25"}, metadata={
            "part": {"kind": "system", "name": "type", "one": True}})

    def setup(self) -> None:
        spec = self.options.system
        if not isinstance(spec, dict) or "type" not in spec or set(spec) - {"type", "options"}:
            raise ConfigError(f"translated system: 'system' must be a mapping with 'type' and optional 'options', "
                              f"got {spec!r}")
        if spec["type"] == "translated":
            raise ConfigError("translated system: the inner system cannot itself be 'translated'")
        chosen = self.options.translator
        if not isinstance(chosen, dict) or "name" not in chosen or set(chosen) - {"name", "options"}:
            raise ConfigError(f"translated system: 'translator' must be a mapping with 'name' and optional 'options', "
                              f"got {chosen!r}")
        self.translator = registry.build("translator", chosen["name"], dict(chosen.get("options") or {}))
        self.inner = registry.build("system", spec["type"], dict(spec.get("options") or {}))
        if self.inner.combines():
            raise ConfigError("translated system: the inner system cannot fuse others; translate each and fuse those")

    def input_fingerprint(self) -> str:
        return fingerprint_obj({"type": "translated", "translator": self.translator.fingerprint(),
                                "system": self.inner.input_fingerprint()})

    def run(self, corpus, queries: dict[str, str], k: int, cache_dir: Path, measure_cost: bool,
            earlier: dict[str, Any] | None = None):
        from retrdistill.systems import SystemOutput
        from retrdistill.translation.cache import TranslationCache, translate_cached

        fp = fingerprint_obj(self.translator.fingerprint())
        cache = TranslationCache(Path(cache_dir) / "translations.sqlite", fp)
        try:
            done = translate_cached(self.translator, cache, list(queries.values()))
        finally:
            cache.close()
        translated = {qid: done.texts[text] for qid, text in queries.items()}
        out = self.inner.run(corpus, translated, k, cache_dir, measure_cost, earlier)
        cost = dict(out.cost)
        translate_ms = self._translate_ms(list(queries.values())) if measure_cost else None
        if translate_ms is not None:
            cost["translate_ms_per_query"] = translate_ms
            if cost.get("ms_per_query") is not None:
                cost["ms_per_query"] = float(cost["ms_per_query"]) + translate_ms
        provenance = {**out.provenance, "translator": fp[:16], "language_pair": "-".join(self.translator.language_pair())}
        if translate_ms is not None:
            provenance["translate_ms_per_query"] = f"{translate_ms:.2f}"
        return SystemOutput(out.run, cost, provenance, out.validation)

    def _translate_ms(self, texts: list[str]) -> float:
        """Milliseconds per query of translating ``texts`` one by one, as a search service would, timed live."""
        if not texts:
            return 0.0
        self.translator.translate(texts[:1])  # load the model outside the timing
        started = time.perf_counter()
        for text in texts:
            self.translator.translate([text])
        return 1000 * (time.perf_counter() - started) / len(texts)
