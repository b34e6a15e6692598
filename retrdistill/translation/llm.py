"""Translator ``llm``: any registered LLM client (a local transformers model, an OpenAI-compatible server)
translating through a prompt template (bundled ``translate``, or the user's own file with ``{source_language}``,
``{target_language}`` and ``{text}``), greedy by default.

The fingerprint is the client's (the model by content, or endpoint + served model), the template's digest, the
language pair and the generation settings, so the translation cache never mixes models, prompts or directions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from retrdistill import registry
from retrdistill.errors import ConfigError
from retrdistill.parts import Translator

LANGUAGES = {"en": "English", "pt": "Portuguese", "es": "Spanish", "fr": "French", "de": "German", "it": "Italian",
             "nl": "Dutch", "zh": "Chinese", "ja": "Japanese", "ko": "Korean", "ru": "Russian", "ar": "Arabic",
             "hi": "Hindi", "fa": "Persian"}


class LLMTranslator(Translator):
    @dataclass
    class Options:
        llm: str = "transformers"  # a registered LLM client
        llm_options: dict[str, Any] = field(default_factory=dict, metadata={"part": {"kind": "llm", "name": "llm"}})
        direction: str = "en-pt"  # source-target language codes; the prompt names them (LANGUAGES) or uses the code
        template: str = "translate"  # a bundled template name or a file path
        max_new_tokens: int = field(default=128, metadata={"min": 1})
        temperature: float = field(default=0.0, metadata={"min": 0})

        def __post_init__(self) -> None:
            registry.entry("llm", self.llm)
            if self.direction.count("-") != 1 or not all(self.direction.split("-")):
                raise ValueError(f"direction is 'source-target', e.g. en-pt, got {self.direction!r}")
            if self.max_new_tokens < 1 or self.temperature < 0:
                raise ValueError("need max_new_tokens >= 1 and temperature >= 0")

    example_options: ClassVar[dict[str, Any]] = {"llm_options": {"model": "offline:smollm2-135m-instruct"}}
    example_variants: ClassVar[dict[str, Any]] = {
        "llm": "openai", "llm_options": {"model": "offline:gemma-3-270m"}, "direction": "pt-en",
        "template": "translate-query", "temperature": 0.5}

    def setup(self) -> None:
        from retrdistill.llm.templates import load_template

        self.client = registry.build("llm", self.options.llm, self.options.llm_options)
        self.template = load_template(self.options.template)
        unknown = self.template.fields - {"source_language", "target_language", "text"}
        if "text" not in self.template.fields or unknown:
            raise ConfigError(f"llm translator: template {self.template.path} must fill {{text}} (and may fill "
                              f"{{source_language}}, {{target_language}}); it fills {sorted(self.template.fields)}")

    def language_pair(self) -> tuple[str, str]:
        source, target = self.options.direction.split("-")
        return source, target

    def fingerprint(self) -> dict[str, Any]:
        return {"translator": "llm", "llm": self.client.fingerprint(), "template": self.template.digest,
                "pair": list(self.language_pair()), "max_new_tokens": self.options.max_new_tokens,
                "temperature": self.options.temperature}

    def translate(self, texts: list[str]) -> list[str]:
        from retrdistill.llm.client import GenerationParams

        source, target = (LANGUAGES.get(code, code) for code in self.language_pair())
        todo = [i for i, text in enumerate(texts) if text.strip()]
        prompts = [self.template.render(source_language=source, target_language=target, text=texts[i]) for i in todo]
        params = GenerationParams(max_new_tokens=self.options.max_new_tokens, temperature=self.options.temperature)
        out = list(texts)
        size = max(self.client.batch_size(), 1)
        for start in range(0, len(prompts), size):
            answers = self.client.generate(prompts[start:start + size], params)
            for i, answer in zip(todo[start:start + size], answers):
                out[i] = _clean(answer)
        return out


def _clean(answer: str) -> str:
    """The translation without surrounding whitespace or quotes a chat model may add."""
    text = answer.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'“”":
        text = text[1:-1].strip()
    return text
