"""LLM parts without a model: template files, generation parameters, query cleaning, generated passages over the
corpus, and the HTTP client's errors against real loopback servers (one that is gone, one answering garbage, one
failing before it answers)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from retrdistill import registry
from retrdistill.errors import ConfigError, DataError
from retrdistill.llm.client import GenerationParams, LLMError, plain_text
from retrdistill.llm.passages import OverlayCorpus, generated_id, read_passages, with_generated, write_passages
from retrdistill.llm.queries import clean_query
from retrdistill.llm.templates import bundled, load_template, parse_template


# ------------------------------------------------------------------ templates
def test_bundled_templates_render_with_their_fields():
    assert set(bundled()) >= {"inpars", "query-types", "negative"}
    inpars = load_template("inpars")
    assert inpars.fields == {"passage"}
    messages = inpars.render(passage="Water boils at 100 C at sea level.")
    assert messages[0]["role"] == "system" and messages[-1]["role"] == "user"
    assert "Water boils at 100 C" in messages[-1]["content"]
    assert sum(m["role"] == "assistant" for m in messages) == 3  # the few-shot examples
    assert load_template("query-types").fields == {"passage", "query_type"}
    with pytest.raises(ConfigError, match=r"no value for \{query\}"):
        load_template("negative").render(passage="x")


def test_template_digest_ignores_the_description_not_the_messages(tmp_path):
    base = "## system\nBe brief.\n## user\nPassage: {passage}\nQuery:\n"
    a = parse_template("A description.\n" + base, tmp_path / "a.txt")
    b = parse_template("Another description entirely.\n\n" + base, tmp_path / "b.txt")
    c = parse_template(base.replace("Be brief.", "Be very brief."), tmp_path / "c.txt")
    assert a.digest == b.digest != c.digest
    assert a.render(passage="{not a field}")[-1]["content"] == "Passage: {not a field}\nQuery:"


@pytest.mark.parametrize("text, line, problem", [
    ("no sections at all", None, "expected at least one section"),
    ("## system\nx\n## user\n\n", 3, "is empty"),
    ("## user\nPassage: {passage\n", 1, "bad placeholder"),
    ("## user\nq\n## assistant\na\n", 3, "last section must be '## user'"),
])
def test_bad_template_files_name_the_line(tmp_path, text, line, problem):
    path = tmp_path / "bad.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=problem) as info:
        load_template(str(path))
    assert info.value.line == line and info.value.path == str(path)


def test_unknown_template_lists_the_bundled_ones():
    with pytest.raises(ConfigError, match="inpars"):
        load_template("no-such-template")


def test_plain_text_joins_few_shot_turns_for_base_models():
    text = plain_text(load_template("inpars").render(passage="P."))
    assert text.endswith("Passage: P.\nQuery:")
    assert "Query: how many kakapo are left in the world" in text


# ------------------------------------------------------------------ parameters and cleaning
def test_generation_params_key_and_validation():
    greedy = GenerationParams(temperature=0.0, seed=1)
    assert greedy.key() == GenerationParams(temperature=0.0, seed=2, top_p=0.5).key()  # unused under greedy
    assert GenerationParams(temperature=0.7, seed=1).key() != GenerationParams(temperature=0.7, seed=2).key()
    with pytest.raises(ConfigError):
        GenerationParams(max_new_tokens=0)
    with pytest.raises(ConfigError):
        GenerationParams(top_p=0.0)


@pytest.mark.parametrize("raw, want", [
    ("how tall is the eiffel tower\nmore text", "how tall is the eiffel tower"),
    ('Query: "what is photosynthesis"', "what is photosynthesis"),
    ("  \n1. Search query - best sourdough starter", "best sourdough starter"),
    ("**kakapo population**", "kakapo population"),
])
def test_clean_query(raw, want):
    assert clean_query(raw) == want


def test_llm_options_are_checked_where_they_are_given():
    with pytest.raises(ConfigError, match="queries_per_passage > 1 needs temperature"):
        registry.build("query_generator", "llm", {"queries_per_passage": 2}, cache_dir="/tmp")
    with pytest.raises(ConfigError, match="unknown llm 'nope'"):
        registry.build("query_generator", "llm", {"llm": "nope"}, cache_dir="/tmp")
    with pytest.raises(ConfigError, match="'model'.*is required"):
        registry.build("llm", "openai", {"base_url": "http://127.0.0.1:9/v1"})


# ------------------------------------------------------------------ generated passages
@pytest.fixture(scope="module")
def corpus(small_collection, small_cache):
    from retrdistill.data.beir import open_collection

    return open_collection(small_collection, small_cache / "corpora").corpus


def test_overlay_finds_generated_passages_but_the_corpus_stays_the_corpus(corpus, tmp_path):
    texts = ["A written passage about tides that answers nothing.", "Another written passage on tides."]
    write_passages(tmp_path / "passages.jsonl", {generated_id(t): t for t in texts})
    overlay = with_generated(corpus, tmp_path)
    assert isinstance(overlay, OverlayCorpus)
    # what reads the whole corpus sees the corpus alone: its length, fingerprint, batches and ids
    assert len(overlay) == len(corpus) and overlay.fingerprint == corpus.fingerprint
    assert sum(len(ids) for _, ids, _ in overlay.iter_batches(100)) == len(corpus)
    assert not any(d.startswith("gen-") for d in overlay.id_list())
    # what looks passages up by id finds both kinds
    first = corpus.id_list()[3]
    ids = [generated_id(texts[1]), first, generated_id(texts[0])]
    rows = overlay.row_index().rows_of(ids)
    assert rows.tolist() == [len(corpus) + 1, 3, len(corpus)]
    assert overlay.texts_at(rows) == [texts[1], corpus.texts_at([3])[0], texts[0]]
    assert overlay.ids_at(rows) == ids
    assert with_generated(corpus, tmp_path / "nothing-here") is corpus


def test_generated_passage_files_are_checked(corpus, tmp_path):
    path = tmp_path / "passages.jsonl"
    path.write_text(json.dumps({"_id": "gen-123", "text": "some text"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 1.*not 'gen-' \\+ the sha256"):
        read_passages(path)
    path.write_text("{not json\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 1"):
        read_passages(path)
    with pytest.raises(DataError, match="is a corpus id"):
        OverlayCorpus(corpus, {corpus.id_list()[0]: "x"})


# ------------------------------------------------------------------ the HTTP client's errors
class _Server:
    """A real HTTP server on loopback whose handler answers as ``answer(n)`` says for the n-th request."""

    def __init__(self, answer) -> None:
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                status, payload = answer(len(outer.requests))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _completion(text: str) -> bytes:
    return json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}).encode()


def _client(url: str, **options):
    return registry.build("llm", "openai", {"base_url": url, "model": "m", "backoff_s": 0.05, **options})


PROMPT = [[{"role": "user", "content": "hello"}]]


def test_endpoint_down_is_a_clear_error_after_retries():
    server = _Server(lambda n: (200, _completion("x")))
    url = server.url
    server.close()  # nothing listens on that port any more
    started = time.monotonic()
    with pytest.raises(LLMError, match=rf"{url}/chat/completions: no answer after 3 attempts.*is the server running"):
        _client(url, retries=2).generate(PROMPT, GenerationParams())
    assert time.monotonic() - started < 10


def test_malformed_json_and_wrong_shape_name_the_endpoint():
    server = _Server(lambda n: (200, b"<html>not json</html>" if n == 1 else b'{"choices": []}'))
    try:
        with pytest.raises(LLMError, match=rf"{server.url}/chat/completions: answered malformed JSON"):
            _client(server.url).generate(PROMPT, GenerationParams())
        with pytest.raises(LLMError, match="is not an OpenAI chat completion"):
            _client(server.url).generate(PROMPT, GenerationParams())
    finally:
        server.close()


def test_server_errors_are_retried_then_answered_and_4xx_is_not():
    server = _Server(lambda n: (503, b'{"error": "busy"}') if n <= 2 else (200, _completion("ok\nsecond line")))
    try:
        out = _client(server.url, retries=3).generate(PROMPT, GenerationParams(temperature=0.5, seed=7, stop=("\n",)))
        assert out == ["ok"]
        sent = server.requests[-1]
        assert len(server.requests) == 3 and sent["seed"] == 7 and sent["stop"] == ["\n"] and sent["model"] == "m"
    finally:
        server.close()
    refusing = _Server(lambda n: (400, b'{"detail": "unknown model"}'))
    try:
        with pytest.raises(LLMError, match="refused the request with HTTP 400: .*unknown model"):
            _client(refusing.url, retries=3).generate(PROMPT, GenerationParams())
        assert len(refusing.requests) == 1
    finally:
        refusing.close()


def test_requests_run_concurrently_and_keep_their_order():
    def answer(n):
        time.sleep(0.5)
        return 200, _completion("done")

    server = _Server(answer)
    try:
        prompts = [[{"role": "user", "content": f"p{i}"}] for i in range(8)]
        started = time.monotonic()
        out = _client(server.url, concurrency=8).generate(prompts, GenerationParams())
        assert out == ["done"] * 8 and time.monotonic() - started < 0.5 * 8 / 2  # one at a time: 4 s
        assert sorted(r["messages"][0]["content"] for r in server.requests) == [f"p{i}" for i in range(8)]
    finally:
        server.close()


def test_serve_llm_on_a_taken_port_fails_at_once_naming_it():
    import socket

    from retrdistill.llm.server import serve

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(ConfigError, match=rf"cannot listen on 127.0.0.1:{port}"):
            serve("offline:smollm2-135m-instruct", port=port)  # before the model would load
        assert time.monotonic() - started < 10
    with pytest.raises(ConfigError, match="threads must be at least 1"):
        serve("offline:smollm2-135m-instruct", port=port, threads=0)
