"""Exact (brute-force) inner-product top-k search with bounded memory.

Documents are read one chunk at a time (a ``np.memmap`` is never loaded whole; the next chunk is read in a
background thread while the current one is scored), each chunk is scored against a block of queries with
one torch matmul, and a running top-k per query is merged with the chunk's top-k. Peak memory is about
one document chunk (twice, with the read-ahead) plus one (query block x chunk) score matrix, whatever the
collection size. Results are those of ``faiss.IndexFlatIP``: scores best first, and when ``k`` exceeds the
number of documents the missing places hold index -1 and score -FLT_MAX.

On CUDA the chunks go through pinned memory with non-blocking copies and ``fp16=True`` scores in half
precision (faster, 2x less memory; scores then carry fp16 rounding). On CPU ``fp16`` is ignored.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["MISSING_SCORE", "exact_search"]

MISSING_SCORE = float(-np.finfo(np.float32).max)  # what faiss reports for places beyond the collection

_SCORE_BLOCK_BYTES = {"cpu": 256 << 20, "cuda": 1 << 30}


def _as_2d(name: str, arr: Any) -> Any:
    if getattr(arr, "ndim", None) != 2:
        raise ValueError(f"{name} must be a 2-D array (n, dim), got shape {getattr(arr, 'shape', None)}")
    return arr


def exact_search(
    queries: np.ndarray,
    docs: np.ndarray | np.memmap,
    k: int,
    *,
    chunk_size: int = 65536,
    device: str | None = None,
    fp16: bool = False,
    show_progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` documents by inner product for every query.

    Args:
        queries: (nq, dim) array; converted to float32.
        docs: (nd, dim) array or memmap; read ``chunk_size`` rows at a time.
        k: how many results per query.
        chunk_size: document rows scored per step (memory bound).
        device: torch device; None picks CUDA when available, else CPU.
        fp16: half-precision scoring, CUDA only (ignored on CPU).
        show_progress: a tqdm bar over document chunks.

    Returns:
        (scores float32 (nq, k), indices int64 (nq, k)), best first; equal scores are listed by index. Which
        of several documents tied at the k-th place make the cut is not specified (as with faiss).
    """
    import torch
    from tqdm.auto import tqdm

    _as_2d("queries", queries)
    _as_2d("docs", docs)
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    nq, dim = queries.shape
    nd = docs.shape[0]
    if docs.shape[1] != dim:
        raise ValueError(f"queries have dimension {dim} but docs have {docs.shape[1]}")

    scores_out = np.full((nq, k), MISSING_SCORE, dtype=np.float32)
    index_out = np.full((nq, k), -1, dtype=np.int64)
    if nq == 0 or nd == 0:
        return scores_out, index_out

    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    on_cuda = dev.type == "cuda"
    if fp16 and not on_cuda:
        log.info("exact_search: fp16 applies on CUDA only; scoring in fp32 on %s", dev)
    dtype = torch.float16 if (fp16 and on_cuda) else torch.float32
    keep = min(k, nd)

    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)).to(dev, dtype)
    best_s = torch.full((nq, keep), float("-inf"), dtype=torch.float32, device=dev)
    best_i = torch.full((nq, keep), -1, dtype=torch.int64, device=dev)

    chunk_size = min(chunk_size, nd)
    elem = 2 if dtype == torch.float16 else 4
    block_bytes = _SCORE_BLOCK_BYTES["cuda" if on_cuda else "cpu"]
    q_block = max(1, min(nq, block_bytes // (chunk_size * elem)))
    starts = list(range(0, nd, chunk_size))

    def load(start: int) -> Any:
        part = docs[start : start + chunk_size]
        if isinstance(part, np.memmap) or not part.flags.writeable:
            part = np.array(part, dtype=np.float32, order="C", copy=True)  # really read it, here, off-thread
        else:
            part = np.ascontiguousarray(part, dtype=np.float32)
        t = torch.from_numpy(part)
        return t.pin_memory() if on_cuda else t

    with torch.inference_mode(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="retrdistill-read") as pool:
        ahead = pool.submit(load, starts[0])
        for n, start in enumerate(tqdm(starts, desc="exact search", unit="chunk", disable=not show_progress)):
            host = ahead.result()
            if n + 1 < len(starts):
                ahead = pool.submit(load, starts[n + 1])
            chunk = host.to(dev, dtype, non_blocking=on_cuda)
            rows = chunk.shape[0]
            take = min(keep, rows)
            for qs in range(0, nq, q_block):
                qe = min(nq, qs + q_block)
                scores = q[qs:qe] @ chunk.T
                top_s, top_i = torch.topk(scores, take, dim=1)
                top_i += start
                merged_s = torch.cat((best_s[qs:qe], top_s.float()), dim=1)
                merged_i = torch.cat((best_i[qs:qe], top_i), dim=1)
                # stable: on equal scores the running best (earlier documents) stays ahead of this chunk
                sel_s, sel = torch.sort(merged_s, dim=1, descending=True, stable=True)
                best_s[qs:qe] = sel_s[:, :keep]
                best_i[qs:qe] = torch.gather(merged_i, 1, sel[:, :keep])
            del chunk

    s = best_s.cpu().numpy()
    i = best_i.cpu().numpy()
    # equal scores: lower index first (deterministic, independent of chunking)
    order = np.lexsort((i, -s), axis=1)
    s = np.take_along_axis(s, order, axis=1)
    i = np.take_along_axis(i, order, axis=1)
    scores_out[:, :keep] = s
    index_out[:, :keep] = i
    return scores_out, index_out
