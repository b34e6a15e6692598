"""Any transformers sequence-to-sequence translation checkpoint: Marian (``Helsinki-NLP/opus-mt-*``), NLLB,
M2M100, by hub name, local path or ``offline:NAME``.

Multilingual checkpoints need the languages in the model's own codes: ``source_lang``/``target_lang`` such as
``eng_Latn``/``por_Latn`` (NLLB) or ``en``/``pt`` (M2M100); the target becomes the forced first generated token.
A Marian pair model needs neither (leave them empty; ``direction`` (``en-pt``) names the pair either way). Greedy or beam
decoding, batched, on the GPU when one is present. The fingerprint is the model by content (a hub name by
name: pin a revision by downloading it), the languages and every generation setting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from retrdistill.errors import ConfigError
from retrdistill.parts import Translator


class Seq2SeqTranslator(Translator):
    # any local folder is fingerprinted by content (a hub name needs the hub, or its local cache, to be resolved)
    example_options: ClassVar[dict[str, Any]] = {"model": "{minilm}"}
    example_variants: ClassVar[dict[str, Any]] = {"direction": "pt-en", "source_lang": "eng_Latn",
                                                  "target_lang": "por_Latn", "device": "cpu"}
    output_neutral: ClassVar[tuple[str, ...]] = ("batch_size", "device")

    @dataclass
    class Options:
        model: str = ""  # hub name, folder or offline:NAME
        direction: str = "en-pt"  # source-target language, for the fingerprint and reports
        source_lang: str = ""  # the model's code for the source language (NLLB, M2M100); empty: none
        target_lang: str = ""  # the model's code for the target language (NLLB, M2M100); empty: none
        num_beams: int = field(default=1, metadata={"min": 1})
        max_new_tokens: int = field(default=256, metadata={"min": 1})
        max_input_tokens: int = field(default=512, metadata={"min": 1})
        batch_size: int = field(default=16, metadata={"min": 1})
        device: str | None = None  # None: cuda when available, else cpu

        def __post_init__(self) -> None:
            if not self.model:
                raise ValueError("seq2seq needs model: a hub name, a folder or offline:NAME")
            if self.direction.count("-") != 1:
                raise ValueError(f"direction is 'source-target', e.g. en-pt, got {self.direction!r}")
            if self.num_beams < 1 or self.max_new_tokens < 1 or self.batch_size < 1:
                raise ValueError("num_beams, max_new_tokens and batch_size must be at least 1")

    def setup(self) -> None:
        self._loaded = None

    def language_pair(self) -> tuple[str, str]:
        source, target = self.options.direction.split("-")
        return source, target

    def fingerprint(self) -> dict[str, Any]:
        from retrdistill.models import model_fingerprint

        return {**self.output_options(), "translator": "seq2seq", "model": model_fingerprint(self.options.model),
                "pair": list(self.language_pair())}

    def load(self):
        """``(tokenizer, model, generation kwargs)``, loaded once."""
        if self._loaded is None:
            import torch
            from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

            from retrdistill.models import resolve_model

            path = resolve_model(self.options.model)
            device = self.options.device or ("cuda" if torch.cuda.is_available() else "cpu")
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForSeq2SeqLM.from_pretrained(path).to(device).eval()
            if self.options.source_lang:
                if not hasattr(tokenizer, "src_lang"):
                    raise ConfigError(f"seq2seq model {self.options.model!r} takes no source_lang (a pair model?)")
                tokenizer.src_lang = self.options.source_lang
            generate = {"num_beams": self.options.num_beams, "max_new_tokens": self.options.max_new_tokens,
                        "do_sample": False}
            if self.options.target_lang:
                generate["forced_bos_token_id"] = _language_token(tokenizer, self.options.target_lang,
                                                                  self.options.model)
            self._loaded = (tokenizer, model, generate)
        return self._loaded

    def translate(self, texts: list[str]) -> list[str]:
        import torch

        tokenizer, model, generate = self.load()
        out = list(texts)
        todo = [i for i, t in enumerate(texts) if t.strip()]
        for start in range(0, len(todo), self.options.batch_size):
            rows = todo[start:start + self.options.batch_size]
            batch = tokenizer([texts[i] for i in rows], return_tensors="pt", padding=True, truncation=True,
                              max_length=self.options.max_input_tokens).to(model.device)
            with torch.inference_mode():
                tokens = model.generate(**batch, **generate)
            for i, text in zip(rows, tokenizer.batch_decode(tokens, skip_special_tokens=True)):
                out[i] = text.strip()
        return out


def _language_token(tokenizer, code: str, model: str) -> int:
    if hasattr(tokenizer, "get_lang_id"):  # M2M100
        return int(tokenizer.get_lang_id(code))
    token = tokenizer.convert_tokens_to_ids(code)
    if token is None or token == tokenizer.unk_token_id:
        raise ConfigError(f"seq2seq model {model!r} has no language token {code!r} (NLLB: e.g. por_Latn)")
    return int(token)
