"""Encoding and pair scoring. Every stage (mine, score, index, eval) goes through these two functions.

How a call runs (sentence-transformers models whose first module is a plain text ``Transformer``):

1. Duplicate inputs are encoded once and scattered back.
2. Inputs are ordered longest first by character count (free, a proxy) and cut into groups of a few batches.
3. A background thread tokenises one group ahead with the fast tokenizer's batch mode (the Rust side runs
   without the GIL), sorts the group by exact token count, cuts it into batches under a row cap and a token
   budget, pads each batch to its own longest row and, on CUDA, pins the host tensors.
4. The main thread copies a batch to the device (``non_blocking`` on CUDA), runs the model's own module chain
   (``model(features)``: HF transformer -> Pooling -> Normalize, or the cross-encoder's classifier), under
   bf16/fp16 autocast on CUDA only, and writes the rows back at their input positions.

The model code is sentence-transformers' own, so in fp32 the outputs equal ``SentenceTransformer.encode`` /
``CrossEncoder.predict`` up to float rounding (1e-6 scale); the speed comes from less padding, batches sized
to the device and tokenisation overlapped with the forward passes. Anything the fast path does not cover
(a prompt, a chat template, multimodal input, flattened flash-attention inputs, ...) is handed to
sentence-transformers' own ``encode`` / ``predict`` unchanged.

Knobs live in :class:`EngineOptions` (:func:`set_engine_options`, or the :func:`engine_options` context
manager), so the two public functions keep their signatures.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "EngineOptions",
    "encode_texts",
    "engine_options",
    "get_engine_options",
    "last_run_stats",
    "score_pairs",
    "set_engine_options",
]


# ------------------------------------------------------------------------------------------------ options
@dataclasses.dataclass(frozen=True)
class EngineOptions:
    """Settings of the engine; the defaults suit CPU and CUDA alike.

    fast_path: False sends every call to sentence-transformers' own ``encode`` / ``predict``.
    dedupe: encode each distinct input once.
    token_budget: most padded tokens (rows x padded length) in one forward pass; None picks one per device
        (CPU: 12,288, where GEMM efficiency plateaus; CUDA: from free memory).
    max_rows: most rows in one forward pass; None: ``max(batch_size, 1024)`` on CPU, ``max(batch_size, 4096)``
        on CUDA (short texts such as queries get big batches).
    group_batches: how many batches' worth of inputs the background thread tokenises in one go.
    prefetch: ready batches kept queued ahead of the forward pass.
    cuda_autocast: "bf16", "fp16" or None (fp32); applied only on CUDA to an fp32 model.
    prefer_sdpa: switch a model loaded with eager attention to torch SDPA where transformers supports it.
    batch_overhead_tokens: what one extra forward pass costs, in padded tokens; batches are cut to minimise
        padded tokens + this per batch. None: 768 on CPU (small-GEMM inefficiency, measured), 4096 on CUDA.
    """

    fast_path: bool = True
    dedupe: bool = True
    token_budget: int | None = None
    max_rows: int | None = None
    group_batches: int = 8
    prefetch: int = 4
    cuda_autocast: str | None = "bf16"
    prefer_sdpa: bool = True
    batch_overhead_tokens: int | None = None


_options = EngineOptions()
_options_lock = threading.Lock()
_last_stats: dict[str, Any] = {}


def get_engine_options() -> EngineOptions:
    return _options


def set_engine_options(**changes: Any) -> EngineOptions:
    """Change the engine's settings for the rest of the process; returns the previous ones."""
    global _options
    with _options_lock:
        previous = _options
        _options = dataclasses.replace(_options, **changes)
    return previous


@contextlib.contextmanager
def engine_options(**changes: Any) -> Iterator[EngineOptions]:
    """Temporarily change the engine's settings (process-wide, not per thread)."""
    global _options
    previous = set_engine_options(**changes)
    try:
        yield _options
    finally:
        with _options_lock:
            _options = previous


def last_run_stats() -> dict[str, Any]:
    """What the last fast-path call did: counts, padding, batches, seconds (for benchmarks and logs)."""
    return dict(_last_stats)


# ------------------------------------------------------------------------------------------------ public API
def encode_texts(
    model: Any,
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    normalize: bool = False,
    show_progress: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Embed ``texts`` with a SentenceTransformer; float32 array of shape (len(texts), dim), input order.

    ``on_progress(n)`` is called after each encoded batch with the number of ``texts`` it finished (repeats
    of a deduplicated text included), so the calls add up to ``len(texts)``: ``on_progress=bar.update``.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n = len(texts)
    if n == 0:
        return np.zeros((0, _embedding_dim(model)), dtype=np.float32)
    opts = _options
    plan = _plan_encoder(model) if opts.fast_path else None
    if plan is None:
        return _st_encode(model, texts, batch_size=batch_size, normalize=normalize, show_progress=show_progress,
                          on_progress=on_progress)
    truncate_dim = getattr(model, "truncate_dim", None)

    def finish(features: dict[str, Any]) -> Any:
        emb = features["sentence_embedding"]
        if truncate_dim is not None:
            emb = emb[..., :truncate_dim]
        if normalize:
            import torch

            emb = torch.nn.functional.normalize(emb, p=2, dim=1)
        return emb

    prepared = _prepare(texts, pairs=False, dedupe=opts.dedupe)
    if prepared is None:
        log.debug("encoding engine: non-text input, using sentence-transformers' own path")
        return _st_encode(model, texts, batch_size=batch_size, normalize=normalize, show_progress=show_progress,
                          on_progress=on_progress)
    return _run(model, plan, texts, prepared, finish, batch_size=batch_size, show_progress=show_progress,
                opts=opts, what="texts", on_progress=on_progress)


def score_pairs(
    model: Any,
    pairs: Sequence[tuple[str, str]],
    *,
    batch_size: int = 64,
    show_progress: bool = False,
) -> np.ndarray:
    """Score (query, passage) pairs with a sentence-transformers CrossEncoder; float32 array, input order.

    The score is what ``CrossEncoder.predict`` returns (the model's activation applied); for a model with
    several labels, the first label's column.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n = len(pairs)
    if n == 0:
        return np.zeros((0,), dtype=np.float32)
    opts = _options
    plan = _plan_cross_encoder(model) if opts.fast_path else None
    if plan is None:
        return _st_predict(model, pairs, batch_size=batch_size, show_progress=show_progress)
    activation = getattr(model, "activation_fn", None)

    def finish(features: dict[str, Any]) -> Any:
        scores = features["scores"]
        if scores.is_floating_point() and scores.dtype.itemsize < 4:
            scores = scores.float()
        if activation is not None:
            scores = activation(scores)
        return scores.reshape(scores.shape[0], -1)[:, 0]

    prepared = _prepare(pairs, pairs=True, dedupe=opts.dedupe)
    if prepared is None:
        log.debug("encoding engine: non-text pair, using sentence-transformers' own path")
        return _st_predict(model, pairs, batch_size=batch_size, show_progress=show_progress)
    return _run(model, plan, pairs, prepared, finish, batch_size=batch_size, show_progress=show_progress,
                opts=opts, what="pairs")


# ------------------------------------------------------------------------------------------------ fallbacks
def _embedding_dim(model: Any) -> int:
    for name in ("get_embedding_dimension", "get_sentence_embedding_dimension"):
        fn = getattr(model, name, None)
        if fn is not None:
            with contextlib.suppress(Exception):
                dim = fn()
                if dim is not None:
                    return int(dim)
    return 0


def _st_encode(model: Any, texts: Sequence[str], *, batch_size: int, normalize: bool, show_progress: bool,
               on_progress: Callable[[int], None] | None = None) -> np.ndarray:
    """sentence-transformers' own ``encode``; with ``on_progress``, in chunks of a few batches, reported per chunk."""
    step = len(texts) if on_progress is None else batch_size * _FALLBACK_CHUNK_BATCHES
    parts = []
    for start in range(0, len(texts), step):
        chunk = list(texts[start:start + step])
        emb = model.encode(chunk, batch_size=batch_size, normalize_embeddings=normalize, convert_to_numpy=True,
                           show_progress_bar=show_progress)
        parts.append(np.asarray(emb, dtype=np.float32).reshape(len(chunk), -1))
        if on_progress is not None:
            on_progress(len(chunk))
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def _st_predict(model: Any, pairs: Sequence[tuple[str, str]], *, batch_size: int, show_progress: bool) -> np.ndarray:
    scores = model.predict(
        [list(p) for p in pairs], batch_size=batch_size, convert_to_numpy=True, show_progress_bar=show_progress
    )
    return np.asarray(scores, dtype=np.float32).reshape(len(pairs), -1)[:, 0]


# ------------------------------------------------------------------------------------------------ planning
@dataclasses.dataclass
class _Plan:
    """What the fast path needs to know about a model, read once per call."""

    tokenizer: Any
    tok_kwargs: dict[str, Any]
    input_names: tuple[str, ...]
    pad_values: dict[str, int]
    left_padding: bool
    max_length: int
    pairs: bool


_SAFE_TEXT_KWARGS = {"max_length", "truncation", "padding", "add_special_tokens", "stride", "pad_to_multiple_of"}


def _plan_common(model: Any, *, task: str, pairs: bool) -> _Plan | None:
    try:
        from sentence_transformers.base.modules import Transformer
    except ImportError:  # older sentence-transformers
        return None
    try:
        first = model[0]
    except Exception:  # noqa: BLE001 - not a module sequence
        return None
    why = None
    if not isinstance(first, Transformer):
        why = f"first module is {type(first).__name__}"
    elif getattr(first, "transformer_task", None) != task:
        why = f"transformer task {getattr(first, 'transformer_task', None)!r}"
    elif "text" not in getattr(first, "modality_config", {}) or "message" in first.modality_config:
        why = "not a plain text model"
    elif getattr(first, "can_flatten_inputs", False):
        why = "flattened flash-attention inputs (sentence-transformers' own path is unpadded already)"
    elif getattr(first, "query_expansion", None):
        why = "query expansion"
    elif getattr(model, "default_prompt_name", None) or _resolved_prompt(model):
        why = "a default prompt"
    elif getattr(model, "_placement_is_delegated", False):
        why = "device map / accelerate placement"
    tok = getattr(first, "tokenizer", None)
    if why is None and (tok is None or not getattr(tok, "is_fast", False)):
        why = "no fast tokenizer"
    proc = dict(getattr(first, "processing_kwargs", None) or {})
    text_kwargs = dict(proc.pop("text", None) or {})
    if why is None:
        if set(text_kwargs) - _SAFE_TEXT_KWARGS or text_kwargs.get("padding") not in (None, True, "longest"):
            why = f"processing kwargs {sorted(text_kwargs)}"
        elif any(v for k, v in proc.items() if k not in ("image", "audio", "video")):
            why = f"processing kwargs {sorted(proc)}"
    if why is None and tok.pad_token_id is None:
        why = "tokenizer has no pad token"
    if why is not None:
        log.debug("encoding engine: using sentence-transformers' own path (%s)", why)
        return None

    kwargs: dict[str, Any] = {"truncation": "longest_first", **text_kwargs}
    kwargs.pop("padding", None)
    kwargs.pop("pad_to_multiple_of", None)
    kwargs.update(padding=False, return_attention_mask=False)
    names = tuple(n for n in tok.model_input_names if n in ("input_ids", "token_type_ids", "attention_mask"))
    if "input_ids" not in names:
        return None
    if "attention_mask" not in names:
        names = (*names, "attention_mask")
    if "token_type_ids" not in names:
        kwargs["return_token_type_ids"] = False
    max_length = kwargs.get("max_length") or getattr(tok, "model_max_length", None) or 512
    pad_values = {
        "input_ids": int(tok.pad_token_id),
        "token_type_ids": int(getattr(tok, "pad_token_type_id", 0) or 0),
        "attention_mask": 0,
    }
    _maybe_sdpa(first)
    return _Plan(
        tokenizer=tok,
        tok_kwargs=kwargs,
        input_names=names,
        pad_values=pad_values,
        left_padding=getattr(tok, "padding_side", "right") == "left",
        max_length=int(min(max_length, 1 << 20)),
        pairs=pairs,
    )


def _resolved_prompt(model: Any) -> str | None:
    resolve = getattr(model, "_resolve_prompt", None)
    if resolve is None:
        return None
    try:
        return resolve(None, None) or None
    except Exception:  # noqa: BLE001 - be conservative: unknown prompt machinery -> fallback
        return "?"


def _plan_encoder(model: Any) -> _Plan | None:
    if not hasattr(model, "encode"):
        return None
    return _plan_common(model, task="feature-extraction", pairs=False)


def _plan_cross_encoder(model: Any) -> _Plan | None:
    if not hasattr(model, "predict"):
        return None
    return _plan_common(model, task="sequence-classification", pairs=True)


def _maybe_sdpa(first: Any) -> None:
    """Use torch SDPA attention when the model was loaded with eager attention and supports SDPA."""
    if not _options.prefer_sdpa:
        return
    hf = getattr(first, "model", None)
    config = getattr(hf, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "eager":
        return
    if getattr(config, "output_attentions", False):
        return
    setter = getattr(hf, "set_attn_implementation", None)
    if setter is None or not getattr(hf, "_supports_sdpa", False):
        return
    try:
        setter("sdpa")
        log.info("encoding engine: switched %s from eager to SDPA attention", type(hf).__name__)
    except Exception as exc:  # noqa: BLE001 - keep eager if transformers refuses
        log.debug("encoding engine: SDPA not available for %s: %s", type(hf).__name__, exc)


# ------------------------------------------------------------------------------------------------ batching
@dataclasses.dataclass
class _Batch:
    positions: np.ndarray  # rows' positions in the list of distinct inputs
    features: dict[str, Any]  # torch tensors on the host (pinned on CUDA)
    real_tokens: int
    padded_tokens: int


def _prepare(items: Sequence[Any], *, pairs: bool, dedupe: bool) -> tuple[list[Any], np.ndarray | None] | None:
    """Distinct inputs and, when some repeat, each input's position among them; None for a non-text input.

    With ``dedupe`` off every input counts as distinct.
    """
    seen: dict[Any, int] = {}
    inverse = np.empty(len(items), dtype=np.int64)
    distinct: list[Any] = []
    for i, item in enumerate(items):
        if pairs:
            if isinstance(item, str) or len(item) != 2 or not (isinstance(item[0], str) and isinstance(item[1], str)):
                return None
            key: Any = (item[0], item[1])
        else:
            if not isinstance(item, str):
                return None
            key = item
        j = seen.get(key) if dedupe else None
        if j is None:
            j = len(distinct)
            distinct.append(key)
            if dedupe:
                seen[key] = j
        inverse[i] = j
    if len(distinct) == len(items):
        return distinct, None
    return distinct, inverse


def _char_length(item: Any) -> int:
    return len(item) if isinstance(item, str) else len(item[0]) + len(item[1])


def _pad(rows: list[list[int]], lengths: np.ndarray, width: int, value: int, mask: np.ndarray) -> np.ndarray:
    out = np.full((len(rows), width), value, dtype=np.int64)
    out[mask] = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum()))
    return out


def _cut_points(lengths: np.ndarray, *, max_rows: int, token_budget: int, overhead: int) -> list[int]:
    """Batch boundaries over ``lengths`` (sorted longest first) minimising padded tokens + ``overhead`` per batch.

    A batch [i, j) costs (j - i) * lengths[i] (every row padded to its first, longest, row) plus ``overhead``
    token-equivalents for the pass itself; rows <= ``max_rows`` and padded tokens <= ``token_budget`` (a row
    longer than the budget still gets a batch of its own). Exact dynamic programme, O(n * max_rows).
    """
    m = len(lengths)
    widths = np.maximum(lengths.astype(np.int64), 1)
    best = np.zeros(m + 1, dtype=np.float64)
    back = np.zeros(m + 1, dtype=np.int64)
    for j in range(1, m + 1):
        lo = max(0, j - max_rows)
        starts = np.arange(lo, j)
        rows = j - starts
        padded = rows * widths[lo:j]
        ok = padded <= token_budget
        ok[-1] = True  # a single row always fits
        cost = np.where(ok, best[lo:j] + padded + overhead, np.inf)
        k = int(np.argmin(cost))
        best[j] = cost[k]
        back[j] = lo + k
    cuts = [m]
    while cuts[-1] > 0:
        cuts.append(int(back[cuts[-1]]))
    return cuts[::-1]


def _group_batches(
    plan: _Plan,
    items: list[Any],
    order: np.ndarray,
    *,
    group_size: int,
    max_rows: int,
    token_budget: int,
    overhead: int,
    pin: bool,
) -> Iterator[_Batch]:
    """Tokenise ``items`` group by group (in ``order``), yield length-bucketed padded batches."""
    import torch

    tok = plan.tokenizer
    # small first groups, so the first forward pass does not wait for a whole group's tokenisation
    bounds, start, size = [], 0, max(1, group_size // 8)
    while start < len(order):
        bounds.append((start, min(len(order), start + size)))
        start += size
        size = min(group_size, size * 2)
    for start, stop in bounds:
        idx = order[start:stop]
        group = [items[i] for i in idx]
        if plan.pairs:
            enc = tok([p[0] for p in group], [p[1] for p in group], **plan.tok_kwargs)
        else:
            enc = tok(group, **plan.tok_kwargs)
        ids = enc["input_ids"]
        type_ids = enc.get("token_type_ids") if "token_type_ids" in plan.input_names else None
        lengths = np.fromiter((len(r) for r in ids), dtype=np.int64, count=len(ids))
        by_len = np.argsort(-lengths, kind="stable")
        cuts = _cut_points(lengths[by_len], max_rows=max_rows, token_budget=token_budget, overhead=overhead)
        for a, b in itertools.pairwise(cuts):
            sel = by_len[a:b]
            width = max(int(lengths[sel[0]]), 1)
            sel_len = lengths[sel]
            cols = np.arange(width)
            if plan.left_padding:
                mask = cols[None, :] >= (width - sel_len)[:, None]
            else:
                mask = cols[None, :] < sel_len[:, None]
            feats: dict[str, Any] = {
                "input_ids": _pad([ids[j] for j in sel], sel_len, width, plan.pad_values["input_ids"], mask)
            }
            if type_ids is not None:
                feats["token_type_ids"] = _pad(
                    [type_ids[j] for j in sel], sel_len, width, plan.pad_values["token_type_ids"], mask
                )
            feats["attention_mask"] = mask.astype(np.int64)
            tensors = {k: torch.from_numpy(v) for k, v in feats.items()}
            if pin:
                tensors = {k: v.pin_memory() for k, v in tensors.items()}
            yield _Batch(
                positions=idx[sel],
                features=tensors,
                real_tokens=int(sel_len.sum()),
                padded_tokens=int(width * len(sel)),
            )


class _Background:
    """Run a generator in a daemon thread, ``depth`` items ahead; errors surface in the consumer."""

    _END = object()

    def __init__(self, make: Callable[[], Iterator[Any]], depth: int) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(make,), name="retrdistill-tokenise", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, make: Callable[[], Iterator[Any]]) -> None:
        try:
            for item in make():
                if not self._put(item):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._put(_Failure(exc))
            return
        self._put(self._END)

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        self._thread.join(timeout=5)


@dataclasses.dataclass
class _Failure:
    exc: BaseException


class _Inline:
    """Same interface as :class:`_Background`, no thread."""

    def __init__(self, make: Callable[[], Iterator[Any]]) -> None:
        self._make = make

    def __iter__(self) -> Iterator[Any]:
        return iter(self._make())

    def close(self) -> None:
        pass


_INLINE_MAX = 32  # inputs up to this many are tokenised on the calling thread
_FALLBACK_CHUNK_BATCHES = 8  # sentence-transformers' own path with a progress callback: batches per call


# ------------------------------------------------------------------------------------------------ device sizing
def _model_device(model: Any) -> Any:
    import torch

    with contextlib.suppress(Exception):
        return torch.device(model.device)
    return torch.device("cpu")


def _hidden_size(model: Any) -> int:
    config = getattr(getattr(model[0], "model", None), "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        with contextlib.suppress(Exception):
            config = config.get_text_config()
    return int(getattr(config, "hidden_size", 0) or 1024)


def _sizes(model: Any, plan: _Plan, device: Any, batch_size: int, opts: EngineOptions) -> tuple[int, int]:
    """(max rows, token budget) for one forward pass on ``device``.

    CPU: GEMM efficiency plateaus at roughly 6k-12k tokens per pass (measured on 2 cores, MiniLM), so the
    budget is 12,288 padded tokens whatever the texts' length; CUDA: a quarter of the free memory.
    ``batch_size`` only raises the row cap.
    """
    if device.type == "cuda":
        max_rows = opts.max_rows or max(batch_size, 4096)
        budget = opts.token_budget or _cuda_token_budget(model, device, batch_size, plan.max_length)
    else:
        max_rows = opts.max_rows or max(batch_size, 1024)
        budget = opts.token_budget or 12288
    return max(1, int(max_rows)), max(1, int(budget))


def _cuda_token_budget(model: Any, device: Any, batch_size: int, max_length: int) -> int:
    """Tokens per forward pass that fit in a quarter of the free memory (inference keeps one layer live)."""
    import torch

    try:
        free, _total = torch.cuda.mem_get_info(device)
    except Exception:  # noqa: BLE001
        return batch_size * max_length
    hidden = _hidden_size(model)
    # per token: hidden states, q/k/v/out, the 4x MLP activation and a few temporaries, in fp32 worst case
    per_token = hidden * 4 * 16
    budget = int(free * 0.25 // per_token)
    return int(min(max(budget, batch_size * 64, max_length), 1 << 20))


def _autocast_dtype(model: Any, device: Any, opts: EngineOptions) -> Any:
    import torch

    if device.type != "cuda" or not opts.cuda_autocast or getattr(model, "backend", "torch") != "torch":
        return None
    with contextlib.suppress(StopIteration):
        if next(model.parameters()).dtype != torch.float32:
            return None  # already half precision
    if opts.cuda_autocast == "bf16" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if opts.cuda_autocast in ("bf16", "fp16"):
        return torch.float16
    raise ValueError(f"cuda_autocast must be 'bf16', 'fp16' or None, got {opts.cuda_autocast!r}")


# ------------------------------------------------------------------------------------------------ the loop
def _run(
    model: Any,
    plan: _Plan,
    items: Sequence[Any],
    prepared: tuple[list[Any], np.ndarray | None],
    finish: Callable[[dict[str, Any]], Any],
    *,
    batch_size: int,
    show_progress: bool,
    opts: EngineOptions,
    what: str,
    on_progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    import torch
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    n = len(items)
    distinct, inverse = prepared
    n_distinct = len(distinct)

    device = _model_device(model)
    max_rows, budget = _sizes(model, plan, device, batch_size, opts)
    overhead = opts.batch_overhead_tokens
    if overhead is None:
        overhead = 4096 if device.type == "cuda" else 768
    pin = device.type == "cuda"
    amp = _autocast_dtype(model, device, opts)
    chars = np.fromiter((_char_length(x) for x in distinct), dtype=np.int64, count=n_distinct)
    order = np.argsort(-chars, kind="stable")
    group_size = max(budget // 64 * max(1, opts.group_batches), 256)

    def make() -> Iterator[_Batch]:
        return _group_batches(plan, distinct, order, group_size=group_size, max_rows=max_rows,
                              token_budget=budget, overhead=overhead, pin=pin)

    # a few inputs (a query at search time): tokenise inline, a thread would only add latency
    producer = _Background(make, depth=opts.prefetch) if n_distinct > _INLINE_MAX else _Inline(make)
    out: np.ndarray | None = None
    pending: deque = deque()
    stats = {"batches": 0, "real_tokens": 0, "padded_tokens": 0}
    # how many inputs each distinct row stands for, so progress counts inputs, not distinct rows
    weight = None if inverse is None else np.bincount(inverse, minlength=n_distinct)

    def drain(keep: int) -> None:
        nonlocal out
        while len(pending) > keep:
            positions, host, event = pending.popleft()
            if event is not None:
                event.synchronize()
            arr = host.numpy()
            if out is None:
                out = np.empty((n_distinct, *arr.shape[1:]), dtype=np.float32)
            out[positions] = arr

    model.eval()
    progress = tqdm(total=n_distinct, desc=f"encoding {what}", unit=what[:-1], disable=not show_progress)
    autocast = torch.autocast(device_type="cuda", dtype=amp) if amp is not None else contextlib.nullcontext()
    try:
        with torch.inference_mode(), autocast:
            for batch in producer:
                feats = {k: v.to(device, non_blocking=pin) for k, v in batch.features.items()}
                feats["modality"] = "text"
                result = finish(model(feats))
                result = result.float() if result.dtype != torch.float32 else result
                if pin:
                    host = torch.empty(result.shape, dtype=torch.float32, pin_memory=True)
                    host.copy_(result, non_blocking=True)
                    event = torch.cuda.Event()
                    event.record()
                    pending.append((batch.positions, host, event))
                    drain(keep=2)
                else:
                    pending.append((batch.positions, result.detach().cpu(), None))
                    drain(keep=0)
                stats["batches"] += 1
                stats["real_tokens"] += batch.real_tokens
                stats["padded_tokens"] += batch.padded_tokens
                progress.update(len(batch.positions))
                if on_progress is not None:
                    on_progress(len(batch.positions) if weight is None else int(weight[batch.positions].sum()))
            drain(keep=0)
    finally:
        producer.close()
        progress.close()
    assert out is not None
    result_arr = out if inverse is None else out[inverse]
    seconds = time.perf_counter() - t0
    _last_stats.clear()
    _last_stats.update(
        stats,
        what=what,
        n=n,
        distinct=n_distinct,
        device=str(device),
        max_rows=max_rows,
        token_budget=budget,
        autocast=str(amp) if amp is not None else None,
        padding_fraction=1.0 - stats["real_tokens"] / max(1, stats["padded_tokens"]),
        seconds=seconds,
    )
    log.debug(
        "encoded %d %s (%d distinct) in %.2fs: %d batches, %.1f%% padding, device %s",
        n, what, n_distinct, seconds, stats["batches"], 100 * _last_stats["padding_fraction"], device,
    )
    return np.ascontiguousarray(result_arr, dtype=np.float32)
