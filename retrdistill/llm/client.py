"""LLM clients (registry kind ``llm``): a local transformers causal LM, or any OpenAI-compatible HTTP server.

Both take chat prompts (lists of ``{"role", "content"}`` messages) and return one completion each, in order.

* ``transformers``: a causal LM loaded by transformers from a hub name, a folder or ``offline:NAME``; a folder
  holding one ``.gguf`` file loads through ``gguf_file=`` (dequantised; needs ``gguf``). Prompts go through the
  tokenizer's chat template when it has one (instruct models), else are joined as plain text (base models).
  Batched with left padding, prompts sorted by length so a batch pads little.
* ``openai``: ``POST {base_url}/chat/completions`` (or ``/completions``) of vLLM, TGI, llama.cpp's server,
  ``transformers serve``, ... with requests in parallel threads, a timeout each, and retries with exponential
  back-off on a refused connection, a timeout, HTTP 429 or 5xx. A server that stays down, refuses a request
  (4xx) or answers malformed JSON is an :class:`LLMError` naming the endpoint. Redirects are followed only
  to the same origin (scheme, host and port) and only when they keep the POST (307, 308): the key is never
  sent to another origin, and a redirect that would turn the POST into a GET (301, 302, 303) is an error
  naming the endpoint and where it redirected to.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from retrdistill.errors import ConfigError, RetrdistillError
from retrdistill.parts import LLMClient

log = logging.getLogger(__name__)
Messages = list[dict[str, str]]
ROLES = ("system", "user", "assistant")
MAX_TOP_LOGPROBS = 20  # as OpenAI's API bounds top_logprobs


class LLMError(RetrdistillError):
    """An LLM that could not answer: a server down or answering garbage, a model that failed to load."""


@dataclass(frozen=True)
class GenerationParams:
    """How to sample one completion. ``temperature`` 0 is greedy decoding (``top_p`` then unused); ``seed``
    seeds sampling (per request on a server; per batch locally); ``stop``: the completion is cut at the first of
    these strings."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 13
    stop: tuple[str, ...] = ()
    top_logprobs: int = 0  # also return the N most likely tokens at each generated position (0: none)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError("max_new_tokens must be at least 1")
        if not isinstance(self.top_logprobs, int) or not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS:
            raise ConfigError(f"top_logprobs must be an integer from 0 to {MAX_TOP_LOGPROBS}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ConfigError("need temperature >= 0 and 0 < top_p <= 1")
        object.__setattr__(self, "stop", tuple(self.stop))

    def key(self) -> dict[str, Any]:
        """What changes the output, as the cache keys it (``top_p`` and ``seed`` do not under greedy decoding)."""
        out = asdict(self)
        out["stop"] = list(self.stop)
        if not self.top_logprobs:  # the texts alone: keyed as before token probabilities could be asked for
            out.pop("top_logprobs")
        if self.temperature == 0:
            out.pop("top_p")
            out.pop("seed")
        return out


@dataclass
class Completion:
    """One completion of :meth:`TransformersClient.complete`: its text (cut at a stop string), the prompt's
    and the completion's lengths in tokens, and why it ended: ``stop`` (end of text or a stop string) or
    ``length`` (``max_new_tokens`` reached)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    # with ``GenerationParams.top_logprobs``: per generated token, (its text, its log-probability, the top N
    # ``(text, log-probability)`` at that position, most likely first)
    logprobs: list[tuple[str, float, list[tuple[str, float]]]] | None = None


def check_messages(messages: Messages) -> None:
    if not messages or any(m.get("role") not in ROLES or not isinstance(m.get("content"), str) for m in messages):
        raise ConfigError(f"a prompt is a non-empty list of {{'role': one of {', '.join(ROLES)}, 'content': str}} "
                          f"messages, got {messages!r:.200}")


def plain_text(messages: Messages) -> str:
    """A chat prompt as plain text for a model without a chat template: the system message, then each user turn
    followed by a space and its assistant answer (few-shot examples), ending with the last user turn."""
    parts: list[str] = []
    for m in messages:
        if m["role"] == "assistant" and parts:
            parts[-1] = f"{parts[-1]} {m['content']}"
        else:
            parts.append(m["content"])
    return "\n\n".join(p.strip("\n") for p in parts)


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    ends = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return (text[:min(ends)] if ends else text).strip()


class TransformersClient(LLMClient):
    """A local causal LM through transformers (``AutoModelForCausalLM.generate``), batched.

    ``gguf_file``: the GGUF checkpoint inside the model folder (None: the folder's single ``.gguf`` file when it
    has no ``config.json``). ``chat_template``: None uses the tokenizer's chat template when it has one; False
    always joins messages as plain text. ``max_input_tokens``: longer prompts are cut from the left (the end of a
    prompt is what the model answers)."""

    @dataclass
    class Options:
        model: str = "offline:qwen2.5-coder-0.5b-instruct"
        gguf_file: str | None = None
        chat_template: bool | None = None
        max_input_tokens: int = field(default=1024, metadata={"min": 8})
        dtype: str = "float32"
        batch_size: int = field(default=8, metadata={"min": 1})
        device: str | None = None

        def __post_init__(self) -> None:
            if self.batch_size < 1 or self.max_input_tokens < 8:
                raise ValueError("need batch_size >= 1 and max_input_tokens >= 8")
            if self.dtype not in ("float32", "bfloat16", "float16"):
                raise ValueError("dtype must be float32, bfloat16 or float16")

    output_neutral: ClassVar[tuple[str, ...]] = ("batch_size", "device")
    example_options: ClassVar[dict[str, Any]] = {"model": "offline:smollm2-135m-instruct"}
    example_variants: ClassVar[dict[str, Any]] = {"model": "offline:gemma-3-270m", "dtype": "bfloat16",
                                                  "gguf_file": "other.gguf", "chat_template": False,
                                                  "device": "cpu"}

    def setup(self) -> None:
        self._model = None
        self._tokenizer = None
        self._fingerprint: dict[str, Any] | None = None

    def _folder(self) -> tuple[str, str | None]:
        from retrdistill.models import gguf_file, resolve_model

        path = resolve_model(self.options.model)
        return path, self.options.gguf_file or gguf_file(path)

    def fingerprint(self) -> dict[str, Any]:
        if self._fingerprint is None:
            from retrdistill.models import model_fingerprint

            path, gguf = self._folder()
            self._fingerprint = {"llm": "transformers", "model": model_fingerprint(self.options.model),
                                 "gguf_file": gguf, **{k: v for k, v in self.output_options().items()
                                                       if k not in ("model", "gguf_file")}}
        return self._fingerprint

    def batch_size(self) -> int:
        return self.options.batch_size

    def input_files(self) -> list[Path]:
        path, _ = self._folder()
        return [Path(path)] if Path(path).exists() else []

    def load(self) -> tuple[Any, Any]:
        """The tokenizer and model, loaded once."""
        if self._model is None:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            path, gguf = self._folder()
            kwargs = {"gguf_file": gguf} if gguf else {}
            try:
                tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
                model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, self.options.dtype), **kwargs)
            except (OSError, ValueError, ImportError) as exc:
                raise LLMError(f"llm 'transformers': could not load {self.options.model!r} ({path}"
                               f"{', gguf_file=' + gguf if gguf else ''}): {exc}") from exc
            tokenizer.padding_side = "left"
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            device = self.options.device or ("cuda" if torch.cuda.is_available() else "cpu")
            self._model = model.to(device).eval()
            self._tokenizer = tokenizer
            log.info("llm: loaded %s (%s, chat template: %s) on %s", self.options.model, type(model).__name__,
                     self.uses_chat_template(), device)
        return self._tokenizer, self._model

    def uses_chat_template(self) -> bool:
        tokenizer, _ = self.load()
        has = bool(getattr(tokenizer, "chat_template", None))
        if self.options.chat_template and not has:
            raise ConfigError(f"llm 'transformers': {self.options.model!r} has no chat template "
                              f"(a base model); leave chat_template unset to join prompts as plain text")
        return has if self.options.chat_template is None else bool(self.options.chat_template)

    def render(self, messages: Messages) -> str:
        check_messages(messages)
        tokenizer, _ = self.load()
        if self.uses_chat_template():
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return plain_text(messages)

    def generate(self, prompts: list[Messages], params: GenerationParams) -> list[str]:
        texts = [self.render(m) for m in prompts]
        # a chat template writes its own special tokens; plain text gets the tokenizer's (e.g. a BOS)
        return [c.text for c in self.complete(texts, params, special_tokens=not self.uses_chat_template())]

    def complete(self, texts: list[str], params: GenerationParams, *, special_tokens: bool = True) -> list[Completion]:
        """One completion per prompt text, already rendered (what :meth:`generate` and the HTTP server of
        :mod:`retrdistill.llm.server` call); ``special_tokens``: let the tokenizer add its own (a BOS)."""
        import torch

        tokenizer, model = self.load()
        lengths = [len(tokenizer(t, add_special_tokens=special_tokens)["input_ids"]) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        out: list[Completion | None] = [None] * len(texts)
        size = self.options.batch_size
        eos = {i for i in _as_list(model.generation_config.eos_token_id) + [tokenizer.eos_token_id] if i is not None}
        for start in range(0, len(order), size):
            rows = order[start:start + size]
            tokenizer.truncation_side = "left"
            enc = tokenizer([texts[i] for i in rows], return_tensors="pt", padding=True, truncation=True,
                            max_length=self.options.max_input_tokens,
                            add_special_tokens=special_tokens).to(model.device)
            sampling = params.temperature > 0
            kwargs: dict[str, Any] = {"do_sample": sampling, "max_new_tokens": params.max_new_tokens,
                                      "pad_token_id": tokenizer.pad_token_id}
            if sampling:
                torch.manual_seed(params.seed)
                kwargs.update(temperature=params.temperature, top_p=params.top_p)
            else:  # not the checkpoint's sampling defaults: greedy means greedy
                kwargs.update(temperature=None, top_p=None, top_k=None)
            if params.top_logprobs:  # the raw logits of each generated position, before any sampling warper
                kwargs.update(output_logits=True, return_dict_in_generate=True)
            with torch.inference_mode():
                generated = model.generate(**enc, **kwargs)
            sequences = generated.sequences if params.top_logprobs else generated
            new = sequences[:, enc["input_ids"].shape[1]:].tolist()
            for row, (i, ids) in enumerate(zip(rows, new)):
                ended = next((n for n, t in enumerate(ids) if t in eos), None)
                kept = ids if ended is None else ids[:ended]
                raw = tokenizer.decode(kept, skip_special_tokens=True)
                text = cut_at_stop(raw, params.stop)
                stopped = ended is not None or len(kept) < params.max_new_tokens or text != raw.strip()
                probs = None
                if params.top_logprobs:  # the answer's tokens and the end-of-text token that closed it
                    shown = ids[:len(kept) + (ended is not None)]
                    probs = _token_logprobs(tokenizer, [step[row] for step in generated.logits[:len(shown)]],
                                            shown, params.top_logprobs)
                out[i] = Completion(text, min(lengths[i], self.options.max_input_tokens), len(kept),
                                    "stop" if stopped else "length", probs)
        return [c for c in out if c is not None]

    def chat_prompts(self) -> bool:
        return self.uses_chat_template()

    def first_token_logprobs(self, prompts: list[Messages], top_n: int) -> list[dict[str, float]]:
        texts = [self.render(m) for m in prompts]
        params = GenerationParams(max_new_tokens=1, temperature=0.0, top_logprobs=top_n)
        done = self.complete(texts, params, special_tokens=not self.uses_chat_template())
        return [merged_logprobs(c.logprobs[0][2]) if c.logprobs else {} for c in done]


def merged_logprobs(pairs: list[tuple[str, float]]) -> dict[str, float]:
    """``{token text: log-probability}``; two tokens with the same text (different ids) are one entry, their
    probabilities added."""
    import math

    out: dict[str, float] = {}
    for text, value in pairs:
        value = float(value)
        if text in out:
            hi, lo = max(out[text], value), min(out[text], value)
            out[text] = hi + math.log1p(math.exp(lo - hi))
        else:
            out[text] = value
    return out


def _token_logprobs(tokenizer, logits: list[Any], ids: list[int], top_n: int) -> list[tuple[str, float, list]]:
    """Per generated position: the chosen token's text and log-probability, and the ``top_n`` most likely
    ``(text, log-probability)``; log-softmax of the raw logits, in float32."""
    import torch

    out = []
    for position, token in zip(logits, ids):
        logp = torch.log_softmax(position.float(), dim=-1)
        values, top = torch.topk(logp, top_n)
        out.append((tokenizer.decode([token]), float(logp[token]),
                    [(tokenizer.decode([int(t)]), float(v)) for v, t in zip(values.tolist(), top.tolist())]))
    return out


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


class _RedirectRefused(Exception):
    """A redirect the client does not follow; the message says why and where it pointed."""


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only when it keeps both the origin and the POST (307, 308), re-sending the same body
    and headers; any other is refused (:class:`_RedirectRefused`) before anything is sent to its target."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102 (urllib's hook)
        method = req.get_method()
        problem = None
        if _origin(newurl) != _origin(req.full_url):
            problem = f"another origin (HTTP {code}); not followed, so the request and its key stay here"
        elif code in (301, 302, 303) and method not in ("GET", "HEAD"):
            problem = f"HTTP {code}, which would turn the {method} into a GET; not followed"
        elif code not in (307, 308):
            problem = f"HTTP {code}; not followed"
        if problem is not None:
            fp.close()
            raise _RedirectRefused(f"the server redirected to {newurl}: {problem}")
        return urllib.request.Request(newurl, data=req.data, headers=dict(req.headers), method=method,
                                      origin_req_host=req.origin_req_host, unverifiable=True)


_OPENER = urllib.request.build_opener(_SameOriginRedirects)


class OpenAIClient(LLMClient):
    """An OpenAI-compatible server: ``api: chat`` posts messages to ``/chat/completions``; ``api: completions``
    posts the prompt joined as plain text to ``/completions``. The key, when the server needs one, is read from
    the environment variable ``api_key_env`` (never from the pipeline file). ``concurrency`` requests run at
    once; each waits ``timeout_s``; a failed one is retried ``retries`` times after ``backoff_s``, doubling up to
    ``max_backoff_s`` (so a server restarted within the retries is picked up again)."""

    @dataclass
    class Options:
        base_url: str = "http://127.0.0.1:8000/v1"
        model: str = ""
        api: str = "chat"
        extra_body: dict[str, Any] = field(default_factory=dict)
        api_key_env: str = "OPENAI_API_KEY"
        concurrency: int = field(default=4, metadata={"min": 1})
        timeout_s: float = field(default=120.0, metadata={"min": 0, "exclusive_min": True})
        retries: int = field(default=5, metadata={"min": 0})
        backoff_s: float = field(default=1.0, metadata={"min": 0})
        max_backoff_s: float = field(default=30.0, metadata={"min": 0})

        def __post_init__(self) -> None:
            if not self.model:
                raise ValueError("'model' (the name the server serves the model under) is required")
            if self.api not in ("chat", "completions"):
                raise ValueError("api must be 'chat' or 'completions'")
            if not self.base_url.startswith(("http://", "https://")):
                raise ValueError(f"base_url must be an http(s) URL, got {self.base_url!r}")
            if self.concurrency < 1 or self.retries < 0 or self.timeout_s <= 0 or self.backoff_s < 0:
                raise ValueError("need concurrency >= 1, retries >= 0, timeout_s > 0, backoff_s >= 0")

    output_neutral: ClassVar[tuple[str, ...]] = ("api_key_env", "concurrency", "timeout_s", "retries", "backoff_s",
                                                 "max_backoff_s")
    example_options: ClassVar[dict[str, Any]] = {"base_url": "http://127.0.0.1:9/v1", "model": "served-model"}
    example_variants: ClassVar[dict[str, Any]] = {"base_url": "http://127.0.0.1:10/v1", "model": "other-model",
                                                  "api": "completions", "extra_body": {"top_k": 20},
                                                  "api_key_env": "OTHER_KEY"}

    @property
    def endpoint(self) -> str:
        return self.options.base_url.rstrip("/")

    def fingerprint(self) -> dict[str, Any]:
        return {"llm": "openai", "endpoint": self.endpoint, "model": self.options.model, "api": self.options.api,
                "extra_body": self.options.extra_body}

    def batch_size(self) -> int:
        return 2 * self.options.concurrency

    def generate(self, prompts: list[Messages], params: GenerationParams) -> list[str]:
        return self._each(prompts, lambda m: self._one(m, params))

    def _each(self, prompts: list[Messages], ask) -> list[Any]:
        """``ask(prompt)`` for every prompt (checked first), ``concurrency`` requests at a time, in order."""
        for m in prompts:
            check_messages(m)
        if len(prompts) <= 1 or self.options.concurrency == 1:
            return [ask(m) for m in prompts]
        with ThreadPoolExecutor(min(self.options.concurrency, len(prompts))) as pool:
            return list(pool.map(ask, prompts))

    def _one(self, messages: Messages, params: GenerationParams) -> str:
        body: dict[str, Any] = {"model": self.options.model, "max_tokens": params.max_new_tokens,
                                "temperature": params.temperature, **self.options.extra_body}
        if params.temperature > 0:
            body.update(top_p=params.top_p, seed=params.seed)
        if params.stop:
            body["stop"] = list(params.stop)[:4]
        if self.options.api == "chat":
            url, body["messages"] = f"{self.endpoint}/chat/completions", messages
        else:
            url, body["prompt"] = f"{self.endpoint}/completions", plain_text(messages)
        answer = self._post(url, body)
        try:
            choice = answer["choices"][0]
            text = choice["message"]["content"] if self.options.api == "chat" else choice["text"]
            if not isinstance(text, str):
                raise TypeError(f"content is {type(text).__name__}")
        except (KeyError, IndexError, TypeError) as exc:
            raise LLMError(f"{url}: the answer is not an OpenAI {self.options.api} completion ({exc!r}): "
                           f"{json.dumps(answer)[:300]}") from None
        return cut_at_stop(text, params.stop)

    def chat_prompts(self) -> bool:
        return self.options.api == "chat"

    def first_token_logprobs(self, prompts: list[Messages], top_n: int) -> list[dict[str, float]]:
        """The answer's first-token log-probabilities, asked for as OpenAI's API does: ``logprobs: true,
        top_logprobs: N`` on chat, ``logprobs: N`` on completions (vLLM, llama.cpp's llama-server, ``transformers
        serve``, ``retrdistill serve-llm``), greedy and one token long. A server whose answer carries no
        log-probabilities is an :class:`LLMError` naming the endpoint."""
        if not 1 <= top_n <= MAX_TOP_LOGPROBS:
            raise ConfigError(f"top_n must be from 1 to {MAX_TOP_LOGPROBS}")
        return self._each(prompts, lambda m: self._logprobs(m, top_n))

    def _logprobs(self, messages: Messages, top_n: int) -> dict[str, float]:
        body: dict[str, Any] = {"model": self.options.model, "max_tokens": 1, "temperature": 0.0,
                                **self.options.extra_body}
        if self.options.api == "chat":
            url = f"{self.endpoint}/chat/completions"
            body.update(messages=messages, logprobs=True, top_logprobs=top_n)
        else:
            url = f"{self.endpoint}/completions"
            body.update(prompt=plain_text(messages), logprobs=top_n)
        answer = self._post(url, body)
        try:
            choice = answer["choices"][0]
            given = choice.get("logprobs")
            if self.options.api == "chat":
                first = (given or {}).get("content") or []
                pairs = [(t["token"], t["logprob"]) for t in first[0]["top_logprobs"]] if first else []
            else:
                tops = (given or {}).get("top_logprobs") or []
                pairs = list(tops[0].items()) if tops and tops[0] else []
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise LLMError(f"{url}: the answer's logprobs are not in OpenAI's {self.options.api} shape ({exc!r}): "
                           f"{json.dumps(answer)[:300]}") from None
        if not pairs:
            asked = "'logprobs': true and 'top_logprobs'" if self.options.api == "chat" else "'logprobs'"
            raise LLMError(f"{url}: the answer carries no token log-probabilities; the judge needs a server that "
                           f"returns them when a {self.options.api} request sets {asked}: "
                           f"{json.dumps(answer)[:200]}")
        return merged_logprobs(pairs)

    def _post(self, url: str, body: dict[str, Any]) -> Any:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.options.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = json.dumps(body).encode("utf-8")
        last = ""
        for attempt in range(self.options.retries + 1):
            if attempt:
                delay = min(self.options.max_backoff_s, self.options.backoff_s * 2 ** (attempt - 1))
                delay *= 1 + 0.25 * random.random()  # jitter: concurrent requests do not retry in step
                log.warning("llm: %s failed (%s); retry %d of %d in %.1fs", url, last, attempt,
                            self.options.retries, delay)
                time.sleep(delay)
            request = urllib.request.Request(url, data=data, headers=headers, method="POST")
            try:
                with _OPENER.open(request, timeout=self.options.timeout_s) as response:
                    raw = response.read()
            except _RedirectRefused as exc:
                raise LLMError(f"{url}: {exc}; set base_url to where the server really answers") from None
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:300].decode("utf-8", "replace")
                if exc.code == 429 or exc.code >= 500:
                    last = f"HTTP {exc.code}: {detail}"
                    continue
                raise LLMError(f"{url}: refused the request with HTTP {exc.code}: {detail}") from None
            except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError,
                    http.client.HTTPException) as exc:  # the last: a server that died while answering
                last = str(getattr(exc, "reason", exc)) or type(exc).__name__
                continue
            try:
                return json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise LLMError(f"{url}: answered malformed JSON: {raw[:300]!r}") from None
        raise LLMError(f"{url}: no answer after {self.options.retries + 1} attempts ({last}); is the server "
                       f"running and serving {self.options.model!r}?")
