"""The OpenAI-compatible HTTP path end to end on loopback: ``retrdistill serve-llm`` (a real server in a child
process, SmolLM2-135M) answered by the ``openai`` client. It answers both APIs as the local transformers client
does, batches concurrent requests, refuses what it does not serve; and a run whose server is SIGKILLed mid-run
and restarted finishes, each generation written once, and a re-run sends the server no request at all. And
``transformers serve`` (the documented third-party option) answers as the local client does."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from retrdistill import registry
from retrdistill.llm.cache import GenerationCache, generate_cached
from retrdistill.llm.client import GenerationParams, LLMError
from retrdistill.llm.templates import parse_template

pytestmark = pytest.mark.slow
SMOL = "offline:smollm2-135m-instruct"
PARAMS = GenerationParams(max_new_tokens=8, stop=("\n",))
PASSAGES = [
    "The Danube flows through ten countries, more than any other river in the world.",
    "Penicillin was discovered by Alexander Fleming in 1928 at St Mary's Hospital in London.",
    "The honey bee communicates the direction of food with a waggle dance.",
    "Basalt is a dark volcanic rock formed from rapidly cooling lava.",
    "The Treaty of Westphalia in 1648 ended the Thirty Years' War.",
    "Venus rotates on its axis in the opposite direction to most planets.",
]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    # short prompts: this file tests the HTTP path, tests/test_llm_generation.py the bundled templates
    path = tmp_path_factory.mktemp("template") / "short.txt"
    return parse_template("A short query prompt.\n## system\nWrite one search query for the passage.\n"
                          "## user\n{passage}\nQuery:\n", path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def serve_llm_command(port: int) -> list[str]:
    return [sys.executable, "-m", "retrdistill.cli.app", "serve-llm", SMOL, "--port", str(port), "--threads", "1",
            "--batch-size", "4", "--quiet"]


class Served:
    """A server in a child process on a loopback port, serving ``model`` (by default ``retrdistill serve-llm
    SMOL``; one CPU thread: the test's own process generates too, and oversubscribed threads are many times
    slower on a busy machine)."""

    def __init__(self, port: int, log: Path, command=serve_llm_command, model: str = SMOL) -> None:
        self.port, self.log, self.command, self.model = port, log, command, model
        self.proc: subprocess.Popen | None = None

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.root}/v1"

    def launch(self) -> Served:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "OMP_NUM_THREADS": "1"}
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(self.command(self.port), stdout=fh, stderr=subprocess.STDOUT, env=env)
        return self

    def wait_up(self, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"serve-llm exited (rc {self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                if self.model in [m["id"] for m in _get(f"{self.url}/models")["data"]]:
                    return
            except OSError:
                time.sleep(0.25)
        pytest.fail(f"serve-llm did not come up in {timeout:.0f}s:\n{self.log.read_text()[-3000:]}")

    def health(self) -> dict:
        return _get(f"{self.root}/health")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    server = Served(_free_port(), tmp_path_factory.mktemp("serve") / "serve.log").launch()
    yield server  # loading; each test waits for it (the local model loads meanwhile)
    server.kill()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the servers: the same arithmetic, so the same greedy answers
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def local():
    client = registry.build("llm", "transformers", {"model": SMOL, "batch_size": 1})
    client.load()
    return client


def _openai(served: Served, **options):
    return registry.build("llm", "openai", {"base_url": served.url, "model": SMOL, "timeout_s": 300, **options})


def test_served_model_answers_as_the_local_client_does(served, local, template):
    served.wait_up()
    prompts = [template.render(passage=p) for p in PASSAGES[:3]]
    answers = _openai(served, concurrency=1).generate(prompts, PARAMS)
    assert all(a and "\n" not in a for a in answers)
    assert answers == local.generate(prompts, PARAMS)  # greedy decoding of the same weights and chat template
    # /completions: the prompt as plain text, as the local client joins it for a model without a chat template
    plain = _openai(served, api="completions").generate(prompts[:2], PARAMS)
    local.options.chat_template = False
    try:
        assert plain == local.generate(prompts[:2], PARAMS)
    finally:
        local.options.chat_template = None
    assert _openai(served).fingerprint() == {"llm": "openai", "endpoint": served.url, "model": SMOL, "api": "chat",
                                             "extra_body": {}}

    before = served.health()
    together = _openai(served, concurrency=3).generate(prompts, PARAMS)  # arrive together: batched
    after = served.health()
    assert len(together) == 3 and all(together)
    assert after["requests"] - before["requests"] == 3 and after["batches"] - before["batches"] < 3


def test_server_refuses_what_it_does_not_serve(served):
    served.wait_up()
    with pytest.raises(LLMError, match=r"HTTP 404: .*'other' does not exist; this server serves"):
        registry.build("llm", "openai", {"base_url": served.url, "model": "other"}).generate(
            [[{"role": "user", "content": "hi"}]], PARAMS)
    for body, problem in [({"model": SMOL, "messages": [{"role": "user", "content": "hi"}], "stream": True},
                           "'stream' is not supported"),
                          ({"model": SMOL, "messages": [{"role": "robot", "content": "hi"}]}, "'messages'"),
                          ({"model": SMOL, "prompt": "hi", "max_tokens": 10 ** 6}, "max_tokens")]:
        path = "completions" if "prompt" in body else "chat/completions"
        request = urllib.request.Request(f"{served.url}/{path}", data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=10)
        assert info.value.code == 400 and problem in json.loads(info.value.read())["error"]["message"]


def test_server_killed_mid_run_and_restarted_the_run_resumes(served, template, tmp_path):
    served.wait_up()
    cache = GenerationCache(tmp_path / "gen")
    # batches of two (2 x concurrency); retries with back-off outlast the restart
    client = _openai(served, concurrency=1, retries=200, backoff_s=0.25, max_backoff_s=2.0)
    items = [(f"p{i}", {"passage": p}) for i, p in enumerate(PASSAGES)]
    result: dict = {}

    def run() -> None:
        try:
            result["out"] = generate_cached(client, template, items, PARAMS, cache)
        except Exception as exc:  # reported below
            result["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 300
    while not list((tmp_path / "gen").glob("*/*.jsonl")):  # the first batch is written
        assert time.monotonic() < deadline and worker.is_alive(), result
        time.sleep(0.05)
    served.kill()
    rows_at_kill = sum(len(s.read_text().splitlines()) for s in (tmp_path / "gen").glob("*/*.jsonl"))
    time.sleep(1.0)  # the run's next requests are refused and retried
    assert worker.is_alive() and 2 <= rows_at_kill < len(PASSAGES)
    served.launch().wait_up()
    worker.join(timeout=300)
    assert not worker.is_alive() and "error" not in result, result
    out = result["out"]
    assert (out.generated, out.from_cache) == (len(PASSAGES), 0) and all(out.texts.values())
    assert served.health()["requests"] <= len(PASSAGES) - rows_at_kill  # the restarted server: only the rest
    rows = [json.loads(line) for shard in (tmp_path / "gen").glob("*/*.jsonl")
            for line in shard.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == len({r["input"] for r in rows}) == len(PASSAGES)  # each generated and written once

    requests = served.health()["requests"]
    again = generate_cached(_openai(served), template, items, PARAMS, GenerationCache(tmp_path / "gen"))
    assert (again.generated, again.from_cache) == (0, len(PASSAGES)) and again.texts == out.texts
    assert served.health()["requests"] == requests  # nothing asked of the server again


def test_transformers_serve_answers_as_the_local_client_does(template, tmp_path):
    """The documented third-party option: ``transformers serve`` over the GGUF written out as a folder."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from retrdistill.llm.export import dequantised_folder

    folder = str(dequantised_folder(SMOL, tmp_path / "smollm2"))
    server = Served(_free_port(), tmp_path / "serve.log", model=folder, command=lambda port: [
        sys.executable, "-m", "transformers.cli.transformers", "serve", folder, "--host", "127.0.0.1", "--port",
        str(port), "--device", "cpu", "--dtype", "float32"]).launch()
    try:
        local = registry.build("llm", "transformers", {"model": folder, "batch_size": 1})
        prompts = [template.render(passage=p) for p in PASSAGES[:2]]
        want = local.generate(prompts, PARAMS)
        server.wait_up()
        answers = registry.build("llm", "openai", {"base_url": server.url, "model": folder, "concurrency": 2,
                                                   "timeout_s": 300}).generate(prompts, PARAMS)
        assert all(want) and answers == want
    finally:
        server.kill()
