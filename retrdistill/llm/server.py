"""An OpenAI-compatible HTTP server over the local ``transformers`` client, so a team shares one loaded model
(``retrdistill serve-llm MODEL --port P``); any ``openai`` client — retrdistill's own, or anyone's — talks to it.

Endpoints (under ``/v1``): ``GET /models``, ``POST /chat/completions`` (messages through the model's chat
template), ``POST /completions`` (a prompt string, or a list of them, as plain text), and ``GET /health`` (the
model, and how many requests and model batches were served). Requests that arrive together with the same
sampling parameters are generated in one batch of up to ``batch_size`` prompts. Token log-probabilities come as
OpenAI's API gives them: ``logprobs: true`` with ``top_logprobs: N`` (0-20) on chat (``choices[].logprobs.content``:
per generated token its ``token``, ``logprob``, ``bytes`` and ``top_logprobs``), ``logprobs: N`` on completions
(``tokens``, ``token_logprobs``, ``top_logprobs``, ``text_offset``); log-softmax of the model's raw logits.
Not supported, and refused with HTTP 400: ``stream``, ``n`` > 1, tools. A request naming another model than the served one is HTTP 404.
Without ``temperature`` a request samples at 1.0, as OpenAI's API does; without ``seed`` it samples with seed 13.
Errors are answered in OpenAI's shape, ``{"error": {"message", "type", "code"}}``.

What one request may send is bounded before it is read: a POST needs a ``Content-Length`` (HTTP 411 without one,
400 when it is not a non-negative integer) of at most ``max_body_bytes`` (HTTP 413 above; 8 MiB by default), and
a ``/completions`` request holds at most ``max_prompts`` prompts (HTTP 400 above; 256 by default). A refused body
is never read, so its connection is closed after the answer.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from retrdistill.errors import ConfigError
from retrdistill.llm.client import (
    MAX_TOP_LOGPROBS,
    Completion,
    GenerationParams,
    TransformersClient,
    check_messages,
)

log = logging.getLogger(__name__)
UNSUPPORTED = ("stream", "tools", "functions", "response_format")
MAX_BODY_BYTES = 8 << 20
MAX_PROMPTS = 256


class RequestError(Exception):
    """A request the server refuses: its HTTP status, an OpenAI error type and a message."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.kind = status, kind


@dataclass
class _Job:
    texts: list[str]
    special_tokens: bool
    params: GenerationParams
    done: threading.Event = field(default_factory=threading.Event)
    result: list[Completion] | None = None
    error: BaseException | None = None

    def key(self) -> tuple[bool, GenerationParams]:
        return self.special_tokens, self.params


class BatchingWorker:
    """One thread that owns the model: it takes queued jobs and generates those with the same parameters
    together, up to ``batch_size`` prompts at a time (waiting ``batch_wait_s`` for more to arrive)."""

    def __init__(self, client: TransformersClient, batch_size: int, batch_wait_s: float) -> None:
        self.client, self.batch_size, self.batch_wait_s = client, batch_size, batch_wait_s
        self.jobs: queue.Queue[_Job | None] = queue.Queue()
        self.batches = 0
        self._held: list[_Job] = []
        self._thread = threading.Thread(target=self._loop, name="llm-worker", daemon=True)
        self._thread.start()

    def run(self, job: _Job) -> list[Completion]:
        self.jobs.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    def stop(self) -> None:
        self.jobs.put(None)
        self._thread.join(timeout=5)

    def _next(self, block: bool, timeout: float | None = None) -> _Job | None:
        if self._held:
            return self._held.pop(0)
        return self.jobs.get(block=block, timeout=timeout)

    def _loop(self) -> None:
        while True:
            first = self._next(block=True)
            if first is None:
                return
            batch, size, others = [first], len(first.texts), []
            deadline = time.monotonic() + self.batch_wait_s
            while size < self.batch_size:
                try:
                    job = self._next(block=True, timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if job is None:
                    self.jobs.put(None)  # stop after this batch
                    break
                if job.key() == first.key() and size + len(job.texts) <= self.batch_size:
                    batch.append(job)
                    size += len(job.texts)
                else:
                    others.append(job)
            self._held = others + self._held
            self._generate(batch)

    def _generate(self, batch: list[_Job]) -> None:
        try:
            done = self.client.complete([t for job in batch for t in job.texts], batch[0].params,
                                        special_tokens=batch[0].special_tokens)
        except BaseException as exc:  # handed to the requests, which answer HTTP 500
            for job in batch:
                job.error = exc
                job.done.set()
            return
        self.batches += 1
        start = 0
        for job in batch:
            job.result, start = done[start:start + len(job.texts)], start + len(job.texts)
            job.done.set()


class LLMServer:
    """The HTTP server (``ThreadingHTTPServer``: a thread per connection, the model in one worker thread).
    :meth:`serve_forever` blocks; :meth:`start` serves from a background thread (embedding, tests)."""

    def __init__(self, client: TransformersClient, *, name: str, host: str = "127.0.0.1", port: int = 8000,
                 batch_wait_s: float = 0.02, max_tokens_limit: int = 2048, max_body_bytes: int = MAX_BODY_BYTES,
                 max_prompts: int = MAX_PROMPTS) -> None:
        if max_body_bytes < 1 or max_prompts < 1:
            raise ConfigError("serve-llm: max_body_bytes and max_prompts must be at least 1")
        self.client, self.name, self.max_tokens_limit = client, name, max_tokens_limit
        self.max_body_bytes, self.max_prompts = max_body_bytes, max_prompts
        self.requests = 0
        self._lock = threading.Lock()
        self._created = int(time.time())
        try:  # the port first (a taken one fails at once); requests wait in its backlog until serving starts
            self.http = ThreadingHTTPServer((host, port), _handler(self))
        except OSError as exc:
            raise ConfigError(f"serve-llm: cannot listen on {host}:{port}: {exc}") from None
        self.http.daemon_threads = True
        try:
            client.load()
        except BaseException:
            self.http.server_close()
            raise
        self.worker = BatchingWorker(client, client.options.batch_size, batch_wait_s)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.http.server_address[:2]
        return f"http://{host}:{port}/v1"

    def serve_forever(self) -> None:
        log.info("serve-llm: serving %r on %s", self.name, self.url)
        try:
            self.http.serve_forever()
        finally:
            self.close()

    def start(self) -> LLMServer:
        self._thread = threading.Thread(target=self.http.serve_forever, name="llm-http", daemon=True)
        self._thread.start()
        log.info("serve-llm: serving %r on %s", self.name, self.url)
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.http.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.http.server_close()
        self.worker.stop()

    # ------------------------------------------------------------------ the API
    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": self.name, "object": "model", "created": self._created,
                                            "owned_by": "retrdistill"}]}

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "model": self.name, "requests": self.requests, "batches": self.worker.batches}

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        given = body.get("messages")
        messages = [_text_message(m) for m in given] if isinstance(given, list) else []
        try:
            check_messages(messages)
        except ConfigError as exc:
            raise RequestError(400, f"'messages': {exc}") from None
        wanted = body.get("logprobs")
        if wanted not in (None, True, False):
            raise RequestError(400, "'logprobs' must be true or false on chat completions")
        top = _given(body, "top_logprobs", 0)
        if not wanted and top:
            raise RequestError(400, "'top_logprobs' needs 'logprobs': true")
        params = self._params(body, top_logprobs=top, logprobs=bool(wanted))
        text = self.client.render(messages)
        (done,) = self._run([text], not self.client.uses_chat_template(), params)
        return self._answer("chatcmpl", "chat.completion", [done], lambda c: {
            "message": {"role": "assistant", "content": c.text},
            "logprobs": _chat_logprobs(c, top) if wanted else None})

    def completions(self, body: dict[str, Any]) -> dict[str, Any]:
        prompt = body.get("prompt")
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise RequestError(400, "'prompt' must be a string or a non-empty list of strings")
        if len(prompts) > self.max_prompts:
            raise RequestError(400, f"'prompt' holds {len(prompts)} prompts; this server takes at most "
                                    f"{self.max_prompts} a request (send the rest in further requests)")
        if body.get("echo") or body.get("suffix"):
            raise RequestError(400, "'echo' and 'suffix' are not supported")
        wanted = body.get("logprobs")
        if wanted is not None and (isinstance(wanted, bool) or not isinstance(wanted, int)):
            raise RequestError(400, f"'logprobs' must be an integer from 0 to {MAX_TOP_LOGPROBS} on completions")
        params = self._params(body, default_max_tokens=16, top_logprobs=wanted or 0, logprobs=wanted is not None)
        done = self._run(prompts, True, params)
        return self._answer("cmpl", "text_completion", done, lambda c: {
            "text": c.text, "logprobs": _completion_logprobs(c, wanted or 0) if wanted is not None else None})

    def _run(self, texts: list[str], special_tokens: bool, params: GenerationParams) -> list[Completion]:
        with self._lock:
            self.requests += 1
        return self.worker.run(_Job(texts, special_tokens, params))

    def _params(self, body: dict[str, Any], default_max_tokens: int = 256, top_logprobs: Any = 0,
                logprobs: bool = False) -> GenerationParams:
        model = body.get("model")
        if model is not None and model != self.name:
            raise RequestError(404, f"the model {model!r} does not exist; this server serves {self.name!r}",
                               "model_not_found")
        for key in UNSUPPORTED:
            if body.get(key):
                raise RequestError(400, f"{key!r} is not supported by retrdistill serve-llm")
        if body.get("n", 1) != 1:
            raise RequestError(400, "'n' must be 1")
        max_tokens = _given(body, "max_completion_tokens", _given(body, "max_tokens", default_max_tokens))
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else stop
        try:
            if not isinstance(max_tokens, int) or max_tokens > self.max_tokens_limit:
                raise ConfigError(f"max_tokens must be an integer up to {self.max_tokens_limit}")
            if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) for s in stop):
                raise ConfigError("'stop' must be a string or a list of up to 4 strings")
            if isinstance(top_logprobs, bool) or not isinstance(top_logprobs, int):
                raise ConfigError(f"top_logprobs must be an integer from 0 to {MAX_TOP_LOGPROBS}")
            # asked for log-probabilities with no alternatives: still computed (the chosen token's), top 1 kept
            top = max(top_logprobs, 1) if logprobs else 0
            return GenerationParams(max_new_tokens=max_tokens, temperature=float(_given(body, "temperature", 1.0)),
                                    top_p=float(_given(body, "top_p", 1.0)), seed=int(_given(body, "seed", 13)),
                                    stop=tuple(stop), top_logprobs=top)
        except (ConfigError, TypeError, ValueError) as exc:
            raise RequestError(400, str(exc)) from None

    def _answer(self, prefix: str, kind: str, done: list[Completion], content) -> dict[str, Any]:
        return {"id": f"{prefix}-{uuid.uuid4().hex}", "object": kind, "created": int(time.time()),
                "model": self.name,
                "choices": [{"index": i, **content(c), "finish_reason": c.finish_reason} for i, c in enumerate(done)],
                "usage": {"prompt_tokens": sum(c.prompt_tokens for c in done),
                          "completion_tokens": sum(c.completion_tokens for c in done),
                          "total_tokens": sum(c.prompt_tokens + c.completion_tokens for c in done)}}


def _chat_logprobs(done: Completion, top_n: int) -> dict[str, Any]:
    """``choices[].logprobs`` of a chat completion in OpenAI's shape (``top_n`` alternatives a token)."""
    def entry(text: str, value: float) -> dict[str, Any]:
        return {"token": text, "logprob": value, "bytes": list(text.encode("utf-8"))}

    return {"content": [{**entry(text, value), "top_logprobs": [entry(t, v) for t, v in top[:top_n]]}
                        for text, value, top in (done.logprobs or [])]}


def _completion_logprobs(done: Completion, top_n: int) -> dict[str, Any]:
    """``choices[].logprobs`` of a (legacy) completion in OpenAI's shape (``top_n`` alternatives a token, as a
    mapping: of two tokens with the same text the likelier is shown)."""
    rows = done.logprobs or []
    offsets, at, tops = [], 0, []
    for text, _, top in rows:
        offsets.append(at)
        at += len(text)
        shown: dict[str, float] = {}
        for t, v in top[:top_n]:
            shown.setdefault(t, v)
        tops.append(shown)
    return {"tokens": [t for t, _, _ in rows], "token_logprobs": [v for _, v, _ in rows], "top_logprobs": tops,
            "text_offset": offsets}


def _given(body: dict[str, Any], key: str, default: Any) -> Any:
    """A request field, its default when absent or null (as OpenAI's API reads null)."""
    value = body.get(key)
    return default if value is None else value


def _text_message(message: Any) -> Any:
    """A message whose content is a list of text parts (``[{"type": "text", "text": ...}]``) as one string."""
    if isinstance(message, dict) and isinstance(message.get("content"), list):
        parts = message["content"]
        if all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in parts):
            return {**message, "content": "".join(p["text"] for p in parts)}
    return message


def _handler(server: LLMServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        routes_get = {"/v1/models": server.models, "/health": server.health, "/v1/health": server.health}
        routes_post = {"/v1/chat/completions": server.chat, "/v1/completions": server.completions}

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = self.path.split("?", 1)[0].rstrip("/")
            if path in self.routes_get:
                self._send(200, self.routes_get[path]())
            elif path == f"/v1/models/{server.name}":
                self._send(200, server.models()["data"][0])
            else:
                self._error(RequestError(404, f"no route GET {path}", "not_found"))

        def do_POST(self) -> None:  # noqa: N802
            path = self.path.split("?", 1)[0].rstrip("/")
            try:
                raw = self.rfile.read(self._body_length())
                if path not in self.routes_post:
                    raise RequestError(404, f"no route POST {path}", "not_found")
                try:
                    body = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    raise RequestError(400, "the request body is not JSON") from None
                if not isinstance(body, dict):
                    raise RequestError(400, "the request body must be a JSON object")
                self._send(200, self.routes_post[path](body))
            except RequestError as exc:
                self._error(exc)
            except Exception as exc:  # noqa: BLE001 (a failed generation is answered, never a dropped connection)
                log.exception("serve-llm: %s failed", path)
                self._error(RequestError(500, f"generation failed: {exc}", "server_error"))

        def _body_length(self) -> int:
            """The announced body length, refused (and the connection closed after the answer: the body is
            left unread) when it is missing, malformed or over the server's limit."""
            given = self.headers.get_all("Content-Length") or []
            if not given:
                self.close_connection = True
                raise RequestError(411, "a POST needs a Content-Length header (chunked bodies are not accepted)",
                                   "length_required")
            text = given[0].strip()
            if len(set(given)) > 1 or not (text.isascii() and text.isdigit()):
                self.close_connection = True
                raise RequestError(400, f"the Content-Length header must be one non-negative integer, got "
                                        f"{', '.join(given)!r:.100}")
            length = int(text)
            if length > server.max_body_bytes:
                self.close_connection = True
                raise RequestError(413, f"the request body is {length} bytes; this server takes at most "
                                        f"{server.max_body_bytes} bytes", "request_too_large")
            return length

        def _error(self, exc: RequestError) -> None:
            self._send(exc.status, {"error": {"message": str(exc), "type": exc.kind, "code": exc.status}})

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
            log.debug("serve-llm: %s " + format, self.address_string(), *args)

    return Handler


def serve(model: str, *, host: str = "127.0.0.1", port: int = 8000, name: str | None = None,
          options: dict[str, Any] | None = None, batch_wait_s: float = 0.02, threads: int | None = None,
          max_body_bytes: int = MAX_BODY_BYTES, max_prompts: int = MAX_PROMPTS) -> None:
    """Load ``model`` (a hub name, folder or ``offline:NAME``; ``options`` of the ``transformers`` client) and
    serve it under ``name`` (default: ``model``) until interrupted. ``threads``: torch's CPU threads (fewer than
    the cores when the machine is shared: oversubscribed threads slow generation down many times).
    ``max_body_bytes`` and ``max_prompts``: the most one request may send (larger ones are refused unread)."""
    from retrdistill import registry

    if threads is not None:
        import torch

        if threads < 1:
            raise ConfigError("threads must be at least 1")
        torch.set_num_threads(threads)

    client = registry.build("llm", "transformers", {**(options or {}), "model": model})
    server = LLMServer(client, name=name or model, host=host, port=port, batch_wait_s=batch_wait_s,
                       max_body_bytes=max_body_bytes, max_prompts=max_prompts)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("serve-llm: stopped")
