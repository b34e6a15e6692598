"""The LLM judge over HTTP: ``retrdistill serve-llm`` (a real server in a child process on loopback, SmolLM2-135M)
returns token log-probabilities in OpenAI's shapes; the ``llm`` teacher with ``llm: openai`` reads the yes/no
log-odds from them, agreeing with the local transformers judge on the same pairs; a server that returns none is
a clear error naming the endpoint; a server killed mid-scoring and restarted lets the score step finish, and a
re-run of the step asks the server nothing."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from retrdistill import registry
from retrdistill.data.beir import load_corpus
from retrdistill.llm.client import LLMError
from test_llm_http import SMOL, Served, _free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    server = Served(_free_port(), tmp_path_factory.mktemp("serve") / "serve.log").launch()
    yield server
    server.kill()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the server: the same arithmetic on both sides
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus(small_collection, tmp_path_factory):
    return load_corpus(small_collection / "corpus.jsonl", tmp_path_factory.mktemp("corpora"))


@pytest.fixture(scope="module")
def pairs(small_collection, corpus):
    queries = [json.loads(line)["text"] for line in (small_collection / "queries.jsonl").read_text().splitlines()]
    return [(q, t) for q in queries[:3] for t in corpus.texts(0, 4)]


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def _http_judge(corpus, tmp_path: Path, url: str, **client):
    return registry.build("teacher", "llm", {
        "model": SMOL, "llm": "openai", "llm_options": {"base_url": url, "model": SMOL, **client}},
        corpus=corpus, cache_dir=tmp_path)


def test_server_returns_token_logprobs_in_openais_shapes(served):
    served.wait_up()
    messages = [{"role": "user", "content": "Is Paris in France? Answer yes or no."}]
    chat = _post(f"{served.url}/chat/completions", {"model": SMOL, "messages": messages, "max_tokens": 3,
                                                    "temperature": 0, "logprobs": True, "top_logprobs": 5})
    content = chat["choices"][0]["logprobs"]["content"]
    assert 1 <= len(content) <= 3
    assert "".join(t["token"] for t in content).strip() == chat["choices"][0]["message"]["content"]
    for token in content:
        tops = [t["logprob"] for t in token["top_logprobs"]]
        assert len(tops) == 5 and tops == sorted(tops, reverse=True) and all(v <= 0 for v in tops)
        assert token["logprob"] == pytest.approx(tops[0], abs=1e-6)  # greedy: the chosen token is the likeliest
        assert bytes(token["bytes"]).decode("utf-8") == token["token"]
    assert sum(np.exp(tops)) <= 1 + 1e-6
    legacy = _post(f"{served.url}/completions", {"model": SMOL, "prompt": "The capital of France is", "max_tokens": 2,
                                                 "temperature": 0, "logprobs": 3})
    logprobs = legacy["choices"][0]["logprobs"]
    assert len(logprobs["tokens"]) == len(logprobs["token_logprobs"]) == len(logprobs["top_logprobs"]) >= 1
    assert logprobs["text_offset"][0] == 0 and all(1 <= len(t) <= 3 for t in logprobs["top_logprobs"])
    assert max(logprobs["top_logprobs"][0].values()) == pytest.approx(logprobs["token_logprobs"][0], abs=1e-6)
    plain = _post(f"{served.url}/chat/completions", {"model": SMOL, "messages": messages, "max_tokens": 1})
    assert plain["choices"][0]["logprobs"] is None
    for body, problem in [({"messages": messages, "top_logprobs": 2}, "needs 'logprobs': true"),
                          ({"messages": messages, "logprobs": True, "top_logprobs": 21}, "top_logprobs must be"),
                          ({"prompt": "hi", "logprobs": True}, "'logprobs' must be an integer")]:
        path = "completions" if "prompt" in body else "chat/completions"
        with pytest.raises(urllib.error.HTTPError) as info:
            _post(f"{served.url}/{path}", {"model": SMOL, **body})
        assert info.value.code == 400 and problem in json.loads(info.value.read())["error"]["message"]


def test_http_judge_agrees_with_the_local_judge(served, corpus, pairs, tmp_path):
    """Same weights (float32 on both sides), same prompts: the log-odds agree up to what the server's top 20
    tokens leave out (the local judge pools every answer word, the HTTP one those among the top 20)."""
    served.wait_up()
    local = registry.build("teacher", "llm", {"model": SMOL, "batch_size": 4}, corpus=corpus, cache_dir=tmp_path)
    http = _http_judge(corpus, tmp_path, served.url)
    expected, got = local.score_pairs(pairs), http.score_pairs(pairs)
    difference = np.abs(expected - got)
    assert difference.mean() <= 0.05 and difference.max() <= 0.3, (expected, got)
    assert np.corrcoef(expected, got)[0, 1] >= 0.9
    assert http.answers_outside_top == 0
    completions = _http_judge(corpus, tmp_path, served.url, api="completions")
    assert completions.remote_messages(pairs[:1])[0][-1]["content"].endswith("\nAnswer:")  # no chat template
    assert np.isfinite(completions.score_pairs(pairs[:2])).all()
    # keyed on the endpoint, the served name and the judge's own options; not on the local-only dtype
    fingerprint = http.fingerprint()
    assert fingerprint["llm"]["endpoint"] == served.url and fingerprint != local.fingerprint()
    assert _http_judge(corpus, tmp_path, served.url, concurrency=1).fingerprint() == fingerprint
    dtype = registry.build("teacher", "llm", {"model": SMOL, "llm": "openai", "dtype": "bfloat16",
                                              "llm_options": {"base_url": served.url, "model": SMOL}},
                           corpus=corpus, cache_dir=tmp_path)
    assert dtype.fingerprint() == fingerprint
    assert _http_judge(corpus, tmp_path, served.url.replace("127.0.0.1", "localhost")).fingerprint() != fingerprint


class _NoLogprobs(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "yes"},
                                        "finish_reason": "stop"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_a_server_without_logprobs_is_an_error_naming_the_endpoint(corpus, pairs, tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NoLogprobs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        with pytest.raises(LLMError, match=rf"{url}/chat/completions: the answer carries no token log-probabilities"):
            _http_judge(corpus, tmp_path, url, retries=0).score_pairs(pairs[:1])
    finally:
        server.shutdown()
        server.server_close()


def test_score_step_over_http_survives_a_killed_server_and_a_rerun_asks_nothing(served, small_collection, tmp_path):
    from retrdistill.kinds import read_candidates
    from retrdistill.stages.mine import MineConfig, run_mine
    from retrdistill.stages.queries import QueriesConfig, run_queries
    from retrdistill.stages.score import ScoreConfig, run_score

    served.wait_up()
    cache = tmp_path / "cache"
    run_queries(QueriesConfig(options={"num_queries": 6, "seed": 3}), small_collection, tmp_path / "q", cache_dir=cache)
    run_mine(MineConfig(miner="bm25", depth=10, negatives=3, rank_max=10), small_collection, tmp_path / "q",
             tmp_path / "c", cache_dir=cache)
    options = {"model": SMOL, "llm": "openai", "max_passage_tokens": 96,
               "llm_options": {"base_url": served.url, "model": SMOL, "concurrency": 1, "retries": 200,
                               "backoff_s": 0.25, "max_backoff_s": 2.0}}
    config = ScoreConfig(teacher="llm", options=options, batch_queries=1)  # each query's pairs committed alone
    result: dict = {}

    def score() -> None:
        try:
            result["first"] = run_score(config, small_collection, tmp_path / "c", tmp_path / "s", cache_dir=cache)
        except Exception as exc:  # reported below
            result["error"] = exc

    worker = threading.Thread(target=score)
    worker.start()
    deadline = time.monotonic() + 300
    while served.health()["requests"] < 6:  # a few pairs in: kill the server mid-run
        assert time.monotonic() < deadline and worker.is_alive(), result
        time.sleep(0.05)
    served.kill()
    time.sleep(1.0)
    assert worker.is_alive()  # retrying, not failed
    served.launch().wait_up()
    worker.join(timeout=300)
    assert not worker.is_alive() and "error" not in result, result
    pairs = sum(len(g.positives) + len(g.negatives) for g in read_candidates(tmp_path / "c"))
    counts = result["first"].manifest.counts
    assert pairs >= 12 and counts["pairs_scored"] == pairs and counts["pairs_from_cache"] == 0
    requests = served.health()["requests"]
    again = run_score(config, small_collection, tmp_path / "c", tmp_path / "s2", cache_dir=cache)
    assert again.manifest.counts["pairs_from_cache"] == pairs and again.manifest.counts["pairs_scored"] == 0
    assert served.health()["requests"] == requests  # the re-run asked the server nothing
    assert (tmp_path / "s" / "scores.jsonl").read_text() == (tmp_path / "s2" / "scores.jsonl").read_text()


def _llama_server() -> str | None:
    import os
    import shutil

    return os.environ.get("RETRDISTILL_LLAMA_SERVER") or shutil.which("llama-server")


@pytest.mark.skipif(_llama_server() is None, reason="no llama-server built here (docs/llm.md shows the build; "
                                                     "RETRDISTILL_LLAMA_SERVER=path or llama-server on PATH)")
def test_llama_server_judges_as_the_local_judge_up_to_its_quantisation(corpus, pairs, tmp_path):
    """llama.cpp's server runs the GGUF as it is (quantised) while the local judge dequantises it: the log-odds
    agree in order, not to the decimal."""
    import subprocess

    from retrdistill.models import gguf_file, resolve_model

    folder = resolve_model(SMOL)
    port = _free_port()
    log = tmp_path / "llama-server.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([_llama_server(), "-m", str(Path(folder) / gguf_file(folder)), "--port", str(port),
                                 "-t", "1", "-np", "2", "-c", "4096", "--no-repack"], stdout=fh,
                                stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()[-2000:]
            try:
                urllib.request.urlopen(f"{url}/models", timeout=5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()[-2000:]
                time.sleep(0.5)
        local = registry.build("teacher", "llm", {"model": SMOL, "batch_size": 4}, corpus=corpus, cache_dir=tmp_path)
        http = _http_judge(corpus, tmp_path, url)
        expected, got = local.score_pairs(pairs), http.score_pairs(pairs)
        assert np.isfinite(got).all() and np.corrcoef(expected, got)[0, 1] >= 0.7, (expected, got)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
