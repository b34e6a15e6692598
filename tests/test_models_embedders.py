"""The offline embedding models EmbeddingGemma-300M and nomic-embed-text-v1.5, loaded as sentence-transformers
folders: their prompts are where retrdistill finds them, relevant passages rank above irrelevant ones, and the
nomic conversion agrees with an independent numpy forward pass over the GGUF's own tensors.

nomic-embed-text-v1.5 is materialised here when it is not yet (about 370 MB of wheels, a minute or two);
EmbeddingGemma-300M (1.1 GB of wheels) only in slow runs (``CI=true`` or ``--runslow``), else its tests are
skipped until ``retrdistill models --fetch embeddinggemma-300m`` has run.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from retrdistill.encoding.prompts import prompt_for, prompted
from retrdistill.errors import ConfigError
from retrdistill.models import OFFLINE_MODELS, load_sentence_transformer, materialise, models_dir

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

QUERIES = ["What temperature does water boil at sea level?",
           "Who wrote the play Romeo and Juliet?",
           "How do vaccines train the immune system?"]
RELEVANT = ["At sea level pure water boils at 100 degrees Celsius, or 212 degrees Fahrenheit.",
            "Romeo and Juliet is a tragedy written by William Shakespeare early in his career.",
            "A vaccine shows the immune system a harmless piece of a pathogen, so that it learns to recognise and "
            "fight the real infection later."]
IRRELEVANT = ["The Great Wall of China stretches for thousands of kilometres across northern China.",
              "Photosynthesis lets plants turn light, water and carbon dioxide into sugar.",
              "Antibiotics kill bacteria or stop them from growing, but they do nothing against viruses."]


def offline_model(request, name: str, *, slow: bool) -> Path:
    """The folder of offline model ``name``, materialised now when allowed (a download failure skips, except
    in CI)."""
    if OFFLINE_MODELS[name].ready():
        return models_dir() / name
    if slow and not (IN_CI or request.config.getoption("--runslow")):
        pytest.skip(f"offline:{name} is not materialised (retrdistill models --fetch {name}); slow runs fetch it")
    try:
        return materialise(name)
    except ConfigError as exc:
        if IN_CI or "could not download" not in str(exc):
            raise
        pytest.skip(f"offline:{name} could not be downloaded: {exc}")


def assert_ranks_relevant_first(model) -> None:
    queries = model.encode_query(QUERIES, convert_to_numpy=True)
    passages = model.encode_document(RELEVANT + IRRELEVANT, convert_to_numpy=True)
    scores = queries @ passages.T
    for i, row in enumerate(scores):
        relevant, others = row[i], np.delete(row, i)
        assert relevant > others.max(), (QUERIES[i], row.round(3).tolist())


# ---------------------------------------------------------------- nomic-embed-text-v1.5
@pytest.fixture(scope="module")
def nomic(request):
    offline_model(request, "nomic-embed-text-v1.5", slow=False)
    return load_sentence_transformer("offline:nomic-embed-text-v1.5", device="cpu")


def test_nomic_has_its_prompts_where_retrdistill_finds_them(nomic):
    assert nomic.prompts["query"] == "search_query: " and nomic.prompts["document"] == "search_document: "
    assert prompt_for(nomic, "query") == "search_query: "
    assert prompt_for(nomic, "document") == "search_document: "
    assert nomic.get_embedding_dimension() == 768
    assert type(nomic[0].model).__name__ == "NomicBertModel"


def test_nomic_ranks_relevant_passages_first(nomic):
    assert_ranks_relevant_first(nomic)


def test_retrdistills_engine_encodes_nomic_as_sentence_transformers_does(nomic):
    from retrdistill.encoding.engine import encode_texts

    ours = encode_texts(nomic, prompted(nomic, QUERIES, "query"), batch_size=2, normalize=True)
    theirs = nomic.encode_query(QUERIES, convert_to_numpy=True)
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def _wordpiece(text: str, vocab: dict[str, int]) -> list[int]:
    """BERT's uncased tokenizer for plain ASCII text: lower-case, split into runs of letters/digits and single
    punctuation marks, then greedy longest-match word pieces (``##`` inside a word)."""
    ids = [vocab["[CLS]"]]
    for word in re.findall(r"[a-z0-9]+|[^a-z0-9\s]", text.lower()):
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start and (word[start:end] if start == 0 else "##" + word[start:end]) not in vocab:
                end -= 1
            if end == start:
                pieces = [vocab["[UNK]"]]
                break
            pieces.append(vocab[word[start:end] if start == 0 else "##" + word[start:end]])
            start = end
        ids += pieces
    return ids + [vocab["[SEP]"]]


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def _nomic_reference(reader, ids: list[int]) -> np.ndarray:
    """llama.cpp's nomic-bert graph in float64 numpy, straight from the GGUF's tensors and keys: embeddings + token
    type 0, LayerNorm; per block fused QKV, NeoX rotary (pairs i, i + d/2), softmax(QK^T / sqrt(d)) V, output,
    residual + LayerNorm, SwiGLU (silu(gate) * up, down), residual + LayerNorm; mean over tokens, L2 norm."""
    t = {x.name: np.asarray(x.data, dtype=np.float64) for x in reader.tensors}

    def key(name):
        return reader.fields[f"nomic-bert.{name}"].contents()

    hidden, heads, layers = key("embedding_length"), key("attention.head_count"), key("block_count")
    eps, base = key("attention.layer_norm_epsilon"), key("rope.freq_base")
    d = hidden // heads
    x = t["token_embd.weight"][ids] + t["token_types.weight"][0]
    x = _layer_norm(x, t["token_embd_norm.weight"], t["token_embd_norm.bias"], eps)
    positions = np.arange(len(ids))[:, None]
    angles = positions * base ** (-np.arange(0, d, 2) / d)[None, :]  # (T, d/2)
    cos, sin = np.cos(angles)[None], np.sin(angles)[None]

    def rotate(v):  # (heads, T, d)
        a, b = v[..., :d // 2], v[..., d // 2:]
        return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)

    for n in range(layers):
        p = f"blk.{n}."
        qkv = x @ t[p + "attn_qkv.weight"].T
        q, k, v = (qkv[:, i * hidden:(i + 1) * hidden].reshape(len(ids), heads, d).transpose(1, 0, 2)
                   for i in range(3))
        q, k = rotate(q), rotate(k)
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(d)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        attended = (scores / scores.sum(-1, keepdims=True)) @ v
        attended = attended.transpose(1, 0, 2).reshape(len(ids), hidden) @ t[p + "attn_output.weight"].T
        x = _layer_norm(x + attended, t[p + "attn_output_norm.weight"], t[p + "attn_output_norm.bias"], eps)
        gate = x @ t[p + "ffn_gate.weight"].T
        ffn = ((gate / (1 + np.exp(-gate))) * (x @ t[p + "ffn_up.weight"].T)) @ t[p + "ffn_down.weight"].T
        x = _layer_norm(x + ffn, t[p + "layer_output_norm.weight"], t[p + "layer_output_norm.bias"], eps)
    pooled = x.mean(0)
    return pooled / np.linalg.norm(pooled)


def test_nomic_agrees_with_a_numpy_forward_pass_over_the_gguf(nomic):
    from gguf import GGUFReader

    from retrdistill.nomic_convert import SOURCE

    reader = GGUFReader(str(models_dir() / "nomic-embed-text-v1.5" / SOURCE))
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    # llama.cpp spells a word-initial piece "\u2581x" and a continuation "x"; "[...]" tokens stay as they are
    vocab = {(t if t.startswith("[") and t.endswith("]") else t[1:] if t.startswith("\u2581") else "##" + t): i
             for i, t in enumerate(tokens)}
    texts = [("query", QUERIES[0]), ("document", RELEVANT[1]), ("document", IRRELEVANT[2])]
    for role, text in texts:
        full = nomic.prompts[role] + text
        ids = _wordpiece(full, vocab)
        assert ids == nomic.tokenizer(full)["input_ids"], full  # the converted tokenizer is the GGUF's vocabulary
        expected = _nomic_reference(reader, ids)
        got = nomic.encode([text], prompt_name=role, convert_to_numpy=True)[0].astype(np.float64)
        cosine = float(got @ expected / np.linalg.norm(got))
        assert cosine > 0.999, (role, text, cosine)
        assert np.abs(got - expected).max() < 1e-3


# ---------------------------------------------------------------- EmbeddingGemma-300M
@pytest.fixture(scope="module")
def gemma(request):
    offline_model(request, "embeddinggemma-300m", slow=True)
    return load_sentence_transformer("offline:embeddinggemma-300m", device="cpu")


def test_embeddinggemma_has_its_prompts_where_retrdistill_finds_them(gemma):
    assert prompt_for(gemma, "query") == "task: search result | query: "
    assert prompt_for(gemma, "document") == "title: none | text: "
    assert gemma.get_embedding_dimension() == 768
    assert sum(p.numel() for p in gemma.parameters()) == pytest.approx(307.6e6, rel=0.01)


def test_embeddinggemma_ranks_relevant_passages_first(gemma):
    assert_ranks_relevant_first(gemma)
    assert gemma.similarity_fn_name == "cosine"
