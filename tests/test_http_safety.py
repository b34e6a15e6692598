"""HTTP safety on loopback: the ``openai`` client never hands its key to another origin and never accepts the
answer of a POST that a redirect turned into a GET; ``retrdistill serve-llm`` bounds what one request may send
(its body's length, its number of prompts) before reading it."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from retrdistill import registry
from retrdistill.llm.client import GenerationParams, LLMError

KEY_ENV = "RETRDISTILL_TEST_REDIRECT_KEY"
PROMPT = [[{"role": "user", "content": "hello"}]]


def _completion(text: str) -> bytes:
    return json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}).encode()


class _Loopback:
    """A real HTTP server on 127.0.0.1 that records every request (method, path, headers, body) and answers as
    ``route(method, path)`` says: ``(status, extra headers, body)``."""

    def __init__(self, route) -> None:
        self.seen: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.seen.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                   "body": body})
                status, headers, payload = route(self.command, self.path)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _serve  # noqa: N815 (http.server's names)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.root = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def other_origin():
    """Another port on loopback (another origin) that answers anything with a valid completion."""
    server = _Loopback(lambda method, path: (200, {}, _completion("from the other origin")))
    yield server
    server.close()


def _redirecting(code: int, target: str) -> _Loopback:
    """A server whose completions endpoint redirects with ``code`` to ``target`` (absolute, or a path on the
    same server), and whose every other path answers a valid completion, to GET and POST alike."""
    def route(method: str, path: str):
        if path.endswith("/chat/completions"):
            return code, {"Location": target}, b""
        return 200, {}, _completion(f"answered a {method}")
    return _Loopback(route)


def _client(root: str, **options):
    return registry.build("llm", "openai", {"base_url": f"{root}/v1", "model": "m", "retries": 2, "backoff_s": 0.01,
                                            "api_key_env": KEY_ENV, **options})


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_a_redirect_to_another_origin_is_refused_and_gets_no_key(code, other_origin, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-secret")
    target = f"{other_origin.root}/v1/chat/completions"
    server = _redirecting(code, target)
    try:
        endpoint = f"{server.root}/v1/chat/completions"
        with pytest.raises(LLMError, match=rf"{endpoint}: .*redirect.*{target}") as info:
            _client(server.root).generate(PROMPT, GenerationParams())
        assert "another origin" in str(info.value)
        assert len(server.seen) == 1  # refused, not retried
        assert server.seen[0]["headers"].get("Authorization") == "Bearer sk-secret"  # the endpoint itself: yes
    finally:
        server.close()
    assert not any("Authorization" in r["headers"] for r in other_origin.seen)
    assert other_origin.seen == []  # nothing at all was sent there


@pytest.mark.parametrize("code", [301, 302, 303])
def test_a_redirect_that_turns_the_post_into_a_get_is_an_error(code, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-secret")
    server = _redirecting(code, "/elsewhere/answer.json")  # same origin; GET there answers valid-looking JSON
    try:
        endpoint, target = f"{server.root}/v1/chat/completions", f"{server.root}/elsewhere/answer.json"
        with pytest.raises(LLMError, match=rf"{endpoint}: .*redirected to {target}.*POST into a GET"):
            _client(server.root).generate(PROMPT, GenerationParams())
        assert [r["method"] for r in server.seen] == ["POST"]  # the GET was never sent
    finally:
        server.close()


def test_a_same_origin_redirect_that_keeps_the_post_is_followed(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-secret")
    server = _redirecting(307, "/moved/v1/answer")
    try:
        assert _client(server.root).generate(PROMPT, GenerationParams()) == ["answered a POST"]
        first, second = server.seen
        assert (first["method"], second["method"], second["path"]) == ("POST", "POST", "/moved/v1/answer")
        assert second["body"] == first["body"] and json.loads(second["body"])["messages"] == PROMPT[0]
        assert second["headers"].get("Authorization") == "Bearer sk-secret"  # the same origin keeps it
    finally:
        server.close()


# ------------------------------------------------------------------ serve-llm's request bounds
@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> str:
    """A real (randomly initialised, one-layer) GPT-2 causal LM with tiny-bert-mlm's tokenizer, saved as a
    folder: loads in a second, so the server's request handling is tested without a large model."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from retrdistill.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("offline:tiny-bert-mlm"))
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_embd=32, n_layer=1, n_head=2,
                                       bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id))
    path = tmp_path_factory.mktemp("tiny-lm") / "model"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def served(tiny_lm):
    from retrdistill.llm.server import LLMServer

    client = registry.build("llm", "transformers", {"model": tiny_lm, "batch_size": 4, "max_input_tokens": 64})
    server = LLMServer(client, name="tiny", port=0, max_body_bytes=2048, max_prompts=4).start()
    yield server
    server.close()


def _raw(server, head: str, body: bytes = b"") -> tuple[int, dict, dict]:
    """Send ``head`` (request line and headers, without the blank line) and ``body`` as they are, on a socket;
    the status, headers and JSON answer."""
    host, port = server.http.server_address[:2]
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n\r\n" + body)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(response.read())


def _post(path: str, length: str | None) -> str:
    header = "" if length is None else f"\nContent-Length: {length}"
    return f"POST {path} HTTP/1.1\nHost: 127.0.0.1\nContent-Type: application/json{header}"


def test_serve_llm_refuses_a_body_over_its_limit_before_reading_it(served):
    # announces a terabyte, sends a few bytes: answered at once, never waited for
    status, headers, answer = _raw(served, _post("/v1/completions", str(10 ** 12)), b'{"prompt": "hi"}')
    assert status == 413 and "2048 bytes" in answer["error"]["message"] and answer["error"]["code"] == 413
    assert headers.get("connection") == "close"  # the unread body is never parsed as a next request
    big = json.dumps({"model": "tiny", "prompt": "x" * 3000, "max_tokens": 1}).encode()
    status, _, answer = _raw(served, _post("/v1/completions", str(len(big))), big)
    assert status == 413 and "at most 2048 bytes" in answer["error"]["message"]


def test_serve_llm_refuses_a_missing_or_invalid_length(served):
    body = json.dumps({"model": "tiny", "prompt": "hi", "max_tokens": 1}).encode()
    status, _, answer = _raw(served, _post("/v1/completions", None), body)
    assert status == 411 and "Content-Length" in answer["error"]["message"]
    for bad in ("abc", "-5", "1e3"):
        status, headers, answer = _raw(served, _post("/v1/completions", bad), body)
        assert status == 400 and "Content-Length" in answer["error"]["message"], (bad, answer)
        assert headers.get("connection") == "close"


def test_serve_llm_bounds_the_prompts_of_one_request(served):
    def ask(n: int) -> tuple[int, dict]:
        body = json.dumps({"model": "tiny", "prompt": [f"prompt {i}" for i in range(n)], "max_tokens": 2,
                           "temperature": 0}).encode()
        status, _, answer = _raw(served, _post("/v1/completions", str(len(body))), body)
        return status, answer

    status, answer = ask(5)
    assert status == 400 and "5 prompts" in answer["error"]["message"] and "at most 4" in answer["error"]["message"]
    status, answer = ask(4)  # at the limit: generated
    assert status == 200 and len(answer["choices"]) == 4
