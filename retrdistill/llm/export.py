"""A GGUF checkpoint written out as an ordinary transformers folder (``config.json``, safetensors, tokenizer and
chat template), for servers that take a folder but not a GGUF file — ``transformers serve`` 5.x fails on a GGUF
config, which names no architecture:

    from retrdistill.llm.export import dequantised_folder
    dequantised_folder("offline:smollm2-135m-instruct", "models/smollm2")
    # then: transformers serve models/smollm2 --host 127.0.0.1 --port 8000

The weights are the GGUF's, dequantised (float32 by default), so the folder is larger than the file.
"""

from __future__ import annotations

import logging
from pathlib import Path

from retrdistill.artefacts import atomic_dir
from retrdistill.errors import ConfigError

log = logging.getLogger(__name__)


def dequantised_folder(model_ref: str, out: str | Path, *, dtype: str = "float32") -> Path:
    """Write ``model_ref`` (a GGUF model folder or ``offline:NAME``) to ``out`` once; returns ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from retrdistill.models import gguf_file, resolve_model

    out = Path(out)
    if (out / "config.json").is_file():
        return out
    path = resolve_model(model_ref)
    gguf = gguf_file(path)
    if gguf is None:
        raise ConfigError(f"{model_ref!r} ({path}) is not a GGUF model folder (one .gguf file, no config.json)")
    tokenizer = AutoTokenizer.from_pretrained(path, gguf_file=gguf)
    loaded = AutoModelForCausalLM.from_pretrained(path, gguf_file=gguf, dtype=getattr(torch, dtype))
    config = loaded.config
    if hasattr(config, "quantization_config"):  # the GGUF marker that blocks save_pretrained
        del config.quantization_config
    config.architectures = [type(loaded).__name__]
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.load_state_dict(loaded.state_dict())
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    log.info("llm: %s written as a transformers folder %s", model_ref, out)
    return out
