"""An LLM teacher: pointwise relevance read from a causal LM's next-token logits after a yes/no prompt.

Each (query, passage) pair fills a prompt template file (:mod:`retrdistill.llm.templates`; by default the bundled
``relevance`` template, or the path of the user's own file, with ``{query}`` and ``{passage}``). The messages go
through the model's chat template where it has one (instruct models), else are joined as plain text ending in
``Answer:`` (base models). sentence-transformers' ``CrossEncoder`` then reads the prompt: a ``text-generation``
``Transformer`` (left padding, only the last position's logits kept) followed by ``LogitScore``, whose score is
``logit(yes) - logit(no)`` at the answer position. With several answer words a side (default ``yes``/``Yes``
against ``no``/``No``: instruct models often answer capitalised) each side's logits are pooled by log-sum-exp
first (:class:`AnswerLogitScore`, the same computation with sets of tokens).

``score: logit-diff`` keeps that difference (unbounded, so margins between passages survive); ``score: p-yes``
turns it into ``P(yes | yes or no) = sigmoid(logit(yes) - logit(no))`` in [0, 1], which saturates near 0 and 1
for confident models (peaked scores: a listwise loss then needs a higher temperature, or normalise per query in
an ensemble). Queries and passages are cut to ``max_query_tokens`` / ``max_passage_tokens`` before the prompt is
filled, so the question after the passage is never cut.

Judged over HTTP (``llm: openai`` with ``llm_options`` naming the server: any OpenAI-compatible one that returns
token log-probabilities, e.g. vLLM, llama.cpp's llama-server, ``transformers serve``, ``retrdistill serve-llm``),
the same prompt goes to the server as messages (its chat template applies there; a ``completions`` client gets
them as plain text ending in ``Answer:``), greedy, one token, with the ``top_logprobs`` most likely first tokens.
The score is the same log-odds, read from those: ``logsumexp`` of the log-probabilities of the returned tokens
whose text is a yes word as it follows the prompt (the word itself after a chat template's assistant header, the
word after a space following ``Answer:``), minus the same for the no words. A side with no token among the ``top_logprobs`` is taken at the smallest returned
log-probability, an upper bound of its own; such pairs are counted (``answers_outside_top``) and logged. ``model``
then names the tokenizer that cuts queries and passages to their token limits (the served model's, for the same
cut as the local path); the fingerprint covers the client's (endpoint, served model name, API, extra body), the
template, the answer words, the truncation, the tokenizer and ``top_logprobs``.

A GGUF checkpoint (a folder holding one ``.gguf`` file: ``offline:qwen2.5-coder-1.5b-instruct``,
``offline:smollm2-135m-instruct``) loads through ``gguf_file=``, dequantised (needs ``gguf``: extra ``[llm]``).
The fingerprint covers the model by content, the template's digest, the score mode, the answer words, the
truncation lengths, chat-template use and dtype, so the score stage caches LLM scores like any teacher's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from sentence_transformers.cross_encoder.modules import LogitScore

from retrdistill import progress, registry
from retrdistill.data.beir import Corpus
from retrdistill.errors import ConfigError
from retrdistill.models import gguf_file, model_fingerprint, resolve_model
from retrdistill.parts import PairTeacher, Run
from retrdistill.teachers.first_stage import rerank_first_stage

log = logging.getLogger(__name__)
SCORES = ("logit-diff", "p-yes")
DTYPES = ("float32", "bfloat16", "float16")
PLAIN_ANSWER_CUE = "\nAnswer:"  # ends a plain-text prompt (no chat template): the answer word follows


class AnswerLogitScore(LogitScore):
    """``LogitScore`` over sets of answer tokens: ``logsumexp(logits[true ids]) - logsumexp(logits[false ids])``
    at the last position (with one id a side, exactly ``LogitScore``'s log-odds)."""

    config_keys = ["true_token_ids", "false_token_ids", "module_input_name"]

    def __init__(self, true_token_ids: list[int], false_token_ids: list[int],
                 module_input_name: str = "causal_logits") -> None:
        super().__init__(true_token_ids[0], false_token_ids[0], module_input_name)
        self.true_token_ids = list(true_token_ids)
        self.false_token_ids = list(false_token_ids)

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        logits = features[self.module_input_name][:, -1].float()
        yes = torch.logsumexp(logits[:, self.true_token_ids], dim=-1)
        no = torch.logsumexp(logits[:, self.false_token_ids], dim=-1)
        features["scores"] = (yes - no).unsqueeze(1)
        return features


class LLMTeacher(PairTeacher):
    """Context: ``corpus`` (the passages judged) and ``cache_dir`` (the BM25 index it re-ranks as a retriever)."""

    @dataclass
    class Options:
        model: str = "offline:qwen2.5-coder-1.5b-instruct"
        template: str = "relevance"  # a bundled template name or the path of a template file
        score: str = "logit-diff"  # or "p-yes"
        yes_words: list[str] = field(default_factory=lambda: ["yes", "Yes"])
        no_words: list[str] = field(default_factory=lambda: ["no", "No"])
        chat_template: bool | None = None  # None: the model's chat template where it has one
        max_query_tokens: int = field(default=64, metadata={"min": 1})
        max_passage_tokens: int = 256
        dtype: str = "float32"
        batch_size: int = field(default=8, metadata={"min": 1})
        device: str | None = None
        rerank_depth: int = field(default=100, metadata={"min": 1})
        llm: str | None = None  # a registered LLM client that judges (``openai``: over HTTP); None: ``model`` here
        llm_options: dict[str, Any] = field(default_factory=dict, metadata={"part": {"kind": "llm", "name": "llm"}})
        top_logprobs: int = field(default=20, metadata={"min": 1, "max": 20})

        def __post_init__(self) -> None:
            if self.llm is None and self.llm_options:
                raise ValueError("llm_options given without llm (the registered client they configure)")
            if self.llm is not None:
                registry.entry("llm", self.llm)  # an unknown client name lists the registered ones
            if self.score not in SCORES:
                raise ValueError(f"score must be one of {', '.join(SCORES)}, got {self.score!r}")
            if self.dtype not in DTYPES:
                raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
            for name in ("yes_words", "no_words"):
                words = getattr(self, name)
                if isinstance(words, str):
                    setattr(self, name, [words])
                elif not words or not all(isinstance(w, str) and w.strip() for w in words):
                    raise ValueError(f"{name} must be a non-empty list of words")
            if set(self.yes_words) & set(self.no_words):
                raise ValueError(f"a word cannot be both a yes and a no answer: {set(self.yes_words) & set(self.no_words)}")
            if self.max_query_tokens < 1 or self.max_passage_tokens < 1 or self.batch_size < 1:
                raise ValueError("max_query_tokens, max_passage_tokens and batch_size must be positive")

    output_neutral: ClassVar[tuple[str, ...]] = ("batch_size", "device", "rerank_depth")
    # options that only the local path reads (the server has its own weights, precision and chat template)
    LOCAL_ONLY: ClassVar[tuple[str, ...]] = ("dtype", "chat_template")
    # options that only the HTTP path reads
    REMOTE_ONLY: ClassVar[tuple[str, ...]] = ("top_logprobs",)
    example_options: ClassVar[dict[str, Any]] = {"model": "offline:smollm2-135m-instruct"}
    example_variants: ClassVar[dict[str, Any]] = {"template": "relevance-brief", "score": "p-yes",
                                                  "yes_words": ["yes"], "no_words": ["no"], "dtype": "bfloat16",
                                                  "device": "cpu", "llm": "transformers",
                                                  "llm_options": {"model": "offline:smollm2-135m-instruct"},
                                                  "top_logprobs": 10}
    # the client's options and the number of top tokens are read only where a client judges
    variant_companions: ClassVar[dict[str, dict[str, Any]]] = {"llm_options": {"llm": "transformers"},
                                                               "top_logprobs": {"llm": "transformers"}}
    corpus: Corpus
    cache_dir: Path

    def setup(self) -> None:
        from retrdistill.llm.templates import load_template

        self.template = load_template(self.options.template)
        missing = {"query", "passage"} - self.template.fields
        if missing:
            raise ConfigError(f"teacher 'llm': template {self.template.path} has no "
                              f"{' or '.join('{' + m + '}' for m in sorted(missing))}; a relevance prompt fills "
                              f"{{query}} and {{passage}}")
        self._model = None
        self._chat = False
        self._tokenizer = None
        self.client = None if self.options.llm is None else registry.build("llm", self.options.llm,
                                                                          self.options.llm_options)
        self.pairs_scored = 0
        self.answers_outside_top = 0

    def fingerprint(self) -> dict:
        skip = {"model", "template", "llm", "llm_options"}
        skip.update(self.LOCAL_ONLY if self.client is not None else self.REMOTE_ONLY)
        opts = {k: v for k, v in self.output_options().items() if k not in skip}
        out = {"teacher": "llm", "model": model_fingerprint(self.options.model), "template": self.template.digest,
               "options": opts, "corpus": self.corpus.fingerprint}
        if self.client is not None:  # the server judges; ``model`` is the tokenizer that cuts the texts
            out["llm"] = self.client.fingerprint()
            out["tokenizer"] = out.pop("model")
        return out

    def stats(self) -> dict[str, Any]:
        return {} if self.client is None else {"answers_outside_top": self.answers_outside_top}

    # ------------------------------------------------------------ the model
    @property
    def model(self):
        """The ``CrossEncoder`` (causal-LM ``Transformer`` + logit score), loaded on first use."""
        if self._model is None:
            self._model = self._load()
        return self._model

    @property
    def tokenizer(self):
        if self.client is None:
            return self.model[0].tokenizer
        if self._tokenizer is None:  # the HTTP path: only the tokenizer, to cut texts as the local path does
            from transformers import AutoTokenizer

            path = resolve_model(self.options.model)
            gguf = gguf_file(path)
            try:
                self._tokenizer = AutoTokenizer.from_pretrained(path, **({"gguf_file": gguf} if gguf else {}))
            except (OSError, ValueError, ImportError) as exc:
                raise ConfigError(f"teacher 'llm': the tokenizer of {self.options.model!r} (which cuts queries and "
                                  f"passages before they go to the server) could not be loaded: {exc}") from exc
        return self._tokenizer

    def _load(self):
        from sentence_transformers import CrossEncoder
        from sentence_transformers.base.modules import Transformer

        o = self.options
        path = resolve_model(o.model)
        gguf = gguf_file(path)
        if gguf:
            try:
                import gguf as _  # noqa: F401
            except ImportError:
                raise ConfigError(f"teacher 'llm': {o.model} is a GGUF checkpoint; reading it needs the gguf "
                                  f"package (pip install 'retrdistill[llm]')") from None
        extra = {"gguf_file": gguf} if gguf else {}
        try:
            transformer = Transformer(
                path, transformer_task="text-generation", model_kwargs={**extra, "dtype": getattr(torch, o.dtype)},
                processor_kwargs=dict(extra), config_kwargs=dict(extra),
                # the prompt is rendered here (chat template or plain text), so the module reads plain text
                modality_config={"text": {"method": "forward", "method_output_name": "logits"}},
                module_output_name="causal_logits")
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"teacher 'llm': could not load {o.model!r} as a causal LM ({path}"
                              f"{', gguf_file=' + gguf if gguf else ''}): {exc}") from exc
        tokenizer = transformer.tokenizer
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        has_chat = bool(getattr(tokenizer, "chat_template", None))
        if o.chat_template and not has_chat:
            raise ConfigError(f"teacher 'llm': {o.model!r} has no chat template (a base model); leave "
                              f"chat_template unset to prompt it with plain text")
        self._chat = has_chat if o.chat_template is None else bool(o.chat_template)
        yes = self._answer_ids(tokenizer, o.yes_words)
        no = self._answer_ids(tokenizer, o.no_words)
        if set(yes) & set(no):
            raise ConfigError(f"teacher 'llm': yes_words {o.yes_words} and no_words {o.no_words} share a first "
                              f"token in {o.model}'s vocabulary")
        head = LogitScore(yes[0], no[0]) if len(yes) == len(no) == 1 else AnswerLogitScore(yes, no)
        device = o.device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = CrossEncoder(modules=[transformer, head], device=device)
        model.eval()
        log.info("teacher llm: %s on %s (chat template: %s, answer tokens yes %s / no %s)", o.model, device,
                 self._chat, yes, no)
        return model

    def _answer_ids(self, tokenizer, words: list[str]) -> list[int]:
        """The token each answer word starts with where it follows the prompt (read in context: after a chat
        template's assistant header the word starts a line; after ``Answer:`` it follows a space)."""
        prompt = self.render("q", "p", tokenizer)
        lead = "" if prompt[-1:].isspace() else " "
        before = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = []
        for word in words:
            after = tokenizer(prompt + lead + word, add_special_tokens=False)["input_ids"]
            if after[:len(before)] == before and len(after) > len(before):
                token = after[len(before)]
            else:  # the word merged with the prompt's last token: its own first token
                token = tokenizer(lead + word, add_special_tokens=False)["input_ids"][0]
            if token not in ids:
                ids.append(int(token))
        return ids

    # ------------------------------------------------------------ prompts
    def render(self, query: str, passage: str, tokenizer=None) -> str:
        """The prompt the model reads for one pair (query and passage as given, not cut)."""
        from retrdistill.llm.client import plain_text

        tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        messages = self.template.render(query=query, passage=passage)
        if self._chat:
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return plain_text(messages) + PLAIN_ANSWER_CUE

    def _cut(self, texts: list[str], limit: int) -> list[str]:
        tokenizer = self.tokenizer
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [t if len(i) <= limit else tokenizer.decode(i[:limit]) for t, i in zip(texts, ids)]

    def prompts(self, pairs: list[tuple[str, str]]) -> list[str]:
        """The prompts of (query, passage) pairs, each text cut to its token limit first."""
        o = self.options
        queries = self._cut([q for q, _ in pairs], o.max_query_tokens)
        passages = self._cut([p for _, p in pairs], o.max_passage_tokens)
        return [self.render(q, p) for q, p in zip(queries, passages)]

    # ------------------------------------------------------------ scoring
    def score_pairs(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """One score per (query, passage) pair, in order (float32)."""
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        if self.client is not None:
            return self._score_remote(pairs)
        model = self.model
        texts = self.prompts(pairs)
        special = not self._chat  # a chat template writes its own special tokens
        lengths = [len(i) for i in self.tokenizer(texts, add_special_tokens=special)["input_ids"]]
        limit = self.tokenizer.model_max_length
        if max(lengths) > limit:
            raise ConfigError(f"teacher 'llm': a prompt of {max(lengths)} tokens exceeds {self.options.model}'s "
                              f"{limit}; lower max_passage_tokens ({self.options.max_passage_tokens})")
        order = np.argsort(-np.asarray(lengths), kind="stable")
        out = np.zeros(len(texts), dtype=np.float64)
        kwargs = {"processing_kwargs": {"text": {"add_special_tokens": special}}}
        bar = progress.bar(len(texts), "llm judge", "pair")
        with torch.inference_mode():
            for start in range(0, len(texts), self.options.batch_size):
                idx = order[start:start + self.options.batch_size]
                features = model.preprocess([texts[i] for i in idx], **kwargs)
                features = {k: v.to(model.device) if hasattr(v, "to") else v for k, v in features.items()}
                scores = model(features)["scores"].float().reshape(-1).cpu().numpy()
                out[idx] = scores
                bar.update(len(idx))
        bar.close()
        return self._as_scores(out)

    def _as_scores(self, log_odds: np.ndarray) -> np.ndarray:
        """The pairs' scores from their log-odds (``p-yes``: the sigmoid), float32; counts the pairs."""
        self.pairs_scored += len(log_odds)
        if self.options.score == "p-yes":
            log_odds = 1.0 / (1.0 + np.exp(-log_odds))
        return log_odds.astype(np.float32)

    def remote_messages(self, pairs: list[tuple[str, str]]) -> list[list[dict[str, str]]]:
        """The messages sent to the server for each pair, each text cut to its token limit first; a client
        that sends plain text (not through a chat template) gets the plain-text answer cue at the end."""
        o = self.options
        queries = self._cut([q for q, _ in pairs], o.max_query_tokens)
        passages = self._cut([p for _, p in pairs], o.max_passage_tokens)
        cue = "" if self.client.chat_prompts() else PLAIN_ANSWER_CUE
        out = []
        for q, p in zip(queries, passages):
            messages = [dict(m) for m in self.template.render(query=q, passage=p)]
            messages[-1]["content"] += cue
            out.append(messages)
        return out

    def _score_remote(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """Log-odds read from the server's first-token log-probabilities, a client batch at a time."""
        messages = self.remote_messages(pairs)
        out = np.zeros(len(pairs), dtype=np.float64)
        step = max(1, self.client.batch_size())
        bar = progress.bar(len(pairs), "llm judge (http)", "pair")
        try:
            for start in range(0, len(pairs), step):
                answers = self.client.first_token_logprobs(messages[start:start + step], self.options.top_logprobs)
                for i, top in enumerate(answers, start):
                    out[i] = self.log_odds(top)
                bar.update(len(answers))
        finally:
            bar.close()
        return self._as_scores(out)

    def log_odds(self, top: dict[str, float]) -> float:
        """``logsumexp(yes tokens) - logsumexp(no tokens)`` from one answer's ``{token text: log-probability}``;
        a side with no token there is taken at the smallest returned log-probability (counted)."""
        lead = "" if self.client.chat_prompts() else " "  # as each word follows the prompt (see _answer_ids)

        def side(words: list[str]) -> float | None:
            tokens = {lead + w for w in words}
            found = [v for t, v in top.items() if t in tokens]
            return float(np.logaddexp.reduce(found)) if found else None

        floor = min(top.values())
        yes, no = side(self.options.yes_words), side(self.options.no_words)
        if yes is None or no is None:
            self.answers_outside_top += 1
            if self.answers_outside_top in (1, 10, 100, 1000):
                log.warning("teacher llm: %d answer(s) so far without a %s word among the top %d tokens; taken "
                            "at the smallest returned log-probability", self.answers_outside_top,
                            "yes" if yes is None else "no", self.options.top_logprobs)
        return (floor if yes is None else yes) - (floor if no is None else no)

    def retrieve(self, queries: dict[str, str], k: int, *, first_stage: Run | None = None, **_: object) -> Run:
        """BM25's top ``rerank_depth`` (or ``first_stage``'s) re-ranked by the judge."""
        return rerank_first_stage(self, queries, self.options.rerank_depth, first_stage)
