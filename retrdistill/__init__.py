"""retrdistill: distil strong, slow retrieval models into fast ones.

Stages (each a library call, a CLI command and an artefact on disk):
queries -> mine -> score -> train -> index -> eval.
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())


def __getattr__(name: str):
    # Lazy: importing retrdistill must not import torch.
    if name == "Retriever":
        from retrdistill.retriever import Retriever

        return Retriever
    raise AttributeError(name)


__all__ = ["Retriever", "__version__"]
