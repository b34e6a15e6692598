"""A decoder-only language model as a SPLADE encoder's input module (Mistral-SPLADE; Echo embeddings).

sentence-transformers' ``Transformer`` loads a causal LM for generation (left padding, the last position's
logits only), not as a term-weight encoder, so this module does it: the LM head's logits at every pooled
position are the token embeddings that ``SpladePooling`` turns into ``max over positions of log(1 + ReLU(logit))``.

With ``echo`` the text is fed twice (``<bos> text text``) and only the second copy's positions are pooled:
in a causal model a position sees only what precedes it, so in the second copy every position has read the
whole text once (Springer et al., 2024, "Repetition improves language model embeddings"). Without echo the
text's own positions are pooled (``<bos> text``; the BOS position, the same for every text, is left out).

Inputs of :meth:`CausalTermLogits.forward`: ``input_ids`` and ``attention_mask`` (right-padded, from
:meth:`CausalTermLogits.preprocess`) and ``pool_mask`` (1 on the positions to pool). Output:
``token_embeddings`` = the LM head's logits ``(batch, positions, vocabulary)``, and ``attention_mask`` replaced
by ``pool_mask``, which is what ``SpladePooling`` reads. A saved model (``model.save``) holds the LM as a
transformers folder plus this module's config; ``SparseEncoder(path, trust_remote_code=True)`` loads it (the
module's class is retrdistill's, outside sentence-transformers).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from sentence_transformers.sparse_encoder.modules import InputModule


class CausalTermLogits(InputModule):
    """The vocabulary logits of a causal LM at each pooled position (see the module docstring)."""

    config_file_name = "causal_term_logits.json"
    config_keys = ["echo", "max_seq_length"]
    save_in_root = True

    def __init__(self, model_name_or_path: str, *, echo: bool = False, max_seq_length: int | None = 256,
                 gguf_file: str | None = None, model_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        extra = {"gguf_file": gguf_file} if gguf_file else {}
        config = AutoConfig.from_pretrained(model_name_or_path, **extra)
        if getattr(config, "is_decoder", None) is False:  # an encoder family's LM-head class (BERT): attend causally
            config.is_decoder = True
        self.model = AutoModelForCausalLM.from_pretrained(model_name_or_path, config=config, **extra,
                                                          **(model_kwargs or {}))
        self.model.config.use_cache = False
        if gguf_file:
            _drop_gguf_marker(self.model)
        self.tokenizer = AutoTokenizer.from_pretrained(model_name_or_path, **extra)
        self.echo = bool(echo)
        self.max_seq_length = max_seq_length

    @property
    def auto_model(self):
        return self.model

    def get_embedding_dimension(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])

    def preprocess(self, inputs, prompt: str | None = None, **kwargs) -> dict[str, torch.Tensor]:
        """Token ids ``<bos> text`` (or ``<bos> text text`` with echo), right-padded, and the pooled positions.

        ``max_seq_length`` bounds the whole sequence: with echo each copy gets half of it (less the BOS)."""
        texts = [(prompt or "") + str(t) for t in inputs]
        bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
        room = None if self.max_seq_length is None else max(1, self.max_seq_length - len(bos))
        if room is not None and self.echo:
            room = max(1, room // 2)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        rows, pools = [], []
        for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]:
            ids = list(ids[:room]) if room is not None else list(ids)
            if self.echo:
                rows.append(bos + ids + ids)
                pools.append([0] * (len(bos) + len(ids)) + [1] * len(ids))
            else:
                rows.append(bos + ids)
                pools.append([0] * len(bos) + [1] * len(ids))
        width = max(len(r) for r in rows)
        input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long)
        attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], dtype=torch.long)
        pool = torch.tensor([p + [0] * (width - len(p)) for p in pools], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention, "pool_mask": pool}

    def forward(self, features: dict[str, torch.Tensor], **kwargs) -> dict[str, torch.Tensor]:
        out = self.model(input_ids=features["input_ids"], attention_mask=features["attention_mask"], use_cache=False)
        features["token_embeddings"] = out.logits
        features["attention_mask"] = features["pool_mask"]
        return features

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        self.model.save_pretrained(output_path, safe_serialization=safe_serialization)
        self.tokenizer.save_pretrained(output_path)
        with open(os.path.join(output_path, self.config_file_name), "w", encoding="utf-8") as fh:
            json.dump(self.get_config_dict(), fh, indent=2)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", **kwargs) -> "CausalTermLogits":
        folder = Path(model_name_or_path) / subfolder
        config = json.loads((folder / cls.config_file_name).read_text(encoding="utf-8"))
        return cls(str(folder), **{k: v for k, v in config.items() if k in cls.config_keys})


def _drop_gguf_marker(model) -> None:
    """transformers unpacks a GGUF checkpoint into ordinary float modules but leaves its GGUF quantizer attached,
    which refuses ``save_pretrained``; once every weight is a plain float tensor the model is an ordinary one."""
    from transformers.modeling_utils import PreTrainedModel

    if getattr(model, "hf_quantizer", None) is None:
        return
    if not all(p.dtype.is_floating_point for p in model.parameters()) or any(
            type(m).__module__.startswith("transformers.integrations.gguf") for m in model.modules()):
        return  # weights still in GGUF blocks: leave it as transformers made it
    model.hf_quantizer = None
    if "is_quantized" in vars(model) or not isinstance(getattr(PreTrainedModel, "is_quantized", None), property):
        model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
