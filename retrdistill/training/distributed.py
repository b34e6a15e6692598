"""Training across processes (``torchrun``): batch statistics computed over the global batch.

sentence-transformers' ``FlopsLoss`` (the SPLADE regulariser) is ``sum_j (mean_i w_ij)^2`` over the batch it is
given, and under DDP each process is given only its own part of the batch: with N processes of B/N examples
each, the averaged term is ``mean_r sum_j (mean over rank r's B/N)^2``, larger than the one-process
``sum_j (mean over B)^2`` by the between-process variance of the means, and growing with N (smaller batches
penalise each example's own activations more). So the same config trained on 1, 2 or 4 processes would give
students of different sparsity. :func:`flops` sums the embeddings over every process with a differentiable
all-reduce before squaring, so the term is the one-process term of the global batch on every rank, and its
gradient, after DDP averages the ranks' gradients, is the one-process gradient.
"""

from __future__ import annotations


def flops(embeddings):
    """The FLOPS term ``sum_j (mean_i w_ij)^2`` of the global batch (every process's rows); the local batch's
    outside a distributed run."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return torch.sum(torch.mean(embeddings, dim=0) ** 2)
    from torch.distributed.nn.functional import all_reduce

    total = all_reduce(embeddings.sum(dim=0))  # backward all-reduces the gradient: each rank gets its rows' share
    count = torch.tensor([embeddings.shape[0]], dtype=embeddings.dtype, device=embeddings.device)
    dist.all_reduce(count)
    return torch.sum((total / count) ** 2)
