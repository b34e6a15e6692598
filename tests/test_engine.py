"""The encoding engine against sentence-transformers itself, on real passages and the real MiniLM weights."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from retrdistill.encoding import engine
from retrdistill.encoding.engine import (
    encode_texts,
    engine_options,
    last_run_stats,
    score_pairs,
)

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device here; the CPU path of the same code is tested")
TOL = 1e-5
LONG = 60  # index of the very long text in ``texts``


def _passages(sample_dir, n: int) -> list[str]:
    lines = (sample_dir / "corpus.jsonl").read_text(encoding="utf-8").rstrip("\n").split("\n")[:3000]
    texts = sorted((json.loads(line)["text"] for line in lines), key=len)
    picks = np.linspace(0, len(texts) - 1, n).round().astype(int)  # shortest to longest, evenly spread
    return [texts[i] for i in picks]


@pytest.fixture(scope="module")
def texts(sample_dir) -> list[str]:
    out = _passages(sample_dir, 60)
    out.append(" ".join(out[-12:]))  # far beyond 256 tokens: truncated
    out.append(out[3])  # duplicate
    out.append("")  # empty text
    out.append("x")
    return out


@pytest.fixture(scope="module")
def st_model(minilm):
    from retrdistill.models import load_sentence_transformer

    model = load_sentence_transformer(minilm, device="cpu")
    assert model.max_seq_length == 256
    return model


@pytest.fixture(scope="module")
def st_reference(st_model, texts) -> np.ndarray:
    return st_model.encode(texts, batch_size=32, convert_to_numpy=True, show_progress_bar=False)


# ------------------------------------------------------------------------------------------------ encoder
def test_encode_equals_sentence_transformers(st_model, texts, st_reference):
    tok = st_model.tokenizer
    assert len(tok(texts[LONG], truncation=False)["input_ids"]) > 256  # the long one really is truncated
    got = encode_texts(st_model, texts)
    assert got.dtype == np.float32 and got.shape == (len(texts), 384)
    assert np.abs(got - st_reference).max() < TOL
    stats = last_run_stats()
    assert stats["distinct"] == len(texts) - 1 and stats["n"] == len(texts)
    assert stats["padded_tokens"] >= stats["real_tokens"]
    np.testing.assert_array_equal(got[3], got[LONG + 1])  # duplicates share one row


def test_encode_normalize_and_order(st_model, texts, st_reference):
    ref = st_reference / np.linalg.norm(st_reference, axis=1, keepdims=True)
    rev = encode_texts(st_model, texts[::-1], normalize=True, batch_size=7)
    assert np.abs(rev[::-1] - ref).max() < TOL
    np.testing.assert_allclose(np.linalg.norm(rev, axis=1), 1.0, atol=1e-5)


def test_encode_small_batches_and_no_dedupe(st_model, texts, st_reference):
    # a small token budget forces many batches; the long text gets a batch of its own
    picks = [0, 3, 20, 40, 59, LONG, LONG + 1, LONG + 2, LONG + 3]
    with engine_options(token_budget=1200, max_rows=2, dedupe=False, group_batches=1):
        got = encode_texts(st_model, [texts[i] for i in picks])
        stats = last_run_stats()
    assert stats["distinct"] == len(picks) and stats["batches"] >= 5
    assert np.abs(got - st_reference[picks]).max() < TOL


def test_encode_empty_single_and_fallback(st_model, texts, st_reference):
    empty = encode_texts(st_model, [])
    assert empty.shape == (0, 384) and empty.dtype == np.float32
    one = encode_texts(st_model, [texts[5]])
    assert one.shape == (1, 384) and np.abs(one[0] - st_reference[5]).max() < TOL
    with engine_options(fast_path=False):  # sentence-transformers' own path, same answer
        slow = encode_texts(st_model, texts[:4], batch_size=2)
    assert np.abs(slow - st_reference[:4]).max() < TOL
    with pytest.raises(ValueError):
        encode_texts(st_model, texts[:2], batch_size=0)


def test_prompted_model_falls_back(minilm, sample_dir):
    from retrdistill.models import load_sentence_transformer

    model = load_sentence_transformer(minilm, device="cpu", prompts={"query": "query: "},
                                      default_prompt_name="query")
    assert engine._plan_encoder(model) is None  # prompts are sentence-transformers' business
    qs = ["what is a thermometer", "who invented the fahrenheit scale"]
    ref = model.encode(qs, show_progress_bar=False)
    assert np.abs(encode_texts(model, qs) - ref).max() < TOL


def test_eager_model_is_switched_to_sdpa(minilm):
    from retrdistill.models import load_sentence_transformer

    model = load_sentence_transformer(minilm, device="cpu", model_kwargs={"attn_implementation": "eager"})
    ref = model.encode(["an eager model", "gets SDPA attention"], show_progress_bar=False)
    got = encode_texts(model, ["an eager model", "gets SDPA attention"])
    assert model[0].model.config._attn_implementation == "sdpa"
    assert np.abs(got - ref).max() < TOL


def test_progress_bar_only_when_asked(st_model, texts, capsys):
    encode_texts(st_model, texts[:3])
    assert capsys.readouterr().err == ""
    encode_texts(st_model, texts[:3], show_progress=True)
    assert "encoding texts" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ cross-encoder
@pytest.fixture(scope="module")
def cross_encoder(tiny_cross_encoder):
    from retrdistill.models import load_cross_encoder

    return load_cross_encoder(tiny_cross_encoder, device="cpu")


def test_score_pairs_equals_predict(cross_encoder, texts):
    queries = ["what is the fahrenheit scale", "causes of military suicide", "cost of concrete flooring"]
    pairs = [(queries[i % 3], texts[(7 * i) % len(texts)]) for i in range(16)]
    pairs.append((queries[0], texts[LONG]))  # long passage: truncated longest-first at max_length 128
    pairs.append(pairs[0])  # duplicate pair
    ref = cross_encoder.predict([list(p) for p in pairs], batch_size=64, show_progress_bar=False)
    got = score_pairs(cross_encoder, pairs)
    assert got.dtype == np.float32 and got.shape == (len(pairs),)
    assert np.abs(got - ref).max() < TOL
    assert got[0] == got[-1]
    assert score_pairs(cross_encoder, []).shape == (0,)
    with engine_options(fast_path=False):
        assert np.abs(score_pairs(cross_encoder, pairs[:3]) - ref[:3]).max() < TOL


# ------------------------------------------------------------------------------------------------ pieces
def _brute_force_cost(lengths, max_rows, budget, overhead):
    n = len(lengths)
    best = None
    for k in range(n):
        for cuts in itertools.combinations(range(1, n), k):
            bounds = [0, *cuts, n]
            cost = 0
            for a, b in itertools.pairwise(bounds):
                rows, padded = b - a, (b - a) * lengths[a]
                if rows > max_rows or (padded > budget and rows > 1):
                    break
                cost += padded + overhead
            else:
                best = cost if best is None else min(best, cost)
    return best


@pytest.mark.parametrize("seed", range(6))
def test_cut_points_optimal_and_within_limits(seed):
    rng = np.random.default_rng(seed)
    lengths = np.sort(rng.integers(1, 60, size=9))[::-1]
    max_rows, budget, overhead = 4, 120, 25
    cuts = engine._cut_points(lengths, max_rows=max_rows, token_budget=budget, overhead=overhead)
    assert cuts[0] == 0 and cuts[-1] == len(lengths) and cuts == sorted(set(cuts))
    cost = 0
    for a, b in itertools.pairwise(cuts):
        assert b - a <= max_rows and ((b - a) * lengths[a] <= budget or b - a == 1)
        cost += (b - a) * lengths[a] + overhead
    assert cost == _brute_force_cost(lengths, max_rows, budget, overhead)


def test_background_errors_reach_the_caller():
    def make():
        yield 1
        raise RuntimeError("tokeniser broke")

    bg = engine._Background(make, depth=2)
    seen = []
    with pytest.raises(RuntimeError, match="tokeniser broke"):
        seen.extend(bg)
    bg.close()
    assert seen == [1]


def test_cpu_device_uses_no_autocast_and_no_pinning(st_model):
    opts = engine.get_engine_options()
    device = engine._model_device(st_model)
    assert device.type == "cpu"
    assert engine._autocast_dtype(st_model, device, opts) is None
    plan = engine._plan_encoder(st_model)
    rows, budget = engine._sizes(st_model, plan, device, 64, opts)
    assert rows >= 64 and budget >= plan.max_length


# ------------------------------------------------------------------------------------------------ CUDA paths
@needs_cuda
def test_cuda_fp32_and_autocast(minilm, texts):
    from retrdistill.models import load_sentence_transformer

    model = load_sentence_transformer(minilm, device="cuda")
    ref = model.encode(texts, convert_to_numpy=True, show_progress_bar=False)
    with engine_options(cuda_autocast=None):
        fp32 = encode_texts(model, texts)
    assert np.abs(fp32 - ref).max() < 1e-4
    half = encode_texts(model, texts, normalize=True)  # bf16 / fp16 autocast, pinned copies
    assert last_run_stats()["autocast"] is not None
    ref_n = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    assert float((half * ref_n).sum(1).min()) > 0.99


# ------------------------------------------------------------------------------------------------ backends
def _backend_available(name: str) -> bool:
    from retrdistill.encoding.backends import available_backends

    return available_backends()[name]


@pytest.mark.parametrize("backend,exact", [("onnx", True), ("openvino", True), ("onnx-int8", False),
                                           ("openvino-bf16", False)])
def test_compiled_backends(backend, exact, tmp_path_factory, texts):
    if not _backend_available(backend):
        pytest.skip(f"{backend} runtime not installed")
    from retrdistill.encoding.backends import load_encoder

    cache = tmp_path_factory.getbasetemp() / "compiled"
    torch.manual_seed(0)  # tiny-bert-mlm's pooler is initialised at load: same seed, same weights, one export
    ref_model = load_encoder("offline:tiny-bert-mlm", "torch", max_seq_length=128)
    ref = ref_model.encode(texts, convert_to_numpy=True, show_progress_bar=False)
    torch.manual_seed(0)
    model = load_encoder("offline:tiny-bert-mlm", backend, max_seq_length=128, cache_dir=cache)
    assert model._retrdistill_backend == backend
    got = encode_texts(model, texts)
    if exact:
        assert np.abs(got - ref).max() < 1e-4
    else:
        cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
        assert float(cos.min()) > 0.98
    # the model's own encode runs on the compiled graph too
    own = model.encode(texts[:5], convert_to_numpy=True, show_progress_bar=False)
    assert own.shape == (5, ref.shape[1])


def test_unknown_backend_and_gpu_backend_rejected():
    from retrdistill.encoding.backends import load_encoder
    from retrdistill.errors import ConfigError

    with pytest.raises(ConfigError):
        load_encoder("offline:tiny-bert-mlm", "tensorrt")
    with pytest.raises(ConfigError):
        load_encoder("offline:tiny-bert-mlm", "onnx", device="cuda")


def test_compiled_reranker_equals_torch(tmp_path_factory):
    if not _backend_available("onnx"):
        pytest.skip("onnx runtime not installed")
    from retrdistill.encoding.backends import load_reranker

    pairs = [("what is a thermometer", "A thermometer measures temperature."),
             ("who invented it", "Daniel Gabriel Fahrenheit invented the mercury thermometer in 1714, " * 8)]
    torch.manual_seed(1)  # same fresh 1-logit head on both
    ref = load_reranker("offline:tiny-bert-mlm", "torch", num_labels=1, max_length=64)
    torch.manual_seed(1)
    fast = load_reranker("offline:tiny-bert-mlm", "onnx", num_labels=1, max_length=64,
                         cache_dir=tmp_path_factory.getbasetemp() / "compiled")
    want = ref.predict([list(p) for p in pairs], show_progress_bar=False)
    assert np.abs(score_pairs(fast, pairs) - want).max() < 1e-5
