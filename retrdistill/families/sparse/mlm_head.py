"""The masked-LM head of a SPLADE student's backbone: is it in the checkpoint, and if not, can one be tied on?

SPLADE reads term weights off a masked-LM head (hidden state -> vocabulary logits). A checkpoint saved as a bare
encoder (``BertModel``, e.g. all-MiniLM-L6-v2) has no head weights; loading it as ``AutoModelForMaskedLM`` then
initialises the head at random. :func:`check_head` finds out from the checkpoint's files alone (config and
tensor names; no weights loaded), so a config that cannot work fails before anything runs; :func:`tie_head`
then builds the missing head deterministically on the loaded model: the decoder tied to the input embeddings,
every other head weight the identity (square matrices), one (norm scales) or zero (biases), so that a
position's logits start as its final hidden state's inner products with the vocabulary's input embeddings.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from retrdistill.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadCheck:
    """What :func:`check_head` found: ``in_checkpoint`` (the head's weights are saved), the head's top-level
    module names (``cls`` for BERT, ``lm_head`` for RoBERTa) and the architecture that holds it."""

    in_checkpoint: bool
    head_modules: tuple[str, ...]
    architecture: str


def checkpoint_tensor_names(path: Path) -> set[str] | None:
    """The tensor names saved in model folder ``path`` (safetensors, sharded or not, or a torch ``.bin``);
    None where the folder holds no weights this can read."""
    from safetensors import safe_open

    index = path / "model.safetensors.index.json"
    if index.is_file():
        return set(json.loads(index.read_text(encoding="utf-8"))["weight_map"])
    single = path / "model.safetensors"
    if single.is_file():
        with safe_open(str(single), "pt") as fh:
            return set(fh.keys())
    binary = path / "pytorch_model.bin"
    if binary.is_file():
        import torch

        return set(torch.load(binary, map_location="cpu", weights_only=True, mmap=True))
    return None


def check_head(path: str | Path, *, tie: bool) -> HeadCheck:
    """Whether the checkpoint at ``path`` carries a masked-LM head, and that a missing one can be tied.

    ConfigError when transformers has no masked-LM class for the checkpoint's model type (a decoder-only model:
    use ``backbone: causal``), when the head is missing and ``tie`` is off, or when it is missing and its
    decoder cannot share the input embeddings (different shapes, or no decoder at all).
    """
    import torch
    from transformers import AutoConfig, AutoModelForMaskedLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    path = Path(path)
    config = AutoConfig.from_pretrained(str(path))
    if config.model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        raise ConfigError(f"student model {path}: a {config.model_type!r} checkpoint has no masked-LM class in "
                          f"transformers, so no MLM head can be built or tied; for a decoder-only model use "
                          f"backbone: causal")
    with torch.device("meta"):
        skeleton = AutoModelForMaskedLM.from_config(config)
    prefix = skeleton.base_model_prefix
    heads = tuple(sorted({name.split(".")[0] for name, _ in skeleton.named_parameters()
                          if not name.startswith(prefix + ".")}))
    architecture = type(skeleton).__name__
    saved = checkpoint_tensor_names(path)
    in_checkpoint = saved is None or any(name.split(".")[0] in heads for name in saved)
    if in_checkpoint:
        return HeadCheck(True, heads, architecture)
    if not tie:
        raise ConfigError(f"student model {path}: the checkpoint has no MLM head ({architecture} needs "
                          f"{', '.join(heads) or 'one'}); set tie_mlm_head: true to build one tied to the input "
                          f"embeddings, or start from a masked-LM checkpoint")
    decoder, inputs = skeleton.get_output_embeddings(), skeleton.get_input_embeddings()
    if decoder is None or inputs is None or tuple(decoder.weight.shape) != tuple(inputs.weight.shape):
        shape = None if decoder is None else tuple(decoder.weight.shape)
        raise ConfigError(f"student model {path}: the checkpoint has no MLM head and {architecture}'s decoder "
                          f"(shape {shape}) cannot be tied to its input embeddings "
                          f"{tuple(inputs.weight.shape) if inputs is not None else None}")
    return HeadCheck(False, heads, architecture)


def tie_head(hf_model, check: HeadCheck) -> dict[str, object]:
    """Build the head :func:`check_head` found missing on the loaded ``hf_model`` (in place): decoder tied to the
    input embeddings, the rest identity/one/zero. Returns the counts the train manifest records."""
    import torch

    decoder, inputs = hf_model.get_output_embeddings(), hf_model.get_input_embeddings()
    with torch.no_grad():
        for name, param in hf_model.named_parameters():
            if name.split(".")[0] not in check.head_modules or param is decoder.weight:
                continue
            if param.dim() == 2 and param.shape[0] == param.shape[1]:
                param.copy_(torch.eye(param.shape[0], dtype=param.dtype))
            elif param.dim() == 1 and ("norm" in name.lower() and name.endswith("weight")):
                param.fill_(1.0)
            elif param.dim() == 1:
                param.zero_()
            else:
                raise ConfigError(f"cannot initialise MLM head weight {name} of shape {tuple(param.shape)} "
                                  f"deterministically; start from a masked-LM checkpoint")
    decoder.weight = inputs.weight
    hf_model.config.tie_word_embeddings = True
    if getattr(decoder, "bias", None) is not None:
        with torch.no_grad():
            decoder.bias.zero_()
    log.info("student: the checkpoint has no MLM head: built %s's head (%s) tied to the input embeddings, "
             "transform initialised as the identity, bias 0", check.architecture, ", ".join(check.head_modules))
    return {"mlm_head": "tied-to-input-embeddings"}
