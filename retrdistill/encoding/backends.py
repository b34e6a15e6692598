"""Model loading with a choice of inference backend: torch, or a compiled CPU fast path.

``load_encoder(ref, backend=...)`` returns an ordinary ``SentenceTransformer`` (``load_reranker`` a
``CrossEncoder``): tokenizer, pooling, normalisation and the rest of the module chain stay sentence-transformers'
own; with a compiled backend only the HF transformer inside the first module is replaced by a runtime (ONNX
Runtime's ``InferenceSession``, OpenVINO's compiled model) that runs an export of it. ``encode_texts`` /
``score_pairs`` and the models' own ``encode`` / ``predict`` work unchanged on the result.

Backends:
    torch           the model as loaded (SDPA attention).
    onnx            ONNX Runtime, fp32, graph fused by ORT's transformer optimizer; equal to torch (~1e-6).
    onnx-int8       ONNX Runtime, dynamic int8 quantisation of the MatMul weights (per channel).
    openvino        OpenVINO on the same ONNX export, f32 inference precision; equal to torch (~1e-6).
    openvino-bf16   OpenVINO with its default CPU precision: bf16 where the CPU has bf16 units, else f32.

Why not sentence-transformers' own ``backend="onnx"/"openvino"``: they go through optimum-onnx /
optimum-intel, whose current releases pin transformers < 4.58 / < 5.6 and do not import with the
transformers this project runs. The export here uses torch's TorchScript-based ONNX exporter and the
runtimes directly; the extra packages install without dependencies (no second torch):

    pip install --no-deps onnxruntime onnx protobuf flatbuffers ml_dtypes     # onnx, onnx-int8
    pip install --no-deps openvino openvino-telemetry                          # openvino, openvino-bf16

Exports are cached under ``$RETRDISTILL_COMPILED`` (default ``~/.cache/retrdistill/compiled``), keyed by a
hash of the weights, the config, the torch version and the export settings, and every compiled model is
checked against the torch one on two probe batches before it is used. Each backend's build is kept beside the
export (``model-fused.onnx``, ``model-int8.onnx``, OpenVINO's blobs under ``openvino-<precision>/``), so a model is
built once per backend; the max length plays no part, the graph's batch and sequence axes being dynamic.

Fingerprints: :func:`output_key` is what a backend adds to the fingerprint of anything encoded with it. The fp32
backends (``onnx``, ``openvino``) add nothing: they are checked to match torch within 1e-3 on the probes
(measured ~2e-7 on embeddings, the size of torch's own batch-to-batch rounding), so their embeddings share
torch's cache and an artefact built with them keeps torch's key. ``onnx-int8`` and ``openvino-bf16`` (where the
CPU really runs bf16) change embeddings, so they add their name, precision and runtime version.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from retrdistill.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = [
    "BACKENDS",
    "available_backends",
    "backend_info",
    "backend_of",
    "check_backend",
    "compile_model",
    "compiled_cache_dir",
    "keyed_options",
    "load_encoder",
    "load_reranker",
    "output_key",
    "parameter_count",
]

BACKENDS = ("torch", "onnx", "onnx-int8", "openvino", "openvino-bf16")
LOSSLESS = ("torch", "onnx", "openvino")  # outputs equal to torch's up to fp32 rounding (checked on every compile)
_OPSET = 17
_EXPORT_FORMAT = 1  # bump when the export recipe changes
_PROBE_TEXTS = (
    ("what is the boiling point of water", "Water boils at 100 degrees Celsius at sea level."),
    ("who wrote hamlet", ("Hamlet is a tragedy written by William Shakespeare sometime between 1599 and 1601, "
                          "and it is one of his most performed plays around the world today.")),
    ("capital of france", "Paris"),
)
# largest allowed deviation from torch on the probe batches (max abs on the transformer output)
_TOLERANCE = {"onnx": 1e-3, "openvino": 1e-3, "onnx-int8": None, "openvino-bf16": None}
_MIN_COSINE = 0.95  # for the lossy backends, per probe row, on mean-pooled outputs


def available_backends() -> dict[str, bool]:
    """Which backends can run here (their runtime imports)."""
    have_ort = _importable("onnxruntime")
    have_onnx = _importable("onnx")
    have_ov = _importable("openvino")
    return {
        "torch": True,
        "onnx": have_ort,
        "onnx-int8": have_ort and have_onnx,
        "openvino": have_ov,
        "openvino-bf16": have_ov,
    }


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def compiled_cache_dir() -> Path:
    return Path(os.environ.get("RETRDISTILL_COMPILED", Path.home() / ".cache" / "retrdistill" / "compiled"))


def check_backend(backend: str, device: str | None = None) -> None:
    """ConfigError unless ``backend`` is known, fits ``device`` and its runtime is installed."""
    _check_backend(backend, device)


def output_key(backend: str) -> dict[str, Any] | None:
    """What ``backend`` adds to the fingerprint of what a model computes with it; None where its outputs are
    torch's (``torch``, ``onnx``, ``openvino``, and ``openvino-bf16`` on a CPU without bf16 units)."""
    _check_backend(backend, None)
    if backend in LOSSLESS:
        return None
    if backend == "openvino-bf16":
        precision = _openvino_default_precision()
        if precision == "f32":
            return None
        import openvino

        return {"backend": backend, "precision": precision, "openvino": openvino.__version__,
                "export": _EXPORT_FORMAT, "opset": _OPSET}
    import onnxruntime

    return {"backend": backend, "precision": "int8-dynamic-per-channel-matmul", "onnxruntime": onnxruntime.__version__,
            "export": _EXPORT_FORMAT, "opset": _OPSET}


def keyed_options(options: dict[str, Any]) -> dict[str, Any]:
    """A part's output options with their ``backend`` entry replaced by :func:`output_key` (dropped where that is
    None), so choosing a backend that keeps torch's outputs keeps the part's fingerprint."""
    out = dict(options)
    if "backend" in out:
        key = output_key(out.pop("backend") or "torch")
        if key is not None:
            out["backend"] = key
    return out


def _openvino_default_precision() -> str:
    """OpenVINO's default CPU inference precision here: ``bf16`` where the CPU has bf16 units, else ``f32``."""
    import openvino as ov

    return _precision_name(ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT"))


def _precision_name(value: Any) -> str:
    """``bf16`` / ``f16`` / ``f32`` for an OpenVINO element type (printed ``<Type: 'bfloat16'>`` and the like)."""
    text = str(value).lower()
    for name, marks in (("bf16", ("bf16", "bfloat16")), ("f16", ("f16", "float16")), ("f32", ("f32", "float32"))):
        if any(m in text for m in marks):
            return name
    return text


def backend_of(model: Any) -> str:
    """The backend ``model`` runs on (``torch`` unless :func:`compile_model` compiled it)."""
    return getattr(model, "_retrdistill_backend", "torch")


def parameter_count(model: Any) -> int:
    """Parameters of ``model``, a compiled one's counted as the torch model had them."""
    compiled = getattr(model, "_retrdistill_compiled", None)
    if compiled is not None:
        return int(compiled["parameters"])
    return int(sum(p.numel() for p in model.parameters()))


def backend_info(model: Any) -> dict[str, Any]:
    """What manifests record of ``model``'s backend: its name and, compiled, the variant, precision and the
    agreement with torch measured on the probes."""
    return dict(getattr(model, "_retrdistill_compiled", None) or {"backend": "torch"})


# ------------------------------------------------------------------------------------------------ loaders
def load_encoder(
    ref: str,
    backend: str = "torch",
    *,
    device: str | None = None,
    max_seq_length: int | None = None,
    cache_dir: str | Path | None = None,
    **kwargs: Any,
):
    """A ``SentenceTransformer`` for ``ref`` (hub name, path or ``offline:NAME``) running on ``backend``."""
    from retrdistill.models import load_sentence_transformer

    _check_backend(backend, device)
    model = load_sentence_transformer(ref, device="cpu" if backend != "torch" else device, **kwargs)
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    if backend != "torch":
        compile_model(model, backend, cache_dir=cache_dir)
    return model


def load_reranker(
    ref: str,
    backend: str = "torch",
    *,
    device: str | None = None,
    max_length: int | None = None,
    num_labels: int | None = None,
    cache_dir: str | Path | None = None,
    **kwargs: Any,
):
    """A ``CrossEncoder`` for ``ref`` running on ``backend``."""
    from retrdistill.models import load_cross_encoder

    _check_backend(backend, device)
    if max_length is not None:
        kwargs["max_length"] = max_length
    if num_labels is not None:
        kwargs["num_labels"] = num_labels
    model = load_cross_encoder(ref, device="cpu" if backend != "torch" else device, **kwargs)
    if backend != "torch":
        compile_model(model, backend, cache_dir=cache_dir)
    return model


def _check_backend(backend: str, device: str | None) -> None:
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; expected one of: {', '.join(BACKENDS)}")
    if backend != "torch" and device is not None and not str(device).startswith("cpu"):
        raise ConfigError(f"backend {backend!r} is a CPU fast path; use backend='torch' on {device}")
    if not available_backends()[backend]:
        need = "onnxruntime onnx protobuf flatbuffers ml_dtypes" if backend.startswith("onnx") else "openvino"
        raise ConfigError(f"backend {backend!r} needs packages that are not installed: pip install --no-deps {need}")


# ------------------------------------------------------------------------------------------------ compiling
def compile_model(model: Any, backend: str, *, cache_dir: str | Path | None = None) -> Any:
    """Swap the HF transformer inside ``model`` (a SentenceTransformer or CrossEncoder) for a compiled one.

    In place; returns ``model``. The model must be on the CPU. Raises ``ConfigError`` when the model does
    not fit (not a text Transformer first module) or the compiled graph does not match torch on the probes.
    """
    import torch
    from sentence_transformers.base.modules import Transformer

    _check_backend(backend, None)
    if backend == "torch":
        return model
    first = model[0]
    if not isinstance(first, Transformer):
        raise ConfigError(f"backend {backend!r} needs a Transformer first module, got {type(first).__name__}")
    hf = first.model
    if isinstance(hf, _CompiledTransformer):
        raise ConfigError(f"model is already compiled for {hf.backend!r}")
    text_cfg = first.modality_config.get("text", {})
    output = text_cfg.get("method_output_name")
    output = output[0] if isinstance(output, (list, tuple)) else output
    if text_cfg.get("method") != "forward" or output not in ("last_hidden_state", "logits"):
        raise ConfigError(f"backend {backend!r}: unsupported model output {output!r}")
    if any(p.device.type != "cpu" for p in hf.parameters()):
        raise ConfigError(f"backend {backend!r} runs on the CPU; load the model with device='cpu'")
    parameters = int(sum(p.numel() for p in model.parameters()))  # before the weights leave the torch module
    tok = first.tokenizer
    inputs = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tok.model_input_names]
    if "attention_mask" not in inputs:
        inputs.insert(1, "attention_mask")

    folder = Path(cache_dir) if cache_dir is not None else compiled_cache_dir()
    key = _model_key(hf, inputs, output)
    target = folder / key
    raw = target / "model.onnx"
    if not raw.is_file():
        try:
            _export(hf, inputs, output, tok, target)
        except Exception as exc:  # noqa: BLE001 - torch's exporter fails in many ways; one clear error for all
            raise ConfigError(f"backend {backend!r}: {type(hf).__name__} could not be exported to ONNX "
                              f"({type(exc).__name__}: {exc}); encode it with backend 'torch'") from exc
    probes = _probe_batches(tok, pairs=output == "logits")
    with torch.inference_mode():
        expected = [hf(**{k: v for k, v in b.items() if k in inputs}, return_dict=True)[output].float().numpy()
                    for b in probes]

    threads = torch.get_num_threads()
    candidates: list[tuple[str, Any]] = []
    if backend == "onnx":
        candidates = [("fused", lambda: _OrtRunner(_ort_optimized(raw, hf.config), threads)),
                      ("plain", lambda: _OrtRunner(raw, threads))]
    elif backend == "onnx-int8":
        candidates = [("int8", lambda: _OrtRunner(_ort_int8(raw), threads))]
    elif backend == "openvino":
        candidates = [("f32", lambda: _OpenVinoRunner(raw, threads, precision="f32", cache=target / "openvino-f32"))]
    elif backend == "openvino-bf16":
        # the CPU's default precision, named, and one blob folder per precision: OpenVINO's blob name does not
        # cover the precision hint, and an f32 blob of the same graph taken for bf16 gave non-finite outputs
        default = _openvino_default_precision()
        candidates = [("default", lambda: _OpenVinoRunner(raw, threads, precision=default,
                                                          cache=target / f"openvino-{default}"))]

    problems = []
    for label, make in candidates:
        try:
            runner = make()
        except Exception as exc:  # noqa: BLE001 - try the next candidate
            problems.append(f"{label}: {exc}")
            continue
        ok, detail = _agrees(runner, inputs, probes, expected, backend)
        if ok:
            shim = _CompiledTransformer(runner, hf.config, inputs, output, backend=backend)
            first.model = shim
            model._retrdistill_backend = backend
            model._retrdistill_compiled = {"backend": backend, "variant": label,
                                           "precision": getattr(runner, "precision", "int8" if backend == "onnx-int8"
                                                                else "f32"),
                                           "agreement": detail, "compiled_key": key, "parameters": parameters}
            log.info("compiled %s for %s (%s, %s); cache %s", type(hf).__name__, backend, label, detail, target)
            return model
        problems.append(f"{label}: {detail}")
    raise ConfigError(f"backend {backend!r} failed for {type(hf).__name__}: " + "; ".join(problems))


def _model_key(hf: Any, inputs: list[str], output: str) -> str:
    import torch

    h = hashlib.blake2b(digest_size=16)
    meta = {
        "format": _EXPORT_FORMAT,
        "opset": _OPSET,
        "torch": torch.__version__,
        "class": type(hf).__name__,
        "inputs": inputs,
        "output": output,
        "config": hf.config.to_dict() if hasattr(hf.config, "to_dict") else str(hf.config),
    }
    h.update(json.dumps(meta, sort_keys=True, default=str).encode())
    for name, tensor in sorted(hf.state_dict().items()):
        h.update(name.encode())
        arr = tensor.detach().cpu().contiguous()
        h.update(str(arr.dtype).encode() + str(tuple(arr.shape)).encode())
        if arr.numel():
            h.update(arr.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


class _ExportWrapper:
    """Builds a torch module that calls the HF model with keyword inputs and returns one output tensor."""

    @staticmethod
    def build(hf: Any, inputs: list[str], output: str) -> Any:
        import torch

        class Wrapper(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, *args: Any) -> Any:
                return self.inner(**dict(zip(inputs, args)), return_dict=True)[output]

        return Wrapper(hf).eval()


def _export(hf: Any, inputs: list[str], output: str, tok: Any, target: Path) -> None:
    import torch

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    config = hf.config
    previous_attn = getattr(config, "_attn_implementation", None)
    try:
        if previous_attn not in (None, "eager") and hasattr(hf, "set_attn_implementation"):
            hf.set_attn_implementation("eager")  # trace plain matmul attention; ORT / OpenVINO fuse it
        sample = tok(["a short probe text", "a slightly longer probe text for the export trace"],
                     padding=True, return_tensors="pt")
        args = tuple(sample[n] if n in sample else torch.zeros_like(sample["input_ids"]) for n in inputs)
        axes = {n: {0: "batch", 1: "sequence"} for n in inputs}
        axes[output] = {0: "batch", 1: "sequence"} if output == "last_hidden_state" else {0: "batch"}
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _ExportWrapper.build(hf, inputs, output),
                args,
                str(tmp / "model.onnx"),
                dynamo=False,
                input_names=inputs,
                output_names=[output],
                dynamic_axes=axes,
                opset_version=_OPSET,
                do_constant_folding=True,
            )
        (tmp / "export.json").write_text(json.dumps({"inputs": inputs, "output": output, "opset": _OPSET,
                                                     "class": type(hf).__name__}, indent=2))
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished the same export first
            if not (target / "model.onnx").is_file():
                raise
    finally:
        if previous_attn not in (None, "eager") and hasattr(hf, "set_attn_implementation"):
            hf.set_attn_implementation(previous_attn)
        shutil.rmtree(tmp, ignore_errors=True)


def _atomic_model_file(dest: Path, build: Any) -> Path:
    """Build ``dest`` through a temporary sibling once; returns ``dest``."""
    if dest.is_file():
        return dest
    fd, name = tempfile.mkstemp(prefix=f".{dest.stem}.", suffix=".onnx", dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        build(tmp)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def _ort_optimized(raw: Path, config: Any) -> Path:
    def build(tmp: Path) -> None:
        from onnxruntime.transformers.optimizer import optimize_model

        heads = int(getattr(config, "num_attention_heads", 0) or 0)
        hidden = int(getattr(config, "hidden_size", 0) or 0)
        with warnings.catch_warnings(), _quiet_onnxruntime():
            warnings.simplefilter("ignore")
            opt = optimize_model(str(raw), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=1,
                                 use_gpu=False)
            opt.save_model_to_file(str(tmp))

    return _atomic_model_file(raw.with_name("model-fused.onnx"), build)


def _ort_int8(raw: Path) -> Path:
    def build(tmp: Path) -> None:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with warnings.catch_warnings(), _quiet_onnxruntime():
            warnings.simplefilter("ignore")
            # per-channel int8 weights on the MatMuls only; embeddings stay fp32 (measurably better recall)
            quantize_dynamic(str(raw), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["MatMul"])

    return _atomic_model_file(raw.with_name("model-int8.onnx"), build)


class _DropOnnxRuntimeRecords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "onnxruntime" not in (record.pathname or "")


# module-level loggers that onnxruntime's optimizer / quantiser create (logging.getLogger(__name__) of top-level
# modules) or the root logger they log to directly
_ORT_LOGGERS = ("", "fusion_base", "fusion_utils", "onnx_model", "onnx_model_bert", "optimizer", "fusion_options")


@contextlib.contextmanager
def _quiet_onnxruntime():
    """Keep onnxruntime's build-time chatter (it logs on the root logger) out of the application's logs."""
    flt = _DropOnnxRuntimeRecords()
    loggers = [logging.getLogger(name) for name in _ORT_LOGGERS]
    for lg in loggers:
        lg.addFilter(flt)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(flt)


# ------------------------------------------------------------------------------------------------ runners
class _OrtRunner:
    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, threads)
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.path = path

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, feeds)[0]


class _OpenVinoRunner:
    def __init__(self, path: Path, threads: int, *, precision: str | None, cache: Path | None = None) -> None:
        import openvino as ov

        core = ov.Core()
        # no thread pinning: this process shares its cores with torch's threads (and, often, other jobs)
        config: dict[str, Any] = {"INFERENCE_NUM_THREADS": max(1, threads), "PERFORMANCE_HINT": "LATENCY",
                                  "NUM_STREAMS": 1, "ENABLE_CPU_PINNING": False}
        if precision is not None:
            config["INFERENCE_PRECISION_HINT"] = precision
        if cache is not None:  # OpenVINO keys its blobs on the graph, the device and this config: built once
            cache.mkdir(parents=True, exist_ok=True)
            config["CACHE_DIR"] = str(cache)
            self.compiled = core.compile_model(str(path), "CPU", config)
        else:
            self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.precision = _precision_name(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.path = path

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        self.request.infer(feeds)
        return np.array(self.request.get_output_tensor(0).data, dtype=np.float32, copy=True)


def _probe_batches(tok: Any, *, pairs: bool) -> list[dict[str, Any]]:
    if pairs:
        firsts = [q for q, _ in _PROBE_TEXTS]
        seconds = [d for _, d in _PROBE_TEXTS]
        return [tok(firsts[:2], seconds[:2], padding=True, truncation=True, return_tensors="pt"),
                tok(firsts, seconds, padding=True, truncation=True, return_tensors="pt")]
    texts = [d for _, d in _PROBE_TEXTS]
    return [tok(texts[:1], padding=True, truncation=True, return_tensors="pt"),
            tok(texts, padding=True, truncation=True, return_tensors="pt")]


def _feeds(batch: dict[str, Any], inputs: list[str]) -> dict[str, np.ndarray]:
    ids = batch["input_ids"]
    out = {}
    for name in inputs:
        value = batch.get(name)
        if value is None:
            value = np.zeros(tuple(ids.shape), dtype=np.int64) if name == "token_type_ids" else None
        out[name] = np.ascontiguousarray(_to_numpy(value), dtype=np.int64)
    return out


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _agrees(runner: Any, inputs: list[str], probes: list[dict], expected: list[np.ndarray], backend: str
            ) -> tuple[bool, str]:
    worst = 0.0
    worst_cos = 1.0
    for batch, ref in zip(probes, expected):
        try:
            got = runner(_feeds(batch, inputs))
        except Exception as exc:  # noqa: BLE001
            return False, f"run failed: {exc}"
        if got.shape != ref.shape:
            return False, f"output shape {got.shape} != {ref.shape}"
        if not np.isfinite(got).all():
            return False, "non-finite output"
        worst = max(worst, float(np.abs(got - ref).max()))
        if ref.ndim == 3:
            mask = _to_numpy(batch["attention_mask"])[..., None].astype(np.float32)
            a = (got * mask).sum(1) / mask.sum(1)
            b = (ref * mask).sum(1) / mask.sum(1)
        else:
            a, b = got.reshape(len(got), -1), ref.reshape(len(ref), -1)
        if a.shape[1] > 1:
            cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
            worst_cos = min(worst_cos, float(cos.min()))
    tol = _TOLERANCE[backend]
    detail = f"max abs diff {worst:.2e}, min cosine {worst_cos:.5f}"
    if tol is not None:
        return worst <= tol, detail
    return worst_cos >= _MIN_COSINE, detail


# ------------------------------------------------------------------------------------------------ the shim
def _compiled_module_base() -> type:
    import torch

    return torch.nn.Module


class _CompiledTransformer(_compiled_module_base()):  # type: ignore[misc]
    """Stands in for the HF model inside sentence-transformers' ``Transformer`` module (inference only)."""

    def __init__(self, runner: Any, config: Any, inputs: list[str], output: str, *, backend: str) -> None:
        super().__init__()
        self.runner = runner
        self.config = config
        self.input_names = list(inputs)
        self.output_name = output
        self.backend = backend

    @property
    def device(self) -> Any:
        import torch

        return torch.device("cpu")

    @property
    def dtype(self) -> Any:
        import torch

        return torch.float32

    def forward(self, input_ids: Any = None, attention_mask: Any = None, token_type_ids: Any = None, **_: Any):
        import torch

        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        if attention_mask is None:
            batch["attention_mask"] = torch.ones_like(input_ids)
        out = self.runner(_feeds(batch, self.input_names))
        return {self.output_name: torch.from_numpy(out)}

    def save_pretrained(self, *args: Any, **kwargs: Any) -> None:
        raise ConfigError(f"a model compiled for {self.backend!r} is for inference only; save the torch model")

    def extra_repr(self) -> str:
        return f"backend={self.backend!r}, inputs={self.input_names}, output={self.output_name!r}"
