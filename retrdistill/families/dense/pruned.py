"""A compressed dense student, declared rather than hand-built.

Starting from any transformer checkpoint (a sentence-transformers model, or a plain Hugging Face encoder such as
``offline:tiny-bert-mlm``, which gets mean pooling), the student

* keeps chosen transformer layers (``layers``): all of them (``None``), the first *k* (``3`` or ``"first-3"``),
  the last *k* (``"last-3"``), every *n*-th counted down from the top layer (``"every-other"`` = ``"every-2"``:
  layers 1, 3, 5 of 6), or an explicit list of indices (``[0, 2, 5]``; negative indices count from the top);
* pools with the checkpoint's own pooling, or the one named in ``pooling`` (``mean``, ``cls``, ``max``, ...);
* optionally ends in a learned projection to ``output_dim`` (a sentence-transformers ``Dense`` module without
  activation, initialised as a seeded random orthogonal map so that inner products start out nearly preserved);
* normalises its embeddings (``normalize``), so that dot product equals cosine as the losses and the index expect.

Everything that changes the initial weights is in :meth:`PrunedStudent.fingerprint`. :meth:`load` returns a
``SentenceTransformer`` whose saved folder reloads as an ordinary model (the config records the kept layer count).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

from retrdistill.errors import ConfigError
from retrdistill.models import load_sentence_transformer, model_fingerprint
from retrdistill.families.dense.bi_encoder import BiEncoderStudent


log = logging.getLogger(__name__)

LayerSpec = int | str | list[int] | None


def resolve_layers(spec: LayerSpec, total: int) -> list[int]:
    """The layer indices (ascending, 0-based) that ``spec`` keeps out of ``total`` layers."""
    if spec is None or spec == "all":
        return list(range(total))
    if isinstance(spec, bool):
        raise ConfigError(f"layers: expected a count, a rule or a list of indices, got {spec!r}")
    if isinstance(spec, int):
        spec = f"first-{spec}"
    if isinstance(spec, str):
        rule, _, arg = spec.strip().lower().partition("-")
        if rule == "every" and arg == "other":
            arg = "2"
        if rule not in ("first", "last", "every") or not arg.isdigit() or int(arg) < 1:
            raise ConfigError(
                f"layers: unknown rule {spec!r}; expected 'first-K', 'last-K', 'every-other', 'every-N', a count "
                "or a list of layer indices"
            )
        k = int(arg)
        if rule == "every":
            return sorted(range(total - 1, -1, -k))
        if k > total:
            raise ConfigError(f"layers: {spec!r} asks for {k} layers but the checkpoint has {total}")
        return list(range(k)) if rule == "first" else list(range(total - k, total))
    if isinstance(spec, (list, tuple)):
        if not spec or not all(isinstance(i, int) and not isinstance(i, bool) for i in spec):
            raise ConfigError(f"layers: expected a non-empty list of layer indices, got {spec!r}")
        out = []
        for i in spec:
            if not -total <= i < total:
                raise ConfigError(f"layers: index {i} is out of range for a checkpoint with {total} layers")
            out.append(i % total)
        if len(set(out)) != len(out):
            raise ConfigError(f"layers: {spec!r} names a layer twice")
        return sorted(out)
    raise ConfigError(f"layers: expected a count, a rule or a list of indices, got {type(spec).__name__}")


def layer_stack(hf_model) -> tuple[Any, str]:
    """``(parent module, attribute)`` of the encoder's list of transformer blocks (e.g. BERT's ``encoder.layer``).

    Found as the ``nn.ModuleList`` whose length is the config's ``num_hidden_layers``, which covers BERT, RoBERTa,
    MPNet, DistilBERT (``transformer.layer``), ModernBERT (``layers``) and most other encoders.
    """
    from torch import nn

    total = getattr(hf_model.config, "num_hidden_layers", None)
    found = [(name, module) for name, module in hf_model.named_modules()
             if isinstance(module, nn.ModuleList) and total is not None and len(module) == total]
    if not found:
        raise ConfigError(f"cannot find the transformer layers of a {type(hf_model).__name__} to prune")
    name = min((n for n, _ in found), key=lambda n: n.count("."))  # the outermost stack
    parent_name, _, attr = name.rpartition(".")
    return (hf_model.get_submodule(parent_name) if parent_name else hf_model), attr


def keep_layers(hf_model, keep: list[int]) -> None:
    """Drop every transformer block not in ``keep`` (in place); the config then records the new depth."""
    from torch import nn

    parent, attr = layer_stack(hf_model)
    blocks = getattr(parent, attr)
    setattr(parent, attr, nn.ModuleList([blocks[i] for i in keep]))
    hf_model.config.num_hidden_layers = len(keep)
    for new_index, block in enumerate(getattr(parent, attr)):  # attention modules that carry their own index
        for module in block.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index


def projection(in_features: int, out_features: int, seed: int):
    """A bias-free linear ``Dense`` map initialised as a seeded random orthogonal projection."""
    import torch
    from sentence_transformers.sentence_transformer.modules import Dense

    generator = torch.Generator().manual_seed(seed)
    weight = torch.empty(out_features, in_features)
    torch.nn.init.orthogonal_(weight, generator=generator)
    return Dense(in_features, out_features, bias=False, activation_function=None, init_weight=weight)


class PrunedStudent(BiEncoderStudent):
    """A dense student compressed by depth (kept layers), width (projection) or both."""

    @dataclass
    class Options:
        model: str = "offline:all-MiniLM-L6-v2"
        layers: LayerSpec = None  # None/'all', K, 'first-K', 'last-K', 'every-other', 'every-N', [i, j, ...]
        pooling: str | None = None  # None: the checkpoint's own (mean for a plain encoder)
        # learned projection to this width; None keeps the encoder's width
        output_dim: int | None = field(default=None, metadata={"min": 1})
        normalize: bool = True
        max_seq_length: int | None = field(default=256, metadata={"min": 1})
        seed: int = 13  # initial weights of the projection (and of any head the checkpoint lacks)
        config_overrides: dict[str, Any] = field(default_factory=dict)  # Hugging Face config values (see DenseStudent)

        def __post_init__(self) -> None:
            if self.output_dim is not None and self.output_dim < 1:
                raise ValueError("output_dim must be a positive width")
            if self.pooling is not None:
                from sentence_transformers.sentence_transformer.modules import Pooling

                if self.pooling not in Pooling.POOLING_MODES:
                    raise ValueError(f"pooling must be one of {', '.join(Pooling.POOLING_MODES)}, got {self.pooling!r}")
            if self.layers is not None and not isinstance(self.layers, str):
                resolve_layers(self.layers, 10**6)  # shape errors now; ranges when the checkpoint is known

    example_variants: ClassVar[dict[str, Any]] = {"pooling": "cls",
                                                  "config_overrides": {"attention_probs_dropout_prob": 0.0}}

    def fingerprint(self) -> dict:
        o = self.options
        return {"student": "pruned", "model": model_fingerprint(o.model), "layers": o.layers, "pooling": o.pooling,
                "output_dim": o.output_dim, "normalize": o.normalize, "max_seq_length": o.max_seq_length,
                "seed": o.seed, **({"config_overrides": dict(o.config_overrides)} if o.config_overrides else {})}

    def load(self):
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

        import torch

        o = self.options
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(o.seed)  # heads a plain checkpoint lacks (e.g. BERT's unused pooler) start the same
            base = load_sentence_transformer(o.model, **({"config_kwargs": dict(o.config_overrides)}
                                                          if o.config_overrides else {}))
        modules = list(base)
        if not modules or not isinstance(modules[0], Transformer):
            raise ConfigError(f"student {o.model!r}: the first module must be a transformer to prune, got "
                              f"{type(modules[0]).__name__ if modules else 'nothing'}")
        transformer = modules[0]
        total = transformer.auto_model.config.num_hidden_layers
        keep = resolve_layers(o.layers, total)
        if keep != list(range(total)):
            keep_layers(transformer.auto_model, keep)
        rest = [m for m in modules[1:] if not isinstance(m, Normalize)]
        if o.pooling is not None or not any(isinstance(m, Pooling) for m in rest):
            rest = [m for m in rest if not isinstance(m, Pooling)]
            rest.insert(0, Pooling(transformer.get_embedding_dimension(), pooling_mode=o.pooling or "mean"))
        chain = [transformer, *rest]
        model = SentenceTransformer(modules=chain, device=str(base.device))
        if o.output_dim is not None:
            width = model.get_embedding_dimension()
            chain.append(projection(width, o.output_dim, o.seed))
        if o.normalize:
            chain.append(Normalize())
        model = SentenceTransformer(modules=chain, device=str(base.device))
        if o.max_seq_length:
            model.max_seq_length = o.max_seq_length
        log.info("pruned student from %s: layers %s of %d, %d-d output, %d parameters", o.model, keep, total,
                 model.get_embedding_dimension(), sum(p.numel() for p in model.parameters()))
        return model
